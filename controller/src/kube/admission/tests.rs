use serde_json::json;

use super::*;
use crate::kube::inject::INJECT;

fn review(operation: &str, sub: Option<&str>, object: Value) -> Review {
    let mut request = json!({"uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "lab", "operation": operation, "userInfo": {"username": "alice"},
        "object": object, "oldObject": null, "dryRun": false});
    if let Some(sub) = sub {
        request["subResource"] = json!(sub);
    }
    let body =
        json!({"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request});
    parse(body.to_string().as_bytes()).expect("a valid review")
}

fn pod(security: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nb", "namespace": "lab"},
           "spec": {"containers": [{"name": "notebook", "image": "nb", "securityContext": security}]}})
}

fn enabled() -> Namespace {
    Namespace {
        name: "lab".into(),
        labels: [(INJECT.to_owned(), "enabled".to_owned())].into(),
        ..Namespace::default()
    }
}

fn apply(object: &Value, response: &AdmissionResponse) -> Value {
    let patch: json_patch::Patch =
        serde_json::from_slice(response.patch.as_ref().expect("a patch")).unwrap();
    let mut out = object.clone();
    json_patch::patch(&mut out, &patch).expect("the patch applies");
    out
}

#[test]
fn a_pod_in_an_enabled_namespace_is_patched_once() {
    let args = SidecarArgs::default();
    let object = pod(json!({"runAsUser": 1000, "allowPrivilegeEscalation": false}));
    let response = mutate(
        &review("CREATE", None, object.clone()),
        Some(&enabled()),
        &args,
    );
    assert!(response.allowed);
    assert_eq!(response.uid, "u-1");
    let patched = apply(&object, &response);
    let wire = to_json(&response.clone().into_review());
    assert!(
        wire["response"]["patch"].is_string(),
        "base64 on the wire: {wire}"
    );
    assert_eq!(wire["response"]["patchType"], "JSONPatch");
    assert_eq!(patched, inject(&object, &enabled(), &args));
    // Reinvoked on its own output: nothing more to do.
    let again = mutate(&review("CREATE", None, patched), Some(&enabled()), &args);
    assert!(again.allowed && again.patch.is_none());
}

#[test]
fn other_requests_pass_untouched() {
    let args = SidecarArgs::default();
    let object = pod(json!({}));
    for (op, sub, ns) in [
        ("UPDATE", None, Some(enabled())),
        ("DELETE", None, Some(enabled())),
        ("CREATE", Some("binding"), Some(enabled())),
        ("CREATE", None, Some(Namespace::default())),
    ] {
        let response = mutate(&review(op, sub, object.clone()), ns.as_ref(), &args);
        assert!(response.allowed && response.patch.is_none(), "{op} {sub:?}");
    }
    // The namespace could not be read: admitted unchanged, and said so.
    let response = mutate(&review("CREATE", None, object.clone()), None, &args);
    assert!(response.allowed && response.patch.is_none());
    assert!(response.warnings.unwrap()[0].contains("could not be read"));
    // ...unless the pod itself asked for the sidecar.
    let mut asked = object;
    asked["metadata"]["annotations"] = json!({INJECT: "enabled"});
    let response = mutate(&review("CREATE", None, asked), None, &args);
    assert!(response.patch.is_some());
}

#[test]
fn garbage_is_admitted_with_a_warning() {
    let error = parse(b"{not json").unwrap_err();
    let review = unreadable(&error);
    let response = review.response.unwrap();
    assert!(response.allowed);
    assert!(response.warnings.unwrap()[0].contains("not an AdmissionReview"));
    assert!(matches!(
        parse(br#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1"}"#),
        Err(ReviewError::NoRequest)
    ));
}

#[test]
fn enforcement_denies_and_learning_warns() {
    let args = SidecarArgs::default();
    let root = inject(&pod(json!({"runAsUser": 0})), &enabled(), &args);
    let enforce = Mode::Enforcement { alert_only: false };
    let denied = validate(
        &review("CREATE", None, root.clone()),
        Some(&enabled()),
        enforce,
        &args,
    );
    assert!(!denied.allowed);
    assert!(
        denied.result.message.contains("runs as root"),
        "{}",
        denied.result.message
    );
    for mode in [Mode::Learning, Mode::Enforcement { alert_only: true }] {
        let warned = validate(
            &review("CREATE", None, root.clone()),
            Some(&enabled()),
            mode,
            &args,
        );
        assert!(warned.allowed);
        assert!(warned.warnings.unwrap()[0].contains("runs as root"));
    }
    let fine = inject(
        &pod(json!({"runAsUser": 1000, "allowPrivilegeEscalation": false})),
        &enabled(),
        &args,
    );
    assert!(
        validate(
            &review("CREATE", None, fine.clone()),
            Some(&enabled()),
            enforce,
            &args
        )
        .allowed
    );
    // kubectl debug adds an ephemeral container with NET_ADMIN: denied.
    let mut debug = fine;
    debug["spec"]["ephemeralContainers"] = json!([{"name": "dbg", "securityContext": {"runAsUser": 1000, "allowPrivilegeEscalation": false, "capabilities": {"add": ["NET_ADMIN"]}}}]);
    let response = validate(
        &review("UPDATE", Some("ephemeralcontainers"), debug),
        Some(&enabled()),
        enforce,
        &args,
    );
    assert!(!response.allowed);
}
