//! The baseline as code: a stable, sorted, reviewable YAML document
//! (`vigilctl baseline export`), read back with every value checked and
//! each error naming its line (`vigilctl baseline import`, `diff`), and the
//! difference between two baselines.
//!
//! ```yaml
//! version: 1
//! namespaces:
//!   lab:
//!     workloads:
//!     - jupyter
//!     edges:
//!     - from: workload:lab/jupyter
//!       to: external:pypi.org:443
//!       endpoints:
//!       - GET /simple/{name}/
//! ```
//!
//! Namespaces, workloads (profile names), edges (by `from`, then `to`, as
//! node-id text) and endpoints are sorted, so the same baseline always
//! gives the same bytes and a change is a small diff in review. An edge is
//! listed under the namespace of its `from` workload (of its `to` workload
//! for `internet`). A document exported for one namespace says so in
//! `namespace:`, and only that namespace is then imported or compared.
//!
//! Pure: text and [`Baseline`]s in, text, baselines and errors out; no I/O.
//! Depends on `baseline` and `model` only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_saphyr::Spanned;

use crate::baseline::{Baseline, MAX_ENDPOINTS_PER_EDGE};
use crate::model::{EdgeKey, NameError, NodeId, WorkloadId, validate_name};

/// The document version this controller writes and reads.
pub const VERSION: u64 = 1;

/// Longest endpoint (`METHOD path-template`) accepted.
const MAX_ENDPOINT_LEN: usize = 2048;

/// Why a baseline document was refused; each names its line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DocError {
    /// Not YAML, or not the shape of a baseline document.
    #[error("line {line}: {message}")]
    Yaml {
        /// 1-based line.
        line: u64,
        /// What the YAML reader said.
        message: String,
    },
    /// A version this controller does not know.
    #[error(
        "line {line}: version {found} is not known: this version of Vigil reads version {VERSION}"
    )]
    Version {
        /// 1-based line.
        line: u64,
        /// The version given.
        found: u64,
    },
    /// A namespace, workload name or node id that is not valid.
    #[error("line {line}: {problem}")]
    Name {
        /// 1-based line.
        line: u64,
        /// What is wrong with it.
        problem: NameError,
    },
    /// An endpoint that is empty, too long or holds control characters.
    #[error(
        "line {line}: endpoint {endpoint:?} must be `METHOD path`, at most {MAX_ENDPOINT_LEN} characters, without control characters"
    )]
    Endpoint {
        /// 1-based line.
        line: u64,
        /// The endpoint given.
        endpoint: String,
    },
    /// An edge with no workload at either end.
    #[error("line {line}: edge {edge} has no workload at either end")]
    NoWorkload {
        /// 1-based line.
        line: u64,
        /// The edge, `from -> to`.
        edge: String,
    },
    /// An edge or workload listed under a namespace it does not belong to.
    #[error("line {line}: {what} belongs under namespace {belongs}, not {listed}")]
    Misplaced {
        /// 1-based line.
        line: u64,
        /// The edge or workload.
        what: String,
        /// Where it belongs.
        belongs: String,
        /// Where it is listed.
        listed: String,
    },
    /// Something outside the namespace the document is for.
    #[error("line {line}: {what} is outside namespace {namespace}, which this document is for")]
    OutOfScope {
        /// 1-based line.
        line: u64,
        /// The edge or namespace.
        what: String,
        /// The document's `namespace:`.
        namespace: String,
    },
    /// The same workload, edge or endpoint twice.
    #[error("line {line}: {what} is listed twice")]
    Duplicate {
        /// 1-based line.
        line: u64,
        /// What.
        what: String,
    },
    /// More endpoints on one edge than the baseline keeps.
    #[error("line {line}: edge {edge} lists more than {MAX_ENDPOINTS_PER_EDGE} endpoints")]
    TooManyEndpoints {
        /// 1-based line.
        line: u64,
        /// The edge.
        edge: String,
    },
}

/// A baseline document as written: sorted, every field in order.
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct Doc {
    /// Always [`VERSION`].
    pub version: u64,
    /// The one namespace the document is for, when exported for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Each namespace's part, by name.
    pub namespaces: BTreeMap<String, NamespaceDoc>,
}

/// One namespace of a [`Doc`].
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct NamespaceDoc {
    /// Workload profile names, sorted.
    pub workloads: Vec<String>,
    /// Edges from (or, from the internet, to) its workloads, sorted.
    pub edges: Vec<EdgeDoc>,
}

/// One edge of a [`NamespaceDoc`].
#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct EdgeDoc {
    /// Caller, as a node id (`internet`, `workload:NS/NAME`).
    pub from: String,
    /// Callee, as a node id (`workload:NS/NAME`, `external:HOST:PORT`).
    pub to: String,
    /// Learned endpoints (`METHOD path-template`), sorted; absent when none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<String>,
}

/// A document read back: the baseline it holds and the namespace it is for.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Parsed {
    /// What the document lists.
    pub baseline: Baseline,
    /// Its `namespace:`, when it is for one namespace only.
    pub namespace: Option<String>,
}

/// The namespace an edge is listed under: its caller's, or its callee's
/// when the caller is not a workload.
pub fn owner(edge: &EdgeKey) -> Option<&str> {
    match edge {
        (NodeId::Workload(id), _) | (_, NodeId::Workload(id)) => Some(&id.namespace),
        _ => None,
    }
}

fn touches(edge: &EdgeKey, ns: &str) -> bool {
    let is = |node: &NodeId| matches!(node, NodeId::Workload(id) if id.namespace == ns);
    is(&edge.0) || is(&edge.1)
}

/// The part of `baseline` that belongs to `namespace` (all of it when
/// `None`): its workloads and every edge with one of its workloads at either
/// end, as an import of that namespace sees it.
pub fn restrict(baseline: &Baseline, namespace: Option<&str>) -> Baseline {
    let Some(ns) = namespace else {
        return baseline.clone();
    };
    let mut out = Baseline::default();
    for id in baseline.workloads().filter(|id| id.namespace == ns) {
        out.learn_workload(id);
    }
    for edge in baseline.edges().filter(|edge| touches(edge, ns)) {
        out.learn_edge(edge);
        for endpoint in baseline.endpoints_of(edge) {
            out.learn_endpoint(edge, endpoint);
        }
    }
    out
}

impl Doc {
    /// The document of `baseline`, or of its `namespace` part.
    pub fn new(baseline: &Baseline, namespace: Option<&str>) -> Self {
        let part = restrict(baseline, namespace);
        let mut namespaces: BTreeMap<String, NamespaceDoc> = BTreeMap::new();
        for id in part.workloads() {
            let ns = namespaces.entry(id.namespace.clone()).or_default();
            ns.workloads.push(id.name.clone());
        }
        // An edge without a workload never enters a baseline (every
        // observation comes from a workload's sidecar), so none is lost.
        for edge in part.edges() {
            let Some(ns) = owner(edge) else { continue };
            namespaces
                .entry(ns.to_owned())
                .or_default()
                .edges
                .push(EdgeDoc {
                    from: edge.0.to_string(),
                    to: edge.1.to_string(),
                    endpoints: part.endpoints_of(edge).cloned().collect(),
                });
        }
        for ns in namespaces.values_mut() {
            ns.workloads.sort();
            ns.edges
                .sort_by(|a, b| (&a.from, &a.to).cmp(&(&b.from, &b.to)));
        }
        Self {
            version: VERSION,
            namespace: namespace.map(str::to_owned),
            namespaces,
        }
    }

    /// The document as YAML text.
    pub fn to_yaml(&self) -> String {
        // Plain strings, maps and lists: serialising cannot fail.
        serde_saphyr::to_string(self).unwrap_or_else(|e| format!("# cannot write YAML: {e}\n"))
    }
}

/// `baseline` (or its `namespace` part) as YAML text.
pub fn to_yaml(baseline: &Baseline, namespace: Option<&str>) -> String {
    Doc::new(baseline, namespace).to_yaml()
}

/// The document as read, each value with where it came from.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DocIn {
    version: Spanned<u64>,
    #[serde(default)]
    namespace: Option<Spanned<String>>,
    #[serde(default)]
    namespaces: HashMap<Spanned<String>, NamespaceIn>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespaceIn {
    #[serde(default)]
    workloads: Vec<Spanned<String>>,
    #[serde(default)]
    edges: Vec<EdgeIn>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeIn {
    from: Spanned<String>,
    to: Spanned<String>,
    #[serde(default)]
    endpoints: Vec<Spanned<String>>,
}

fn line<T>(spanned: &Spanned<T>) -> u64 {
    spanned.referenced.line()
}

fn yaml_error(text: &str, e: &serde_saphyr::Error) -> DocError {
    if text.trim().is_empty() {
        return DocError::Yaml {
            line: 1,
            message: format!("the document is empty: it starts with `version: {VERSION}`"),
        };
    }
    let message = e.without_snippet().to_string();
    let line = match e.location().map(|l| l.line()).filter(|&l| l > 0) {
        Some(line) => line,
        // No position (the end of the input): the last line.
        None => text.lines().count().max(1) as u64,
    };
    DocError::Yaml {
        line,
        message: strip_position(&message),
    }
}

/// The reader's message without its own ` at line N column M` (the error
/// names the line once, first) or advice about its options.
fn strip_position(message: &str) -> String {
    let message = message
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(message);
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn parse_node(value: &Spanned<String>) -> Result<NodeId, DocError> {
    let node: NodeId = value.value.parse().map_err(|problem| DocError::Name {
        line: line(value),
        problem,
    })?;
    if let NodeId::External(authority) = &node
        && (authority.len() > 300
            || authority
                .chars()
                .any(|c| c.is_whitespace() || c.is_control()))
    {
        return Err(DocError::Name {
            line: line(value),
            problem: NameError::BadNodeId(value.value.clone()),
        });
    }
    Ok(node)
}

fn check_endpoint(value: &Spanned<String>) -> Result<(), DocError> {
    let e = &value.value;
    let ok =
        !e.trim().is_empty() && e.len() <= MAX_ENDPOINT_LEN && !e.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(DocError::Endpoint {
            line: line(value),
            endpoint: e.clone(),
        })
    }
}

/// Reads a baseline document, checking every value; the first error names
/// its line and what is wrong.
pub fn parse(text: &str) -> Result<Parsed, DocError> {
    let doc: DocIn = serde_saphyr::from_str(text).map_err(|e| yaml_error(text, &e))?;
    if doc.version.value != VERSION {
        return Err(DocError::Version {
            line: line(&doc.version),
            found: doc.version.value,
        });
    }
    let scope = match &doc.namespace {
        Some(ns) => {
            validate_name("namespace", &ns.value).map_err(|problem| DocError::Name {
                line: line(ns),
                problem,
            })?;
            Some(ns.value.clone())
        }
        None => None,
    };
    // In document order, so the first error is the one highest up.
    let mut sections: Vec<_> = doc.namespaces.iter().collect();
    sections.sort_by_key(|(ns, _)| line(ns));
    let mut baseline = Baseline::default();
    for (ns, section) in sections {
        read_section(&mut baseline, ns, section, scope.as_deref())?;
    }
    Ok(Parsed {
        baseline,
        namespace: scope,
    })
}

/// Adds one namespace's section to `baseline`.
fn read_section(
    baseline: &mut Baseline,
    ns: &Spanned<String>,
    section: &NamespaceIn,
    scope: Option<&str>,
) -> Result<(), DocError> {
    validate_name("namespace", &ns.value).map_err(|problem| DocError::Name {
        line: line(ns),
        problem,
    })?;
    for name in &section.workloads {
        let id = WorkloadId::new(&ns.value, &name.value).map_err(|problem| DocError::Name {
            line: line(name),
            problem,
        })?;
        if let Some(scope) = scope.filter(|s| *s != ns.value) {
            return Err(DocError::OutOfScope {
                line: line(name),
                what: format!("workload {id}"),
                namespace: scope.to_owned(),
            });
        }
        if !baseline.learn_workload(&id) {
            return Err(DocError::Duplicate {
                line: line(name),
                what: format!("workload {id}"),
            });
        }
    }
    for edge in &section.edges {
        read_edge(baseline, &ns.value, edge, scope)?;
    }
    Ok(())
}

/// Adds one edge (and its endpoints) to `baseline`.
fn read_edge(
    baseline: &mut Baseline,
    ns: &str,
    edge: &EdgeIn,
    scope: Option<&str>,
) -> Result<(), DocError> {
    let key: EdgeKey = (parse_node(&edge.from)?, parse_node(&edge.to)?);
    let at = line(&edge.from);
    let shown = format!("{} -> {}", key.0, key.1);
    let Some(belongs) = owner(&key) else {
        return Err(DocError::NoWorkload {
            line: at,
            edge: shown,
        });
    };
    if belongs != ns {
        return Err(DocError::Misplaced {
            line: at,
            what: format!("edge {shown}"),
            belongs: belongs.to_owned(),
            listed: ns.to_owned(),
        });
    }
    if let Some(scope) = scope.filter(|s| !touches(&key, s)) {
        return Err(DocError::OutOfScope {
            line: at,
            what: format!("edge {shown}"),
            namespace: scope.to_owned(),
        });
    }
    if !baseline.learn_edge(&key) {
        return Err(DocError::Duplicate {
            line: at,
            what: format!("edge {shown}"),
        });
    }
    if edge.endpoints.len() > MAX_ENDPOINTS_PER_EDGE {
        return Err(DocError::TooManyEndpoints {
            line: at,
            edge: shown,
        });
    }
    for endpoint in &edge.endpoints {
        check_endpoint(endpoint)?;
        if !baseline.learn_endpoint(&key, &endpoint.value) {
            return Err(DocError::Duplicate {
                line: line(endpoint),
                what: format!("endpoint {:?} of edge {shown}", endpoint.value),
            });
        }
    }
    Ok(())
}

/// What one side of a [`Change`] is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// A workload profile.
    Workload(WorkloadId),
    /// An edge.
    Edge(EdgeKey),
    /// An endpoint of an edge.
    Endpoint(EdgeKey, String),
}

/// One difference between two baselines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    /// In the second baseline only (`+`), or in the first only (`-`).
    pub added: bool,
    /// What.
    pub item: Item,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.added { '+' } else { '-' };
        match &self.item {
            Item::Workload(id) => write!(f, "{sign} workload {id}"),
            Item::Edge((from, to)) => write!(f, "{sign} edge {from} -> {to}"),
            Item::Endpoint((from, to), endpoint) => {
                write!(f, "{sign} endpoint {from} -> {to} {endpoint}")
            }
        }
    }
}

/// What differs from `old` to `new`: workloads first, then each edge
/// followed by its endpoints, sorted as the document sorts them.
pub fn diff(old: &Baseline, new: &Baseline) -> Vec<Change> {
    let mut changes = Vec::new();
    let olds: BTreeSet<_> = old.workloads().collect();
    let news: BTreeSet<_> = new.workloads().collect();
    for id in olds.symmetric_difference(&news) {
        changes.push(Change {
            added: news.contains(id),
            item: Item::Workload((*id).clone()),
        });
    }
    let text = |edge: &EdgeKey| (edge.0.to_string(), edge.1.to_string());
    let edges: BTreeMap<_, _> = old
        .edges()
        .chain(new.edges())
        .map(|e| (text(e), e))
        .collect();
    for edge in edges.into_values() {
        let (was, is) = (old.has_edge(edge), new.has_edge(edge));
        if was != is {
            changes.push(Change {
                added: is,
                item: Item::Edge(edge.clone()),
            });
        }
        let before: BTreeSet<_> = old.endpoints_of(edge).collect();
        let after: BTreeSet<_> = new.endpoints_of(edge).collect();
        for endpoint in before.symmetric_difference(&after) {
            changes.push(Change {
                added: after.contains(endpoint),
                item: Item::Endpoint(edge.clone(), (*endpoint).clone()),
            });
        }
    }
    changes
}

#[cfg(test)]
#[path = "baseline_doc_tests.rs"]
mod tests;
