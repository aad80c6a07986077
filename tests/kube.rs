//! The admission webhook and `vigilctl inject`, end to end: the real
//! controller serving `/mutate` and `/validate` over TLS, fed the recorded
//! AdmissionReviews and pods of `tests/fixtures/k8s` (a bare pod from
//! GKE, a ReplicaSet's pod, a StatefulSet's, a Kubeflow notebook already
//! injected by Istio, JupyterHub user pods), with kube-rs reading the
//! namespaces from a stand-in API server. Each JSONPatch is applied and
//! the patched pod checked as a user would see it.

mod common;
#[path = "kube/support.rs"]
mod support;

use serde_json::{Value, json};

use support::{
    ApiServer, Webhook, container, env, fixture_json, fixture_yaml, names, patched,
    pod_from_template, pod_review, review,
};

/// A controller serving the webhook, with namespaces: `lab` (label
/// `vigil.io/inject=enabled`), `annotated` (the annotation instead),
/// `kubeflow-user` (a Kubeflow profile with Istio), `jhub` (JupyterHub's)
/// and `plain` (no injection).
fn setup(dir: &std::path::Path) -> Webhook {
    let api = ApiServer::start();
    api.namespace("lab", json!({"vigil.io/inject": "enabled"}), json!({}));
    api.namespace(
        "colin-coder",
        json!({"vigil.io/inject": "enabled"}),
        json!({}),
    );
    api.namespace(
        "annotated",
        json!({}),
        json!({"vigil.io/inject": "enabled"}),
    );
    api.namespace(
        "kubeflow-user",
        json!({"vigil.io/inject": "enabled", "istio-injection": "enabled",
               "app.kubernetes.io/part-of": "kubeflow-profile"}),
        json!({"owner": "user@example.com"}),
    );
    api.namespace("jhub", json!({"vigil.io/inject": "enabled"}), json!({}));
    api.namespace("plain", json!({}), json!({}));
    Webhook::start(dir, &api)
}

#[test]
fn recorded_pods_get_the_sidecar_with_their_identity() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = setup(tmp.path());

    // A bare pod, as GKE's API server sent it (the recording, unchanged).
    let body = fixture_json("admission/admissionreview-v1-pod-create-bare-gke.json");
    let object = body["request"]["object"].clone();
    let (status, answer) = hook.post("/mutate", &body);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    let pod = patched(&object, &answer, body["request"]["uid"].as_str().unwrap());
    assert_eq!(names(&pod, "containers"), ["echo-server", "vigil-proxy"]);
    assert_eq!(names(&pod, "initContainers"), ["vigil-init"]);
    let proxy = container(&pod, "containers", "vigil-proxy");
    assert_eq!(env(proxy, "VIGIL_WORKLOAD"), "echo-pod");
    assert_eq!(env(proxy, "VIGIL_PROFILE"), "jmalloc/echo-server");
    assert_eq!(
        pod["spec"]["containers"][0], object["spec"]["containers"][0],
        "the app is untouched"
    );
    let init = container(&pod, "initContainers", "vigil-init");
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(
        proxy["securityContext"]["capabilities"]["drop"],
        json!(["ALL"])
    );
    let volumes: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        volumes,
        ["default-token-rxbqq", "vigil-token", "vigil-xtables"]
    );

    // A Deployment's pod, recorded before it had a name (only the request
    // was recorded: wrapped in its review here).
    let request =
        fixture_json("admission/kubewarden-admissionrequest-pod-create-replicaset-owned.json");
    let mut request = request;
    request["namespace"] = json!("lab");
    let object = request["object"].clone();
    let (_, answer) = hook.post("/mutate", &review(request.clone()));
    let pod = patched(&object, &answer, request["uid"].as_str().unwrap());
    let proxy = container(&pod, "containers", "vigil-proxy");
    assert_eq!(env(proxy, "VIGIL_WORKLOAD"), "kubewarden-controller");
    assert_eq!(
        pod["metadata"]["annotations"]["vigil.io/owner-kind"],
        "Deployment"
    );
    assert_eq!(
        names(&pod, "containers")[..2],
        names(&object, "containers")[..]
    );

    // A StatefulSet's pod, in a namespace that opts in by annotation.
    let sts = &fixture_yaml("istio-inject/statefulset.yaml")[0];
    let object = pod_from_template(&sts["spec"]["template"], "StatefulSet", "hello", "apps/v1");
    let (_, answer) = hook.post("/mutate", &pod_review("sts-1", "annotated", &object));
    let pod = patched(&object, &answer, "sts-1");
    assert_eq!(
        env(
            container(&pod, "containers", "vigil-proxy"),
            "VIGIL_WORKLOAD"
        ),
        "hello"
    );
    assert_eq!(
        pod["metadata"]["annotations"]["vigil.io/owner-kind"],
        "StatefulSet"
    );

    // JupyterHub user pods: the tenant is the hub's user; the hub's own
    // init container (root, NET_ADMIN) stays first, before vigil-init.
    for (file, workload, tenant) in [
        (
            "jupyterhub/kubespawner-pod-default-server.rendered.json",
            "jupyter-jovyan",
            "jovyan",
        ),
        (
            "jupyterhub/kubespawner-pod-named-server.rendered.json",
            "jupyter-alice-example-com---ff8d9819--gpu",
            "alice@example.com",
        ),
    ] {
        let object = fixture_json(file);
        let (_, answer) = hook.post("/mutate", &pod_review("jh", "jhub", &object));
        let pod = patched(&object, &answer, "jh");
        let proxy = container(&pod, "containers", "vigil-proxy");
        assert_eq!(env(proxy, "VIGIL_WORKLOAD"), workload, "{file}");
        assert_eq!(env(proxy, "VIGIL_TENANT"), tenant, "{file}");
        assert_eq!(
            names(&pod, "initContainers"),
            ["block-cloud-metadata", "vigil-init"],
            "{file}"
        );
        assert_eq!(
            names(&pod, "containers"),
            ["notebook", "vigil-proxy"],
            "{file}"
        );
        assert_eq!(
            pod["metadata"]["annotations"]["vigil.io/owner-kind"],
            "JupyterHub"
        );
        // The memory request KubeSpawner writes as a number is left as it is.
        assert_eq!(
            pod["spec"]["containers"][0],
            object["spec"]["containers"][0]
        );
        assert!(
            pod["metadata"].get("namespace").is_none(),
            "the patch adds no namespace"
        );
    }

    // Reinvoked on a pod it already injected: nothing more to do.
    let object = fixture_json("jupyterhub/kubespawner-pod-default-server.rendered.json");
    let (_, answer) = hook.post("/mutate", &pod_review("jh", "jhub", &object));
    let once = patched(&object, &answer, "jh");
    let (_, again) = hook.post("/mutate", &pod_review("jh2", "jhub", &once));
    assert_eq!(again["response"]["allowed"], true);
    assert!(again["response"].get("patch").is_none(), "{again}");
}

#[test]
fn beside_istio_the_chain_is_vigil_then_envoy() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = setup(tmp.path());

    // A Kubeflow notebook pod as Istio 1.9 left it (old-style istio-proxy
    // container, istio-init), in a profile namespace.
    let object = fixture_json("kubeflow/notebook-pod-istio-injected-minikf.converted.json");
    let (_, answer) = hook.post("/mutate", &pod_review("kf", "kubeflow-user", &object));
    let pod = patched(&object, &answer, "kf");
    assert_eq!(
        names(&pod, "containers"),
        ["asa232rstudio", "istio-proxy", "vigil-proxy"]
    );
    assert_eq!(
        names(&pod, "initContainers"),
        ["startup-lock-init-container", "istio-init", "vigil-init"]
    );
    for (list, name) in [
        ("containers", "istio-proxy"),
        ("initContainers", "istio-init"),
        ("containers", "asa232rstudio"),
    ] {
        assert_eq!(
            container(&pod, list, name),
            container(&object, list, name),
            "{name} untouched"
        );
    }
    let proxy = container(&pod, "containers", "vigil-proxy");
    assert_eq!(env(proxy, "VIGIL_WORKLOAD"), "asa232rstudio");
    assert_eq!(env(proxy, "VIGIL_TENANT"), "user@example.com");
    assert_eq!(
        pod["metadata"]["annotations"]["vigil.io/owner-kind"],
        "Notebook"
    );
    let uid = proxy["securityContext"]["runAsUser"].as_i64().unwrap();
    assert!(
        uid != 0 && uid != 1337,
        "the sidecar's uid {uid} must not be Envoy's"
    );
    let args = container(&pod, "initContainers", "vigil-init")["args"]
        .as_array()
        .unwrap()
        .clone();
    let at = args
        .iter()
        .position(|a| a == "--skip-outbound-uids")
        .expect("Envoy let out");
    assert_eq!(args[at + 1], "1337");
    assert_eq!(
        pod["metadata"]["annotations"]["traffic.sidecar.istio.io/excludeInboundPorts"],
        "4143,4191"
    );

    // Istio's current output (native sidecars first in initContainers).
    let deployment = &fixture_yaml("istio-inject/hello.yaml.injected")[0];
    let object = pod_from_template(
        &deployment["spec"]["template"],
        "ReplicaSet",
        "hello-5d7c9f8b6d",
        "apps/v1",
    );
    let (_, answer) = hook.post("/mutate", &pod_review("hello", "kubeflow-user", &object));
    let pod = patched(&object, &answer, "hello");
    assert_eq!(
        names(&pod, "initContainers"),
        ["istio-init", "istio-proxy", "vigil-init"]
    );
    assert_eq!(names(&pod, "containers"), ["hello", "vigil-proxy"]);
    assert_eq!(
        env(
            container(&pod, "containers", "vigil-proxy"),
            "VIGIL_WORKLOAD"
        ),
        "hello"
    );
}

#[test]
fn pods_that_could_undo_the_interception_are_denied_in_enforcement() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = setup(tmp.path());
    let mutate = |ns: &str, object: &Value| {
        let (_, answer) = hook.post("/mutate", &pod_review("m", ns, object));
        match answer["response"].get("patch") {
            Some(_) => patched(object, &answer, "m"),
            None => object.clone(),
        }
    };
    let validate =
        |ns: &str, object: &Value| hook.post("/validate", &pod_review("v", ns, object)).1;

    // The profiles of these notebooks were learned: only their risks
    // count here (profiles outside the baseline: the next test).
    learn_profiles(
        &hook,
        tmp.path(),
        &[
            ("jhub", "jupyterhub.k8s-singleuser-sample"),
            (
                "kubeflow-user",
                "j1r0q0g6.notebooks.notebook-servers.rstudio-tidyverse",
            ),
        ],
    );
    // JupyterHub's pod runs its notebook as uid 1000: fine in enforcement.
    hook.controller
        .set_mode(&["enforcement", "--namespace", "jhub"]);
    let jovyan = mutate(
        "jhub",
        &fixture_json("jupyterhub/kubespawner-pod-default-server.rendered.json"),
    );
    assert_eq!(validate("jhub", &jovyan)["response"]["allowed"], true);
    // The same notebook as root: denied, saying why.
    let mut root = jovyan.clone();
    root["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
    let answer = validate("jhub", &root);
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    let message = answer["response"]["status"]["message"].as_str().unwrap();
    assert!(message.contains("notebook runs as root"), "{message}");
    // As the sidecar's uid, whose traffic is never redirected.
    let mut as_proxy = jovyan.clone();
    as_proxy["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(2102);
    let message = validate("jhub", &as_proxy)["response"]["status"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("uid 2102, the sidecar's"),
        "{message}"
    );
    // Letting a setuid program in the image make it root (and then the
    // sidecar's uid): KubeSpawner turns that off; without it, denied.
    let mut setuid = jovyan.clone();
    setuid["spec"]["containers"][0]["securityContext"]["allowPrivilegeEscalation"] = json!(true);
    let message = validate("jhub", &setuid)["response"]["status"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("notebook may gain privileges"),
        "{message}"
    );
    // Requiring a non-root uid but leaving it to the image, which may pick
    // the sidecar's (`USER 2102`).
    let mut image_uid = jovyan.clone();
    image_uid["spec"]["containers"][0]["securityContext"] =
        json!({"runAsNonRoot": true, "allowPrivilegeEscalation": false});
    let message = validate("jhub", &image_uid)["response"]["status"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("its image picks the uid"),
        "{message}"
    );
    // With NET_ADMIN.
    let mut admin = jovyan.clone();
    admin["spec"]["containers"][0]["securityContext"]["capabilities"] =
        json!({"add": ["NET_ADMIN"]});
    assert_eq!(validate("jhub", &admin)["response"]["allowed"], false);
    // Opting out of the sidecar in a namespace under enforcement.
    let mut opted_out = fixture_json("jupyterhub/kubespawner-pod-default-server.rendered.json");
    opted_out["metadata"]["annotations"]["vigil.io/inject"] = json!("disabled");
    let opted_out = mutate("jhub", &opted_out);
    assert!(
        names(&opted_out, "containers")
            .iter()
            .all(|n| n != "vigil-proxy")
    );
    let answer = validate("jhub", &opted_out);
    assert_eq!(answer["response"]["allowed"], false, "{answer}");
    // A sidecar swapped for something else after injection.
    let mut swapped = jovyan.clone();
    let at = names(&swapped, "containers")
        .iter()
        .position(|n| n == "vigil-proxy")
        .unwrap();
    swapped["spec"]["containers"][at]["image"] = json!("busybox");
    let message = validate("jhub", &swapped)["response"]["status"]["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap()
            .contains("vigil-proxy is not as Vigil injects it (image"),
        "{message}"
    );

    // Kubeflow's notebook sets no uid: it may run as root. In learning it
    // is admitted with a warning; in enforcement it is denied.
    let notebook = mutate(
        "kubeflow-user",
        &fixture_json("kubeflow/notebook-pod-istio-injected-minikf.converted.json"),
    );
    let answer = validate("kubeflow-user", &notebook);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    let warnings = answer["response"]["warnings"].to_string();
    assert!(
        warnings.contains("asa232rstudio may run as root"),
        "{warnings}"
    );
    hook.controller
        .set_mode(&["enforcement", "--namespace", "kubeflow-user"]);
    assert_eq!(
        validate("kubeflow-user", &notebook)["response"]["allowed"],
        false
    );
    // In alert-only enforcement it is admitted again, with the warning.
    hook.controller.set_mode(&[
        "enforcement",
        "--alert-only",
        "--namespace",
        "kubeflow-user",
    ]);
    assert_eq!(
        validate("kubeflow-user", &notebook)["response"]["allowed"],
        true
    );

    // kubectl debug: an ephemeral container with NET_ADMIN is refused.
    let mut debug = review(json!({
        "uid": "dbg", "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "subResource": "ephemeralcontainers", "namespace": "jhub", "operation": "UPDATE",
        "userInfo": {"username": "alice"}, "object": jovyan, "oldObject": jovyan}));
    debug["request"]["object"]["spec"]["ephemeralContainers"] = json!([{"name": "debugger",
        "image": "nicolaka/netshoot", "securityContext": {"runAsUser": 1000, "capabilities": {"add": ["NET_ADMIN"]}}}]);
    assert_eq!(
        hook.post("/validate", &debug).1["response"]["allowed"],
        false
    );

    // A namespace without injection is none of the webhook's business.
    assert_eq!(validate("plain", &root)["response"]["allowed"], true);
}

/// Adds these (namespace, profile) to the baseline with `vigilctl
/// baseline import --merge`.
fn learn_profiles(hook: &Webhook, dir: &std::path::Path, profiles: &[(&str, &str)]) {
    let mut doc = String::from("version: 1\nnamespaces:\n");
    for (ns, profile) in profiles {
        doc.push_str(&format!("  {ns}:\n    workloads:\n    - {profile}\n"));
    }
    let file = dir.join("profiles.yaml");
    std::fs::write(&file, doc).unwrap();
    let file = file.display().to_string();
    let (ok, _, err) = hook
        .controller
        .vigilctl(&["baseline", "import", &file, "--merge"]);
    assert!(ok, "baseline import: {err}");
}

#[test]
fn workloads_of_a_profile_outside_the_baseline_are_refused_in_enforcement() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = setup(tmp.path());
    // The recorded Deployment CREATE (kubectl apply of nginx), in `lab`.
    let mut nginx =
        fixture_json("admission/admissionreview-v1beta1-deployment-create-linkerd.json");
    nginx["request"]["namespace"] = json!("lab");
    nginx["request"]["object"]["metadata"]["namespace"] = json!("lab");
    // A miner as a JupyterHub user's pod (the rendered one, its image
    // xmrig's), injected as the webhook would.
    let mut miner_pod = fixture_json("jupyterhub/kubespawner-pod-default-server.rendered.json");
    miner_pod["metadata"]["name"] = json!("miner");
    miner_pod["spec"]["containers"][0]["image"] = json!("docker.io/xmrig/xmrig:6.21.0");
    let injected = |pod: &Value| {
        let (_, answer) = hook.post("/mutate", &pod_review("m", "lab", pod));
        patched(pod, &answer, "m")
    };
    let miner = pod_review("v", "lab", &injected(&miner_pod));
    let validate = |body: &Value| hook.post("/validate", body).1["response"].clone();

    // Learning: nothing is checked.
    assert_eq!(validate(&nginx)["allowed"], true);
    assert_eq!(validate(&miner)["allowed"], true);

    // Enforcement with nginx's profile in the baseline.
    learn_profiles(&hook, tmp.path(), &[("lab", "nginx")]);
    hook.controller
        .set_mode(&["enforcement", "--namespace", "lab"]);
    let answer = validate(&nginx);
    assert_eq!(answer["allowed"], true, "{answer}");
    // A dry run of the miner: refused, naming the profile, no alert.
    let mut dry_pod = miner_pod.clone();
    dry_pod["metadata"]["name"] = json!("dry-miner");
    let mut dry = pod_review("d", "lab", &injected(&dry_pod));
    dry["request"]["dryRun"] = json!(true);
    let answer = validate(&dry);
    assert_eq!(answer["allowed"], false, "{answer}");
    let message = answer["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("profile xmrig/xmrig (Pod dry-miner) is not in its baseline"),
        "{message}"
    );
    // The miner itself: refused, and alerted as a new deployment.
    assert_eq!(validate(&miner)["allowed"], false);
    let alert = hook.controller.wait_alert("new_deployment", "miner", None);
    assert_eq!(alert["action"], "blocked", "{alert}");
    // The same miner as a Deployment's template: refused before any pod.
    let mut as_deployment = nginx.clone();
    as_deployment["request"]["object"]["metadata"]["name"] = json!("cruncher");
    as_deployment["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("xmrig/xmrig");
    let answer = validate(&as_deployment);
    assert_eq!(answer["allowed"], false, "{answer}");
    assert!(
        answer["status"]["message"]
            .as_str()
            .unwrap()
            .contains("(Deployment cruncher)")
    );

    // The miner claiming nginx's profile by label is admitted, but it is
    // then nginx to its sidecar: held to what nginx was seen to reach.
    let mut claimed = miner_pod.clone();
    claimed["metadata"]["labels"]["vigil.io/profile"] = json!("nginx");
    let claimed = injected(&claimed);
    let proxy = container(&claimed, "containers", "vigil-proxy");
    assert_eq!(env(proxy, "VIGIL_PROFILE"), "nginx");
    let answer = validate(&pod_review("c", "lab", &claimed));
    assert_eq!(answer["allowed"], true, "{answer}");

    // Alert-only: admitted with a warning naming the profile, and alerted.
    hook.controller
        .set_mode(&["enforcement", "--alert-only", "--namespace", "lab"]);
    let mut other = miner_pod.clone();
    other["metadata"]["name"] = json!("other-miner");
    let answer = validate(&pod_review("o", "lab", &injected(&other)));
    assert_eq!(answer["allowed"], true, "{answer}");
    assert!(
        answer["warnings"]
            .to_string()
            .contains("profile xmrig/xmrig"),
        "{answer}"
    );
    let alert = hook
        .controller
        .wait_alert("new_deployment", "other-miner", None);
    assert_ne!(alert["action"], "blocked", "{alert}");
    // No alert for the dry run.
    let alerts = hook.controller.json(&["alerts"]);
    let mut names: Vec<&str> = alerts
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "new_deployment")
        .filter_map(|a| a["workload"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["cruncher", "miner", "other-miner"]);
}

#[test]
fn faults_never_break_a_pod() {
    let tmp = tempfile::tempdir().unwrap();
    let hook = setup(tmp.path());
    // Not JSON: answered 200, admitted, with the reason.
    let (status, answer) = hook.post_raw("/mutate", b"{not json", &hook.ca);
    assert_eq!(status, 200);
    assert_eq!(answer["response"]["allowed"], true, "{answer}");
    assert!(
        answer["response"]["warnings"]
            .to_string()
            .contains("not an AdmissionReview")
    );
    // A namespace the API server does not know: admitted unchanged, said so.
    let object = fixture_json("jupyterhub/kubespawner-pod-default-server.rendered.json");
    let (_, answer) = hook.post("/mutate", &pod_review("x", "gone", &object));
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"].get("patch").is_none());
    assert!(
        answer["response"]["warnings"]
            .to_string()
            .contains("could not be read")
    );
    // Not enabled, a DELETE, another kind and an old API version: untouched.
    let (_, answer) = hook.post("/mutate", &pod_review("p", "plain", &object));
    assert!(answer["response"].get("patch").is_none() && answer["response"]["allowed"] == true);
    let delete = fixture_json("admission/kubewarden-admissionrequest-pod-delete.json");
    let (_, answer) = hook.post("/mutate", &review(delete.clone()));
    assert_eq!(answer["response"]["uid"], delete["uid"]);
    assert!(answer["response"].get("patch").is_none() && answer["response"]["allowed"] == true);
    let deployment =
        fixture_json("admission/admissionreview-v1beta1-deployment-create-linkerd.json");
    let (_, answer) = hook.post("/mutate", &deployment);
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1beta1", "{answer}");
    assert!(answer["response"].get("patch").is_none() && answer["response"]["allowed"] == true);
    // Only the certificate it was given is served.
    let (other, _) = support::certificate(tmp.path(), "other");
    let (status, _) = hook.post_raw("/mutate", b"{}", &other);
    assert_eq!(status, 0, "a client trusting another CA cannot connect");
}

#[test]
fn a_rotated_certificate_is_served_without_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let api = ApiServer::start();
    api.namespace("lab", json!({"vigil.io/inject": "enabled"}), json!({}));
    let (cert, key) = support::certificate(tmp.path(), "served");
    let hook = Webhook::start_with(tmp.path(), &api, &cert, &key, &[]);
    let body = support::pod_review(
        "r",
        "lab",
        &json!({"metadata": {"name": "p"}, "spec": {"containers": []}}),
    );
    assert_eq!(hook.post("/mutate", &body).0, 200);
    // cert-manager renews in place: new files, same paths.
    let fresh = tempfile::tempdir().unwrap();
    let (new_cert, new_key) = support::certificate(fresh.path(), "renewed");
    std::fs::copy(&new_key, &key).unwrap();
    std::fs::copy(&new_cert, &cert).unwrap();
    common::wait_for("the renewed certificate", || {
        (hook
            .post_raw("/mutate", body.to_string().as_bytes(), &new_cert)
            .0
            == 200)
            .then_some(())
    });
}
