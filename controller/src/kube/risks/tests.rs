use serde_json::json;

use super::*;

fn enabled() -> Namespace {
    Namespace {
        name: "lab".into(),
        labels: [("vigil.io/inject".to_owned(), "enabled".to_owned())].into(),
        ..Namespace::default()
    }
}

/// A well-behaved injected pod whose notebook container gets `security`.
fn injected(security: Value) -> Value {
    let pod = json!({"metadata": {"name": "nb"},
        "spec": {"containers": [{"name": "notebook", "image": "nb", "securityContext": security}]}});
    inject(&pod, &enabled(), &SidecarArgs::default())
}

#[test]
fn what_can_undo_the_interception_is_found() {
    let args = SidecarArgs::default();
    let ns = enabled();
    let root = |c: &str| Risk::Root {
        container: c.into(),
    };
    let cases: Vec<(Value, Vec<Risk>)> = vec![
        (
            injected(json!({"runAsUser": 1000, "allowPrivilegeEscalation": false})),
            vec![],
        ),
        // The image picks the uid: it may pick the sidecar's.
        (
            injected(json!({"runAsNonRoot": true, "allowPrivilegeEscalation": false})),
            vec![Risk::ImageUid {
                container: "notebook".into(),
            }],
        ),
        (
            injected(json!({"runAsNonRoot": true})),
            vec![Risk::ImageUid {
                container: "notebook".into(),
            }],
        ),
        // A setuid program can make the container root, then the sidecar's
        // uid, unless escalation is off or CAP_SETUID is not in its
        // bounding set.
        (
            injected(json!({"runAsUser": 1000})),
            vec![Risk::MayEscalate {
                container: "notebook".into(),
            }],
        ),
        (
            injected(json!({"runAsUser": 1000, "allowPrivilegeEscalation": true,
                            "capabilities": {"drop": ["NET_RAW"]}})),
            vec![Risk::MayEscalate {
                container: "notebook".into(),
            }],
        ),
        // Dropping capabilities does not stop a setuid program owned by
        // the sidecar's uid: it needs none. Only no_new_privs does.
        (
            injected(json!({"runAsUser": 1000, "capabilities": {"drop": ["ALL"]}})),
            vec![Risk::MayEscalate {
                container: "notebook".into(),
            }],
        ),
        (
            injected(json!({"runAsUser": 1000, "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]}})),
            vec![],
        ),
        (
            injected(json!({"runAsUser": 1000, "allowPrivilegeEscalation": false,
                            "capabilities": {"add": ["NET_RAW"]}})),
            vec![Risk::NetRaw {
                container: "notebook".into(),
            }],
        ),
        (injected(json!({"runAsUser": 0})), vec![root("notebook")]),
        (
            injected(json!({})),
            vec![Risk::MayRunAsRoot {
                container: "notebook".into(),
            }],
        ),
        (
            injected(json!({"runAsUser": 2102})),
            vec![Risk::ProxyUid {
                container: "notebook".into(),
                uid: 2102,
            }],
        ),
        (
            injected(
                json!({"runAsUser": 1000, "allowPrivilegeEscalation": false, "capabilities": {"add": ["NET_ADMIN"]}}),
            ),
            vec![Risk::NetAdmin {
                container: "notebook".into(),
                capability: "NET_ADMIN".into(),
            }],
        ),
        (
            injected(
                json!({"runAsUser": 1000, "allowPrivilegeEscalation": false, "capabilities": {"add": ["cap_sys_admin"]}}),
            ),
            vec![Risk::NetAdmin {
                container: "notebook".into(),
                capability: "SYS_ADMIN".into(),
            }],
        ),
        (
            injected(
                json!({"runAsUser": 1000, "allowPrivilegeEscalation": false, "privileged": true}),
            ),
            vec![Risk::NetAdmin {
                container: "notebook".into(),
                capability: "privileged".into(),
            }],
        ),
        // Without Istio, uid 1337 is nobody special.
        (
            injected(json!({"runAsUser": 1337, "allowPrivilegeEscalation": false})),
            vec![],
        ),
    ];
    for (pod, want) in cases {
        assert_eq!(
            risks(&pod, &ns, &args),
            want,
            "{}",
            pod["spec"]["containers"][0]
        );
    }
}

/// The sidecar's controller token is the sidecar's alone: a container that
/// mounts its volume (an init container before `vigil-init` too), or a
/// volume of its Secret under another name, is a risk; the sidecar's own
/// mount is not.
#[test]
fn the_sidecar_token_is_the_sidecars_alone() {
    let args = SidecarArgs::default();
    let secret = args.proxy_token_secret.clone();
    let pod = |extra: Value| {
        let mut spec = json!({"containers": [{"name": "notebook", "image": "nb",
            "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false}}]});
        for (key, value) in extra.as_object().unwrap() {
            spec[key] = value.clone();
        }
        let pod = json!({"metadata": {"name": "nb"}, "spec": spec});
        inject(&pod, &enabled(), &args)
    };
    let mount = json!([{"name": TOKEN_VOLUME, "mountPath": "/t"}]);
    let cases: Vec<(&str, Value, Vec<Risk>)> = vec![
        ("only the sidecar mounts it", pod(json!({})), vec![]),
        (
            "the notebook mounts it",
            pod(json!({"containers": [{"name": "notebook", "image": "nb",
                "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false}, "volumeMounts": mount}]})),
            vec![Risk::TokenMounted {
                container: "notebook".into(),
            }],
        ),
        (
            "an init container before vigil-init mounts it",
            pod(
                json!({"initContainers": [{"name": "copy", "image": "busybox",
                "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false}, "volumeMounts": mount}]}),
            ),
            vec![Risk::TokenMounted {
                container: "copy".into(),
            }],
        ),
        (
            "its Secret under another name",
            pod(json!({"volumes": [{"name": "mine", "secret": {"secretName": secret}}]})),
            vec![Risk::TokenVolume {
                volume: "mine".into(),
                secret: secret.clone(),
            }],
        ),
        (
            "its Secret in a projected volume",
            pod(json!({"volumes": [{"name": "p", "projected": {"sources": [
                {"secret": {"name": secret}}]}}]})),
            vec![Risk::TokenVolume {
                volume: "p".into(),
                secret: secret.clone(),
            }],
        ),
    ];
    for (case, pod, want) in cases {
        assert_eq!(risks(&pod, &enabled(), &args), want, "{case}");
    }
}

#[test]
fn the_pod_level_uid_applies_unless_the_container_overrides_it() {
    let mut pod = injected(Value::Null);
    pod["spec"]["securityContext"] = json!({"runAsUser": 0});
    assert_eq!(
        risks(&pod, &enabled(), &SidecarArgs::default()),
        vec![Risk::Root {
            container: "notebook".into()
        }]
    );
    pod["spec"]["containers"][0]["securityContext"] =
        json!({"runAsUser": 1000, "allowPrivilegeEscalation": false});
    assert!(risks(&pod, &enabled(), &SidecarArgs::default()).is_empty());
}

#[test]
fn beside_istio_only_istio_proxy_may_be_envoy() {
    let ns = Namespace {
        labels: [
            ("vigil.io/inject".to_owned(), "enabled".to_owned()),
            ("istio-injection".to_owned(), "enabled".to_owned()),
        ]
        .into(),
        ..enabled()
    };
    let pod = json!({"metadata": {"name": "nb"}, "spec": {"containers": [
        {"name": "notebook", "image": "nb", "securityContext": {"runAsUser": 1337}},
        {"name": "istio-proxy", "image": "proxyv2", "securityContext": {"runAsUser": 1337,
            "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}}]}});
    let pod = inject(&pod, &ns, &SidecarArgs::default());
    assert_eq!(
        risks(&pod, &ns, &SidecarArgs::default()),
        vec![Risk::IstioUid {
            container: "notebook".into(),
            uid: 1337
        }]
    );
}

#[test]
fn a_missing_or_altered_sidecar_is_found() {
    let args = SidecarArgs::default();
    let ns = enabled();
    let opted_out = json!({"metadata": {"name": "nb", "annotations": {"vigil.io/inject": "disabled"}},
        "spec": {"containers": [{"name": "notebook", "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false}}]}});
    assert_eq!(
        risks(&opted_out, &ns, &args),
        vec![Risk::NotInjected(SkipReason::PodDisabled)]
    );
    let not_injected = json!({"metadata": {"name": "nb"},
        "spec": {"containers": [{"name": "notebook", "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false}}]}});
    let found = risks(&not_injected, &ns, &args);
    assert!(found.contains(&Risk::Altered {
        container: PROXY_CONTAINER,
        field: "presence".into()
    }));
    let mut tampered = injected(json!({"runAsUser": 1000, "allowPrivilegeEscalation": false}));
    tampered["spec"]["containers"][1]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "VIGIL_DEFAULT_POLICY", "value": "allow"}));
    tampered["spec"]["initContainers"][0]["args"] = json!(["init", "--remove"]);
    let found = risks(&tampered, &ns, &args);
    assert!(found.contains(&Risk::Altered {
        container: PROXY_CONTAINER,
        field: "env".into()
    }));
    assert!(found.contains(&Risk::Altered {
        container: INIT_CONTAINER,
        field: "args".into()
    }));
    // Its token mount moved elsewhere: altered.
    let mut moved = injected(json!({"runAsUser": 1000, "allowPrivilegeEscalation": false}));
    moved["spec"]["containers"][1]["volumeMounts"][0]["mountPath"] = json!("/tmp/x");
    assert!(risks(&moved, &ns, &args).contains(&Risk::Altered {
        container: PROXY_CONTAINER,
        field: "volumeMounts".into()
    }));
    // Another webhook's extra env var and mount on the sidecar are fine.
    let mut extended = injected(json!({"runAsUser": 1000, "allowPrivilegeEscalation": false}));
    extended["spec"]["containers"][1]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "TZ", "value": "UTC"}));
    extended["spec"]["containers"][1]["volumeMounts"]
        .as_array_mut()
        .unwrap()
        .push(
            json!({"name": "pipeline-token", "mountPath": "/var/run/secrets/kubeflow/pipelines"}),
        );
    assert!(risks(&extended, &ns, &args).is_empty());
    // Outside an injected namespace nothing is checked.
    assert!(risks(&not_injected, &Namespace::default(), &args).is_empty());
}

#[test]
fn init_containers_after_vigil_init_and_ephemeral_ones_are_checked() {
    let args = SidecarArgs::default();
    let mut pod = injected(json!({"runAsUser": 1000, "allowPrivilegeEscalation": false}));
    let admin = json!({"runAsUser": 0, "capabilities": {"add": ["NET_ADMIN"]}});
    let inits = pod["spec"]["initContainers"].as_array_mut().unwrap();
    inits.insert(
        0,
        json!({"name": "block-cloud-metadata", "securityContext": admin}),
    );
    assert!(
        risks(&pod, &enabled(), &args).is_empty(),
        "before vigil-init: harmless"
    );
    pod["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "late", "securityContext": admin}));
    pod["spec"]["ephemeralContainers"] = json!([{"name": "debugger", "securityContext": admin}]);
    let found: Vec<String> = risks(&pod, &enabled(), &args)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        found
            .iter()
            .any(|r| r.contains("late") && r.contains("root")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|r| r.contains("debugger") && r.contains("NET_ADMIN")),
        "{found:?}"
    );
}
