//! The pure half of discovery: watch events of Namespaces, Pods, Services,
//! EndpointSlices and the pods' owners (Deployments, StatefulSets, Jobs)
//! in; the workloads whose pods' IPs, services, tenant or profile changed
//! out, as [`Discovered`] batches for the engine. No I/O, no clock.
//!
//! A workload is named by [`identity::identify`], the rule the sidecar
//! injector uses, so a pod's sidecar and its discovery agree: a pod owned
//! by ReplicaSet `web-7d4b9c6f5` is Deployment `web` (its
//! `pod-template-hash` stripped, so ReplicaSets need no watch), a Kubeflow
//! Notebook's pod is its Notebook, a JupyterHub pod its own name.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace as NamespaceObject, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::watcher::Event;
use serde_json::{Value, json};

use crate::inventory::Discovered;
use crate::kube::identity::{self, Namespace, str_at, string_map};
use crate::model::WorkloadId;

/// The label an EndpointSlice names its Service with.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One watch event of one watched kind.
// Each event is moved once, straight into `Cluster::apply`: boxing would
// only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Change {
    /// A Namespace (its labels and annotations give tenants).
    Namespace(Event<NamespaceObject>),
    /// A Pod.
    Pod(Event<Pod>),
    /// A Service.
    Service(Event<Service>),
    /// An EndpointSlice (which pods back a Service).
    EndpointSlice(Event<EndpointSlice>),
    /// A Deployment (a workload before its first pod).
    Deployment(Event<Deployment>),
    /// A StatefulSet (Kubeflow's notebooks).
    StatefulSet(Event<StatefulSet>),
    /// A Job (and through its name, a CronJob).
    Job(Event<Job>),
}

/// (namespace, name): the key of every table ("" name for a Namespace).
type Key = (String, String);

/// The objects of one kind, with the list being read after an `Init`
/// (it replaces them whole at `InitDone`, so a relist after a 410 Gone
/// forgets what was deleted meanwhile).
#[derive(Debug)]
struct Table<T> {
    live: BTreeMap<Key, T>,
    relist: Option<BTreeMap<Key, T>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            live: BTreeMap::new(),
            relist: None,
        }
    }
}

impl<T> Table<T> {
    /// Applies one event; the namespaces it touched go into `dirty`.
    fn apply(&mut self, event: Event<(Key, T)>, dirty: &mut BTreeSet<String>) {
        match event {
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply((key, value)) => {
                self.relist.get_or_insert_default().insert(key, value);
            }
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                dirty.extend(self.live.keys().chain(fresh.keys()).map(|k| k.0.clone()));
                self.live = fresh;
            }
            Event::Apply((key, value)) => {
                dirty.insert(key.0.clone());
                self.live.insert(key, value);
            }
            Event::Delete((key, _)) => {
                dirty.insert(key.0.clone());
                self.live.remove(&key);
            }
        }
    }

    /// The objects of namespace `ns`, by name.
    fn in_namespace<'a>(&'a self, ns: &'a str) -> impl Iterator<Item = (&'a str, &'a T)> + 'a {
        self.live
            .range((ns.to_owned(), String::new())..)
            .take_while(move |(k, _)| k.0 == ns)
            .map(|(k, v)| (k.1.as_str(), v))
    }
}

/// What discovery keeps of a pod.
#[derive(Clone, Debug, PartialEq)]
struct PodEntry {
    /// The fields [`identity::identify`] reads (metadata, containers).
    identity: Value,
    /// Its own IPs (none on the host's network, or once it has ended).
    ips: Vec<IpAddr>,
    labels: BTreeMap<String, String>,
}

/// What discovery keeps of a Service.
#[derive(Clone, Debug, PartialEq)]
struct ServiceEntry {
    /// Its cluster IPs (none for a headless or ExternalName service).
    ips: Vec<IpAddr>,
    ports: Vec<u16>,
    /// Its pod selector, empty when it has none.
    selector: BTreeMap<String, String>,
}

/// What discovery keeps of an EndpointSlice.
#[derive(Clone, Debug, PartialEq)]
struct SliceEntry {
    service: String,
    /// Each endpoint's pod (its `targetRef`, when a Pod) and addresses.
    endpoints: Vec<(Option<String>, Vec<IpAddr>)>,
}

/// The state of the cluster as the watches showed it, and what was last
/// handed to the engine.
#[derive(Debug, Default)]
pub struct Cluster {
    namespaces: Table<Namespace>,
    pods: Table<PodEntry>,
    services: Table<ServiceEntry>,
    slices: Table<SliceEntry>,
    deployments: Table<Value>,
    statefulsets: Table<Value>,
    jobs: Table<Value>,
    dirty: BTreeSet<String>,
    emitted: BTreeMap<WorkloadId, Discovered>,
}

/// `event` with its object turned into a table row by `row`.
fn rows<K, T>(event: Event<K>, row: impl Fn(K) -> (Key, T)) -> Event<(Key, T)> {
    match event {
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
        Event::InitApply(o) => Event::InitApply(row(o)),
        Event::Apply(o) => Event::Apply(row(o)),
        Event::Delete(o) => Event::Delete(row(o)),
    }
}

fn to_value<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// The IPs in the strings of `values` (others skipped), sorted.
fn parse_ips<'a>(values: impl Iterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = values
        .filter_map(|s| s.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}

fn array<'a>(value: &'a Value, pointer: &str) -> impl Iterator<Item = &'a Value> + 'a {
    value
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

impl PodEntry {
    fn from_object(pod: &Value) -> Self {
        let meta = &pod["metadata"];
        let containers: Vec<Value> = array(pod, "/spec/containers")
            .map(|c| json!({"name": c.get("name"), "image": c.get("image")}))
            .collect();
        // A static pod's mirror is "owned" by its Node: it is its own
        // workload, not one with every other static pod of that node.
        let owners: Vec<&Value> = array(pod, "/metadata/ownerReferences")
            .filter(|o| str_at(o, "/kind") != "Node")
            .collect();
        let identity = json!({
            "metadata": {
                "name": meta.get("name"),
                "generateName": meta.get("generateName"),
                "namespace": meta.get("namespace"),
                "labels": meta.get("labels"),
                "annotations": meta.get("annotations"),
                "ownerReferences": owners,
            },
            "spec": {
                "serviceAccountName": pod.pointer("/spec/serviceAccountName"),
                "containers": containers,
            },
        });
        Self {
            identity,
            ips: pod_ips(pod),
            labels: string_map(meta.get("labels")),
        }
    }
}

/// A pod's own IPs: none when it shares its node's network (that address
/// is every host-network pod's) or has ended (its IP is given to others).
fn pod_ips(pod: &Value) -> Vec<IpAddr> {
    if pod.pointer("/spec/hostNetwork").and_then(Value::as_bool) == Some(true)
        || matches!(str_at(pod, "/status/phase"), "Succeeded" | "Failed")
    {
        return Vec::new();
    }
    let ips = parse_ips(array(pod, "/status/podIPs").map(|p| str_at(p, "/ip")));
    if ips.is_empty() {
        parse_ips(std::iter::once(str_at(pod, "/status/podIP")))
    } else {
        ips
    }
}

impl ServiceEntry {
    fn from_object(service: &Value) -> Self {
        let mut ips = parse_ips(array(service, "/spec/clusterIPs").filter_map(Value::as_str));
        if ips.is_empty() {
            ips = parse_ips(std::iter::once(str_at(service, "/spec/clusterIP")));
        }
        if str_at(service, "/spec/type") == "ExternalName" {
            ips.clear();
        }
        let mut ports: Vec<u16> = array(service, "/spec/ports")
            .filter_map(|p| u16::try_from(p.get("port")?.as_u64()?).ok())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Self {
            ips,
            ports,
            selector: string_map(service.pointer("/spec/selector")),
        }
    }
}

impl SliceEntry {
    fn from_object(slice: &Value) -> Self {
        let labels = string_map(slice.pointer("/metadata/labels"));
        let endpoints = array(slice, "/endpoints")
            .map(|e| {
                let pod = (str_at(e, "/targetRef/kind") == "Pod")
                    .then(|| str_at(e, "/targetRef/name").to_owned())
                    .filter(|n| !n.is_empty());
                let ips = parse_ips(array(e, "/addresses").filter_map(Value::as_str));
                (pod, ips)
            })
            .collect();
        Self {
            service: labels.get(SERVICE_NAME_LABEL).cloned().unwrap_or_default(),
            endpoints,
        }
    }
}

/// The pod an owner (`kind` `Deployment`, `StatefulSet`, `Job`) would
/// create: its template, in its namespace, owned by it.
pub fn owner_pod(kind: &str, owner: &Value) -> Value {
    let mut meta = owner
        .pointer("/spec/template/metadata")
        .cloned()
        .unwrap_or(Value::Null);
    meta["namespace"] = owner["metadata"]["namespace"].clone();
    meta["ownerReferences"] = json!([{
        "kind": kind,
        "name": owner["metadata"]["name"],
        "controller": true,
    }]);
    let spec = owner
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(Value::Null);
    json!({"metadata": meta, "spec": spec})
}

fn owner_row<T: serde::Serialize>(kind: &'static str) -> impl Fn(T) -> (Key, Value) {
    row_of(move |owner: &Value| owner_pod(kind, owner))
}

fn row_of<T: serde::Serialize, E>(entry: impl Fn(&Value) -> E) -> impl Fn(T) -> (Key, E) {
    move |object| {
        let value = to_value(&object);
        let key = (
            str_at(&value, "/metadata/namespace").to_owned(),
            str_at(&value, "/metadata/name").to_owned(),
        );
        (key, entry(&value))
    }
}

impl Cluster {
    /// Applies one watch event.
    pub fn apply(&mut self, change: Change) {
        let dirty = &mut self.dirty;
        match change {
            Change::Namespace(e) => {
                let row = |ns: NamespaceObject| {
                    let ns = Namespace::from_object(&to_value(&ns));
                    ((ns.name.clone(), String::new()), ns)
                };
                self.namespaces.apply(rows(e, row), dirty);
            }
            Change::Pod(e) => self
                .pods
                .apply(rows(e, row_of(PodEntry::from_object)), dirty),
            Change::Service(e) => self
                .services
                .apply(rows(e, row_of(ServiceEntry::from_object)), dirty),
            Change::EndpointSlice(e) => self
                .slices
                .apply(rows(e, row_of(SliceEntry::from_object)), dirty),
            Change::Deployment(e) => self
                .deployments
                .apply(rows(e, owner_row("Deployment")), dirty),
            Change::StatefulSet(e) => self
                .statefulsets
                .apply(rows(e, owner_row("StatefulSet")), dirty),
            Change::Job(e) => self.jobs.apply(rows(e, owner_row("Job")), dirty),
        }
    }

    /// The workloads that changed since the last call, as the engine takes
    /// them: each whole (its pods' IPs and its services replace what was
    /// known); a workload whose pods and owner are all gone once more with
    /// no IPs, so that its IPs name no one when they are given to others.
    pub fn drain(&mut self) -> Vec<Discovered> {
        let mut out = Vec::new();
        for ns in std::mem::take(&mut self.dirty) {
            let desired = self.desired(&ns);
            let gone: Vec<WorkloadId> = self
                .emitted
                .range(
                    WorkloadId {
                        namespace: ns.clone(),
                        name: String::new(),
                    }..,
                )
                .take_while(|(id, _)| id.namespace == ns)
                .filter(|(id, _)| !desired.contains_key(*id))
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                if let Some(mut last) = self.emitted.remove(&id) {
                    last.pod_ips.clear();
                    last.service_addrs.clear();
                    out.push(last);
                }
            }
            for (id, found) in desired {
                if self.emitted.get(&id) != Some(&found) {
                    self.emitted.insert(id, found.clone());
                    out.push(found);
                }
            }
        }
        out
    }

    /// The workloads as last handed out by [`Cluster::drain`].
    pub fn workloads(&self) -> impl Iterator<Item = &Discovered> {
        self.emitted.values()
    }

    /// The workload of pod `pod` of namespace `ns`, named as
    /// [`Cluster::drain`] names it, when the pod carries the injected
    /// sidecar (a container named [`crate::kube::inject::PROXY_CONTAINER`]);
    /// `None` for another pod or one not (yet) seen.
    pub fn injected_workload(&self, ns: &str, pod: &str) -> Option<WorkloadId> {
        let entry = self.pods.live.get(&(ns.to_owned(), pod.to_owned()))?;
        let injected = array(&entry.identity, "/spec/containers")
            .any(|c| str_at(c, "/name") == crate::kube::inject::PROXY_CONTAINER);
        if !injected {
            return None;
        }
        let who = identity::identify(&entry.identity, &self.namespace(ns));
        WorkloadId::new(ns, &who.workload).ok()
    }

    /// Namespace `ns` as watched (only its name when not seen).
    fn namespace(&self, ns: &str) -> Namespace {
        self.namespaces
            .live
            .get(&(ns.to_owned(), String::new()))
            .cloned()
            .unwrap_or_else(|| Namespace {
                name: ns.to_owned(),
                ..Namespace::default()
            })
    }

    /// Every workload of namespace `ns` as the tables show it now.
    fn desired(&self, ns: &str) -> BTreeMap<WorkloadId, Discovered> {
        let namespace = self.namespace(ns);
        let mut out: BTreeMap<WorkloadId, Discovered> = BTreeMap::new();
        let mut add = |pod: &Value, ips: &[IpAddr]| -> Option<WorkloadId> {
            let who = identity::identify(pod, &namespace);
            let id = WorkloadId::new(ns, &who.workload).ok()?;
            let entry = out.entry(id.clone()).or_insert_with(|| Discovered {
                id: id.clone(),
                ..Discovered::default()
            });
            // A pod's own identity wins over its owner's template.
            if !who.tenant.is_empty() {
                entry.tenant = who.tenant;
            }
            if !who.profile.is_empty() {
                entry.profile = who.profile;
            }
            entry.pod_ips.extend_from_slice(ips);
            Some(id)
        };
        for table in [&self.deployments, &self.statefulsets, &self.jobs] {
            for (_, pod) in table.in_namespace(ns) {
                add(pod, &[]);
            }
        }
        let mut by_pod: BTreeMap<&str, WorkloadId> = BTreeMap::new();
        let mut by_ip: BTreeMap<IpAddr, WorkloadId> = BTreeMap::new();
        for (name, pod) in self.pods.in_namespace(ns) {
            if let Some(id) = add(&pod.identity, &pod.ips) {
                by_ip.extend(pod.ips.iter().map(|ip| (*ip, id.clone())));
                by_pod.insert(name, id);
            }
        }
        for (name, service) in self.services.in_namespace(ns) {
            let backing = self.backing(ns, name, service, &by_pod, &by_ip);
            let mut backing = backing.into_iter();
            let (Some(id), None) = (backing.next(), backing.next()) else {
                // None, or several workloads: the address names none.
                continue;
            };
            if let Some(entry) = out.get_mut(&id) {
                for ip in &service.ips {
                    for port in &service.ports {
                        entry.service_addrs.push(SocketAddr::new(*ip, *port));
                    }
                }
            }
        }
        for found in out.values_mut() {
            found.pod_ips.sort_unstable();
            found.pod_ips.dedup();
            found.service_addrs.sort_unstable();
            found.service_addrs.dedup();
        }
        out
    }

    /// The workloads behind Service `name`: those of the pods its
    /// EndpointSlices list (by `targetRef`, else by address), or without
    /// slices those of the pods its selector matches.
    fn backing(
        &self,
        ns: &str,
        name: &str,
        service: &ServiceEntry,
        by_pod: &BTreeMap<&str, WorkloadId>,
        by_ip: &BTreeMap<IpAddr, WorkloadId>,
    ) -> BTreeSet<WorkloadId> {
        let mut backing = BTreeSet::new();
        let mut sliced = false;
        for (_, slice) in self.slices.in_namespace(ns) {
            if slice.service != name {
                continue;
            }
            sliced = true;
            for (pod, ips) in &slice.endpoints {
                match pod.as_deref().and_then(|p| by_pod.get(p)) {
                    Some(id) => {
                        backing.insert(id.clone());
                    }
                    None => backing.extend(ips.iter().filter_map(|ip| by_ip.get(ip).cloned())),
                }
            }
        }
        if !sliced && !service.selector.is_empty() {
            for (pod_name, pod) in self.pods.in_namespace(ns) {
                let selected = service
                    .selector
                    .iter()
                    .all(|(k, v)| pod.labels.get(k) == Some(v));
                if selected && let Some(id) = by_pod.get(pod_name) {
                    backing.insert(id.clone());
                }
            }
        }
        backing
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
