//! The sidecar injection, as pure functions over a pod (or a pod template)
//! as JSON: whether a pod is to be injected ([`decide`]), the pod with the
//! sidecar ([`inject`]) and without it ([`uninject`]). The webhook turns
//! the difference into a JSONPatch; `vigilctl inject` prints the result.
//!
//! Injection is idempotent and tamper-proof: [`inject`] first removes
//! anything named like Vigil's containers and volumes, then renders its
//! own, so a pod that is already injected yields the same pod (an empty
//! patch) and a pod that brought its own `vigil-proxy` gets the real one.
//! Istio's containers (`istio-*`) are never touched; the notebook container
//! keeps its name and its place.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use super::config::{ADMIN_PORT, DNS_PORT, INBOUND_PORT, OUTBOUND_PORT, SidecarArgs};
use super::identity::{Identity, Namespace, identify, str_at, string_map};

/// The sidecar container.
pub const PROXY_CONTAINER: &str = "vigil-proxy";
/// The init container that writes the iptables rules.
pub const INIT_CONTAINER: &str = "vigil-init";
/// The volume holding the sidecar token (mounted into the sidecar only).
pub const TOKEN_VOLUME: &str = "vigil-token";
/// The volume for iptables' lock file (the init container's root file
/// system is read-only).
pub const XTABLES_VOLUME: &str = "vigil-xtables";
/// Where the token volume is mounted.
pub const TOKEN_DIR: &str = "/var/run/vigil/token";
/// The opt-in / opt-out label or annotation (`enabled` / `disabled`).
pub const INJECT: &str = "vigil.io/inject";
/// Annotation prefix of what the injector records on the pod.
pub const ANNOTATION_PREFIX: &str = "vigil.io/";
/// Istio's annotation listing inbound ports Envoy leaves alone.
pub const ISTIO_EXCLUDE_INBOUND: &str = "traffic.sidecar.istio.io/excludeInboundPorts";
/// Where Vigil records which ports it added to [`ISTIO_EXCLUDE_INBOUND`].
pub const ISTIO_EXCLUDED_BY_VIGIL: &str = "vigil.io/istio-excluded-inbound-ports";
/// Istio's injection status annotation.
pub const ISTIO_STATUS: &str = "sidecar.istio.io/status";

/// A label or annotation saying yes or no to injection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opt {
    /// `enabled`.
    Enabled,
    /// `disabled`.
    Disabled,
    /// Absent (or another value).
    Unset,
}

impl Opt {
    fn of(value: Option<&String>) -> Self {
        match value.map(String::as_str) {
            Some("enabled") => Self::Enabled,
            Some("disabled") => Self::Disabled,
            _ => Self::Unset,
        }
    }
}

/// The namespace's choice: its label, else its annotation.
pub fn namespace_opt(namespace: &Namespace) -> Opt {
    match Opt::of(namespace.labels.get(INJECT)) {
        Opt::Unset => Opt::of(namespace.annotations.get(INJECT)),
        opt => opt,
    }
}

/// The pod's own choice: its annotation, else its label.
pub fn pod_opt(pod: &Value) -> Opt {
    let annotations = string_map(pod.pointer("/metadata/annotations"));
    match Opt::of(annotations.get(INJECT)) {
        Opt::Unset => Opt::of(string_map(pod.pointer("/metadata/labels")).get(INJECT)),
        opt => opt,
    }
}

/// Whether to inject, and if not, why not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Inject the sidecar.
    Inject,
    /// Leave the pod as it is.
    Skip(SkipReason),
}

/// Why a pod is left alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Neither its namespace nor the pod asked for injection.
    NotEnabled,
    /// The namespace says `vigil.io/inject: disabled`.
    NamespaceDisabled,
    /// The pod says `vigil.io/inject: disabled`.
    PodDisabled,
    /// The pod shares the node's network: rules would rewrite the node's.
    HostNetwork,
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::NotEnabled => "neither the namespace nor the pod has vigil.io/inject: enabled",
            Self::NamespaceDisabled => "the namespace has vigil.io/inject: disabled",
            Self::PodDisabled => "the pod has vigil.io/inject: disabled",
            Self::HostNetwork => "the pod uses the host's network (hostNetwork: true)",
        })
    }
}

/// Whether `pod` in `namespace` gets the sidecar: the pod's own
/// `disabled` wins, then the namespace's choice, then the pod's `enabled`.
pub fn decide(pod: &Value, namespace: &Namespace) -> Decision {
    let pod_choice = pod_opt(pod);
    if pod_choice == Opt::Disabled {
        return Decision::Skip(SkipReason::PodDisabled);
    }
    if host_network(pod) {
        return Decision::Skip(SkipReason::HostNetwork);
    }
    match (namespace_opt(namespace), pod_choice) {
        (Opt::Enabled, _) | (Opt::Unset, Opt::Enabled) => Decision::Inject,
        (Opt::Disabled, _) => Decision::Skip(SkipReason::NamespaceDisabled),
        _ => Decision::Skip(SkipReason::NotEnabled),
    }
}

/// Whether the pod uses the node's network namespace.
pub fn host_network(pod: &Value) -> bool {
    pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
}

/// Whether a container is the workload's own: neither Vigil's nor Istio's.
pub fn is_app_container(name: &str) -> bool {
    name != PROXY_CONTAINER && name != INIT_CONTAINER && !name.starts_with("istio-")
}

/// Whether Istio's sidecar is (or will be) in the pod: its containers or
/// status annotation, or a namespace Istio injects into (label
/// `istio-injection: enabled` or `istio.io/rev`) unless the pod opts out
/// with `sidecar.istio.io/inject: "false"`.
pub fn istio_present(pod: &Value, namespace: &Namespace) -> bool {
    let names = container_names(pod, "containers")
        .chain(container_names(pod, "initContainers"))
        .any(|n| n == "istio-proxy" || n == "istio-init");
    let annotations = string_map(pod.pointer("/metadata/annotations"));
    let labels = string_map(pod.pointer("/metadata/labels"));
    let pod_off = [&annotations, &labels]
        .iter()
        .any(|m| m.get("sidecar.istio.io/inject").map(String::as_str) == Some("false"));
    let ns_on = namespace.labels.get("istio-injection").map(String::as_str) == Some("enabled")
        || namespace.labels.contains_key("istio.io/rev")
        || labels.get("sidecar.istio.io/inject").map(String::as_str) == Some("true");
    names || annotations.contains_key(ISTIO_STATUS) || (ns_on && !pod_off)
}

fn container_names<'a>(pod: &'a Value, list: &str) -> impl Iterator<Item = &'a str> {
    pod.pointer(&format!("/spec/{list}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| str_at(c, "/name"))
}

/// The pod with Vigil's sidecar, init container, volumes and annotations,
/// rendered afresh (whatever of Vigil's it had is replaced).
pub fn inject(pod: &Value, namespace: &Namespace, args: &SidecarArgs) -> Value {
    let mut out = uninject(pod);
    let identity = identify(&out, namespace);
    let istio = istio_present(&out, namespace);
    push(&mut out, "initContainers", init_container(args, istio));
    push(&mut out, "containers", proxy_container(args, &identity));
    push(
        &mut out,
        "volumes",
        json!({"name": TOKEN_VOLUME, "secret": {
        "secretName": args.proxy_token_secret, "defaultMode": 0o444}}),
    );
    push(
        &mut out,
        "volumes",
        json!({"name": XTABLES_VOLUME, "emptyDir": {}}),
    );
    let annotations = annotations_mut(&mut out);
    for (key, value) in identity_annotations(&identity) {
        annotations.insert(key, Value::String(value));
    }
    if istio {
        exclude_from_istio(annotations);
    }
    out
}

/// The annotations recording the identity given to the sidecar.
fn identity_annotations(identity: &Identity) -> Vec<(String, String)> {
    [
        ("vigil.io/workload", &identity.workload),
        ("vigil.io/owner-kind", &identity.owner_kind),
        ("vigil.io/service-account", &identity.service_account),
        ("vigil.io/tenant", &identity.tenant),
        ("vigil.io/profile-name", &identity.profile),
    ]
    .into_iter()
    .filter(|(_, v)| !v.is_empty())
    .map(|(k, v)| (k.to_owned(), v.clone()))
    .collect()
}

/// Adds Vigil's inbound and admin ports to Istio's excluded inbound ports,
/// remembering which it added (so [`uninject`] takes back only those).
fn exclude_from_istio(annotations: &mut Map<String, Value>) {
    let existing = annotations
        .get(ISTIO_EXCLUDE_INBOUND)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let mut ports: Vec<String> = split_ports(&existing);
    let mut added = Vec::new();
    for port in [INBOUND_PORT, ADMIN_PORT].map(|p| p.to_string()) {
        if !ports.contains(&port) {
            ports.push(port.clone());
            added.push(port);
        }
    }
    annotations.insert(ISTIO_EXCLUDE_INBOUND.into(), ports.join(",").into());
    if !added.is_empty() {
        annotations.insert(ISTIO_EXCLUDED_BY_VIGIL.into(), added.join(",").into());
    }
}

fn split_ports(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The pod without anything of Vigil's: its containers, volumes and
/// annotations (but `vigil.io/inject` and `vigil.io/profile` stay), and
/// the ports it added to Istio's exclusions.
pub fn uninject(pod: &Value) -> Value {
    let mut out = pod.clone();
    let ours = |list: &str, v: &Value| {
        let name = str_at(v, "/name");
        match list {
            "volumes" => name == TOKEN_VOLUME || name == XTABLES_VOLUME,
            _ => name == PROXY_CONTAINER || name == INIT_CONTAINER,
        }
    };
    for list in ["containers", "initContainers", "volumes"] {
        if let Some(items) = out
            .pointer_mut(&format!("/spec/{list}"))
            .and_then(Value::as_array_mut)
        {
            items.retain(|v| !ours(list, v));
        }
    }
    for list in ["initContainers", "volumes"] {
        let empty = out
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .is_some_and(Vec::is_empty);
        let had = pod
            .pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .is_some_and(|items| items.iter().all(|v| ours(list, v)));
        if empty
            && had
            && let Some(spec) = out.get_mut("spec").and_then(Value::as_object_mut)
        {
            spec.remove(list);
        }
    }
    if let Some(annotations) = out
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        take_back_istio_ports(annotations);
        annotations.retain(|k, _| {
            !k.starts_with(ANNOTATION_PREFIX) || k == INJECT || k == super::identity::PROFILE_LABEL
        });
        if annotations.is_empty()
            && let Some(meta) = out.get_mut("metadata").and_then(Value::as_object_mut)
        {
            meta.remove("annotations");
        }
    }
    out
}

fn take_back_istio_ports(annotations: &mut Map<String, Value>) {
    let Some(added) = annotations
        .get(ISTIO_EXCLUDED_BY_VIGIL)
        .and_then(Value::as_str)
        .map(split_ports)
    else {
        return;
    };
    let added: BTreeSet<String> = added.into_iter().collect();
    let kept: Vec<String> = annotations
        .get(ISTIO_EXCLUDE_INBOUND)
        .and_then(Value::as_str)
        .map(split_ports)
        .unwrap_or_default()
        .into_iter()
        .filter(|p| !added.contains(p))
        .collect();
    if kept.is_empty() {
        annotations.remove(ISTIO_EXCLUDE_INBOUND);
    } else {
        annotations.insert(ISTIO_EXCLUDE_INBOUND.into(), kept.join(",").into());
    }
}

fn push(pod: &mut Value, list: &str, item: Value) {
    let spec = object_at(pod, "spec");
    let items = spec.entry(list).or_insert_with(|| Value::Array(Vec::new()));
    if !items.is_array() {
        *items = Value::Array(Vec::new());
    }
    if let Some(items) = items.as_array_mut() {
        items.push(item);
    }
}

fn annotations_mut(pod: &mut Value) -> &mut Map<String, Value> {
    let meta = object_at(pod, "metadata");
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    annotations.as_object_mut().expect("made an object above")
}

fn object_at<'a>(value: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    if !value.is_object() {
        *value = Value::Object(Map::new());
    }
    let map = value.as_object_mut().expect("made an object above");
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("made an object above")
}

/// The `vigil-init` container: `vigil-proxy init` as root with NET_ADMIN
/// and NET_RAW (here only); with Istio, Envoy's uid is let out untouched.
pub fn init_container(args: &SidecarArgs, istio: bool) -> Value {
    let mut cmd = vec![
        "init".to_owned(),
        "--proxy-uid".to_owned(),
        args.proxy_uid.to_string(),
        "--inbound-port".to_owned(),
        INBOUND_PORT.to_string(),
        "--outbound-port".to_owned(),
        OUTBOUND_PORT.to_string(),
        "--dns-port".to_owned(),
        DNS_PORT.to_string(),
        "--skip-inbound-ports".to_owned(),
        ADMIN_PORT.to_string(),
    ];
    if istio {
        cmd.push("--skip-outbound-uids".to_owned());
        cmd.push(args.istio_uid.to_string());
    }
    json!({
        "name": INIT_CONTAINER,
        "image": args.proxy_image,
        "imagePullPolicy": args.proxy_image_pull_policy,
        "command": ["vigil-proxy"],
        "args": cmd,
        "securityContext": {
            "runAsUser": 0,
            "runAsGroup": 0,
            "runAsNonRoot": false,
            "privileged": false,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}
        },
        "resources": resources(args),
        "volumeMounts": [{"name": XTABLES_VOLUME, "mountPath": "/run"}],
    })
}

/// The `vigil-proxy` container, with the pod's identity.
pub fn proxy_container(args: &SidecarArgs, identity: &Identity) -> Value {
    let env = |name: &str, value: &str| json!({"name": name, "value": value});
    let mut container = json!({
        "name": PROXY_CONTAINER,
        "image": args.proxy_image,
        "imagePullPolicy": args.proxy_image_pull_policy,
        "command": ["vigil-proxy"],
        "env": [
            env("VIGIL_WORKLOAD", &identity.workload),
            {"name": "VIGIL_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            env("VIGIL_TENANT", &identity.tenant),
            env("VIGIL_PROFILE", &identity.profile),
            env("VIGIL_CONTROLLER", &args.proxy_controller),
            env("VIGIL_CONTROLLER_TOKEN_FILE", &format!("{TOKEN_DIR}/token")),
            env("VIGIL_INBOUND_ADDR", &format!("0.0.0.0:{INBOUND_PORT}")),
            env("VIGIL_OUTBOUND_ADDR", &format!("127.0.0.1:{OUTBOUND_PORT}")),
            env("VIGIL_ADMIN_ADDR", &format!("0.0.0.0:{ADMIN_PORT}")),
            env("VIGIL_DNS_ADDR", &format!("127.0.0.1:{DNS_PORT}")),
        ],
        "ports": [
            {"name": "vigil-inbound", "containerPort": INBOUND_PORT, "protocol": "TCP"},
            {"name": "vigil-admin", "containerPort": ADMIN_PORT, "protocol": "TCP"},
        ],
        "securityContext": {
            "runAsUser": args.proxy_uid,
            "runAsGroup": args.proxy_uid,
            "runAsNonRoot": true,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]}
        },
        "resources": resources(args),
        "readinessProbe": {"httpGet": {"path": "/ready", "port": ADMIN_PORT}, "periodSeconds": 5},
        "livenessProbe": {"httpGet": {"path": "/live", "port": ADMIN_PORT}, "periodSeconds": 10},
        "volumeMounts": [{"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}],
    });
    if let Some(threads) = worker_threads(args) {
        container["env"]
            .as_array_mut()
            .expect("env is a list")
            .push(threads);
    }
    container
}

/// How many data-path threads the sidecar runs. With a CPU limit the
/// proxy reads its cgroup quota itself (`--worker-threads 0`); without one
/// it would size itself to every CPU of the node (64 threads on a 64-core
/// node, for a sidecar that asked for 10m), so its CPU request sizes it:
/// the request in whole cores, rounded up (10m: one thread), through the
/// downward API, so a pod's own request, if raised, counts.
fn worker_threads(args: &SidecarArgs) -> Option<Value> {
    (args.proxy_cpu_limit.is_empty() && !args.proxy_cpu_request.is_empty()).then(|| {
        json!({"name": "VIGIL_WORKER_THREADS", "valueFrom": {"resourceFieldRef": {
            "containerName": PROXY_CONTAINER, "resource": "requests.cpu", "divisor": "1"}}})
    })
}

fn resources(args: &SidecarArgs) -> Value {
    let quantities = |pairs: [(&str, &String); 2]| -> Map<String, Value> {
        pairs
            .into_iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (k.to_owned(), Value::String(v.clone())))
            .collect()
    };
    let requests = quantities([
        ("cpu", &args.proxy_cpu_request),
        ("memory", &args.proxy_memory_request),
    ]);
    let limits = quantities([
        ("cpu", &args.proxy_cpu_limit),
        ("memory", &args.proxy_memory_limit),
    ]);
    let mut out = Map::new();
    if !requests.is_empty() {
        out.insert("requests".into(), requests.into());
    }
    if !limits.is_empty() {
        out.insert("limits".into(), limits.into());
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests;
