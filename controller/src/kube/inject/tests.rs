use serde_json::json;

use super::*;

fn ns(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Namespace {
    let map = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    Namespace {
        name: "lab".into(),
        labels: map(labels),
        annotations: map(annotations),
    }
}

fn pod(annotations: Value) -> Value {
    json!({"metadata": {"name": "nb", "namespace": "lab", "annotations": annotations},
           "spec": {"containers": [{"name": "notebook", "image": "jupyter/base-notebook:latest"}]}})
}

fn names(pod: &Value, list: &str) -> Vec<String> {
    container_names(pod, list).map(str::to_owned).collect()
}

#[test]
fn namespaces_and_pods_opt_in_and_out() {
    let on_label = ns(&[(INJECT, "enabled")], &[]);
    let on_annotation = ns(&[], &[(INJECT, "enabled")]);
    let off = ns(&[(INJECT, "disabled")], &[(INJECT, "enabled")]);
    let silent = ns(&[], &[]);
    let plain = pod(json!({}));
    let pod_off = pod(json!({INJECT: "disabled"}));
    let pod_on = pod(json!({INJECT: "enabled"}));
    let mut host = pod(json!({}));
    host["spec"]["hostNetwork"] = json!(true);
    let skip = Decision::Skip;
    let cases = [
        (&plain, &on_label, Decision::Inject),
        (&plain, &on_annotation, Decision::Inject),
        (&plain, &off, skip(SkipReason::NamespaceDisabled)),
        (&plain, &silent, skip(SkipReason::NotEnabled)),
        (&pod_off, &on_label, skip(SkipReason::PodDisabled)),
        (&pod_on, &silent, Decision::Inject),
        (&pod_on, &off, skip(SkipReason::NamespaceDisabled)),
        (&host, &on_label, skip(SkipReason::HostNetwork)),
    ];
    for (pod, ns, want) in cases {
        assert_eq!(decide(pod, ns), want, "{pod} in {ns:?}");
    }
}

#[test]
fn injection_adds_both_containers_and_keeps_the_notebook_first() {
    let out = inject(
        &pod(json!({})),
        &ns(&[(INJECT, "enabled")], &[]),
        &SidecarArgs::default(),
    );
    assert_eq!(names(&out, "containers"), ["notebook", PROXY_CONTAINER]);
    assert_eq!(names(&out, "initContainers"), [INIT_CONTAINER]);
    let init = &out["spec"]["initContainers"][0];
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(init["args"][0], "init");
    assert_eq!(init["args"][2], "2102");
    let proxy = &out["spec"]["containers"][1];
    assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
    assert!(proxy["securityContext"]["capabilities"]["add"].is_null());
    let env: Vec<&str> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"VIGIL_WORKLOAD") && env.contains(&"VIGIL_CONTROLLER_TOKEN_FILE"));
    assert_eq!(out["metadata"]["annotations"]["vigil.io/workload"], "nb");
    // Istio's annotation only beside Istio.
    assert!(out["metadata"]["annotations"][ISTIO_EXCLUDE_INBOUND].is_null());
    assert!(
        !init["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--skip-outbound-uids"))
    );
}

#[test]
fn injection_is_idempotent_and_replaces_an_impostor() {
    let ns = ns(&[(INJECT, "enabled")], &[]);
    let args = SidecarArgs::default();
    let once = inject(&pod(json!({})), &ns, &args);
    assert_eq!(inject(&once, &ns, &args), once);
    assert!(
        json_patch::diff(&once, &inject(&once, &ns, &args))
            .0
            .is_empty()
    );
    // A pod that brings its own "vigil-proxy" gets the real one.
    let mut impostor = pod(json!({}));
    impostor["spec"]["containers"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": PROXY_CONTAINER, "image": "busybox", "command": ["sleep", "inf"]}));
    let fixed = inject(&impostor, &ns, &args);
    assert_eq!(fixed, once);
}

#[test]
fn uninject_gives_back_the_original() {
    let ns = ns(&[(INJECT, "enabled"), ("istio-injection", "enabled")], &[]);
    let original = pod(json!({ISTIO_EXCLUDE_INBOUND: "9090", "keep": "me"}));
    let injected = inject(&original, &ns, &SidecarArgs::default());
    assert_eq!(
        injected["metadata"]["annotations"][ISTIO_EXCLUDE_INBOUND],
        "9090,4143,4191"
    );
    assert_eq!(uninject(&injected), original);
    let bare = json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c"}]}});
    assert_eq!(uninject(&inject(&bare, &ns, &SidecarArgs::default())), bare);
}

#[test]
fn beside_istio_its_containers_stay_and_envoy_is_let_out() {
    let ns = ns(&[(INJECT, "enabled")], &[]);
    let istio_pod = json!({"metadata": {"name": "nb", "annotations": {ISTIO_STATUS: "{}"}},
        "spec": {"initContainers": [{"name": "istio-init", "image": "proxyv2"},
                                    {"name": "istio-proxy", "image": "proxyv2", "restartPolicy": "Always"}],
                 "containers": [{"name": "notebook", "image": "nb"}]}});
    let out = inject(&istio_pod, &ns, &SidecarArgs::default());
    assert_eq!(
        names(&out, "initContainers"),
        ["istio-init", "istio-proxy", INIT_CONTAINER]
    );
    assert_eq!(
        out["spec"]["initContainers"][0],
        istio_pod["spec"]["initContainers"][0]
    );
    assert_eq!(
        out["spec"]["initContainers"][1],
        istio_pod["spec"]["initContainers"][1]
    );
    let args = out["spec"]["initContainers"][2]["args"].as_array().unwrap();
    let at = args
        .iter()
        .position(|a| a == "--skip-outbound-uids")
        .expect("Envoy's uid let out");
    assert_eq!(args[at + 1], "1337");
    assert_eq!(
        out["metadata"]["annotations"][ISTIO_EXCLUDE_INBOUND],
        "4143,4191"
    );

    let cases = [
        (json!({"metadata": {}, "spec": {}}), ns.clone(), false),
        (
            json!({"metadata": {}, "spec": {}}),
            Namespace {
                labels: [("istio-injection".to_owned(), "enabled".to_owned())].into(),
                ..ns.clone()
            },
            true,
        ),
        (
            json!({"metadata": {"labels": {"sidecar.istio.io/inject": "false"}}, "spec": {}}),
            Namespace {
                labels: [("istio.io/rev".to_owned(), "1-24".to_owned())].into(),
                ..ns.clone()
            },
            false,
        ),
        (
            json!({"metadata": {}, "spec": {"containers": [{"name": "istio-proxy"}]}}),
            ns.clone(),
            true,
        ),
    ];
    for (pod, ns, want) in cases {
        assert_eq!(istio_present(&pod, &ns), want, "{pod} {ns:?}");
    }
}

#[test]
fn sidecar_settings_come_from_the_flags() {
    let args = SidecarArgs {
        proxy_image: "registry.local/vigil-proxy:dev".into(),
        proxy_uid: 4242,
        proxy_cpu_request: String::new(),
        proxy_memory_limit: String::new(),
        ..SidecarArgs::default()
    };
    let out = inject(&pod(json!({})), &ns(&[(INJECT, "enabled")], &[]), &args);
    let proxy = &out["spec"]["containers"][1];
    assert_eq!(proxy["image"], "registry.local/vigil-proxy:dev");
    assert_eq!(proxy["securityContext"]["runAsUser"], 4242);
    assert_eq!(proxy["resources"], json!({"requests": {"memory": "32Mi"}}));
    assert_eq!(out["spec"]["initContainers"][0]["args"][2], "4242");
    assert_eq!(
        out["spec"]["volumes"][0]["secret"]["secretName"],
        "vigil-sidecar-token"
    );
}

#[test]
fn without_a_cpu_limit_the_sidecars_cpu_request_sizes_its_data_path() {
    let threads = |args: &SidecarArgs| {
        let out = inject(&pod(json!({})), &ns(&[(INJECT, "enabled")], &[]), args);
        out["spec"]["containers"][1]["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "VIGIL_WORKER_THREADS")
            .cloned()
    };
    // (cpu request, cpu limit, the env var's source)
    let cases = [
        (
            "10m",
            "",
            Some(
                json!({"resourceFieldRef": {"containerName": "vigil-proxy", "resource": "requests.cpu", "divisor": "1"}}),
            ),
        ),
        ("10m", "500m", None),
        ("", "", None),
    ];
    for (request, limit, want) in cases {
        let args = SidecarArgs {
            proxy_cpu_request: request.into(),
            proxy_cpu_limit: limit.into(),
            ..SidecarArgs::default()
        };
        let got = threads(&args).map(|e| e["valueFrom"].clone());
        assert_eq!(got, want, "request {request:?}, limit {limit:?}");
    }
}
