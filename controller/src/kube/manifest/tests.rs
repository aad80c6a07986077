use super::*;

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
---
# a comment-only document is dropped
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 80
";

#[test]
fn templates_are_injected_with_their_owner_as_the_workload() {
    let out = inject_manifest("app.yaml", DEPLOYMENT, &InjectOptions::default()).unwrap();
    assert_eq!(
        out.report,
        [
            "deployment/web injected",
            "service/web left alone: not a pod or pod template"
        ]
    );
    let docs: Vec<Value> = serde_saphyr::from_multiple(&out.yaml).unwrap();
    assert_eq!(docs.len(), 2);
    let template = &docs[0]["spec"]["template"];
    assert_eq!(
        template["metadata"]["annotations"]["vigil.io/workload"],
        "web"
    );
    assert_eq!(
        template["metadata"]["annotations"]["vigil.io/owner-kind"],
        "Deployment"
    );
    assert!(template["metadata"]["ownerReferences"].is_null());
    assert!(template["metadata"]["namespace"].is_null());
    assert_eq!(template["spec"]["containers"][1]["name"], "vigil-proxy");
    // And back.
    let back = uninject_manifest("-", &out.yaml).unwrap();
    assert_eq!(back.report[0], "deployment/web uninjected");
    let original: Vec<Value> = serde_saphyr::from_multiple(DEPLOYMENT).unwrap();
    let original: Vec<Value> = original.into_iter().filter(|d| !d.is_null()).collect();
    let back: Vec<Value> = serde_saphyr::from_multiple(&back.yaml).unwrap();
    assert_eq!(back, original);
}

#[test]
fn bad_yaml_names_the_source() {
    let error = inject_manifest("broken.yaml", "a: [1,\n", &InjectOptions::default()).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("broken.yaml: not a YAML manifest"),
        "{error}"
    );
}
