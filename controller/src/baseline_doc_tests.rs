use super::*;

fn wl(ns: &str, name: &str) -> NodeId {
    NodeId::Workload(WorkloadId::new(ns, name).unwrap())
}

fn ext(authority: &str) -> NodeId {
    NodeId::External(authority.into())
}

/// Two namespaces, an east-west edge across them, the internet, endpoints.
fn sample() -> Baseline {
    let mut b = Baseline::default();
    for (ns, name) in [("lab", "jupyter"), ("lab", "api"), ("prod", "db")] {
        b.learn_workload(&WorkloadId::new(ns, name).unwrap());
    }
    let pypi = (wl("lab", "jupyter"), ext("pypi.org:443"));
    b.learn_edge(&pypi);
    b.learn_edge(&(wl("lab", "jupyter"), wl("lab", "api")));
    b.learn_endpoint(
        &(wl("lab", "jupyter"), wl("lab", "api")),
        "GET /v1/users/{id}",
    );
    b.learn_endpoint(
        &(wl("lab", "jupyter"), wl("lab", "api")),
        "DELETE /v1/users/{id}",
    );
    b.learn_edge(&(NodeId::Internet, wl("lab", "jupyter")));
    b.learn_edge(&(wl("lab", "api"), wl("prod", "db")));
    b.learn_edge(&(wl("prod", "db"), ext("backup.example:5432")));
    b
}

const SAMPLE_YAML: &str = "\
version: 1
namespaces:
  lab:
    workloads:
      - api
      - jupyter
    edges:
      - from: internet
        to: workload:lab/jupyter
      - from: workload:lab/api
        to: workload:prod/db
      - from: workload:lab/jupyter
        to: external:pypi.org:443
      - from: workload:lab/jupyter
        to: workload:lab/api
        endpoints:
          - DELETE /v1/users/{id}
          - GET /v1/users/{id}
  prod:
    workloads:
      - db
    edges:
      - from: workload:prod/db
        to: external:backup.example:5432
";

/// The same baseline in another insertion order.
fn sample_shuffled() -> Baseline {
    let mut b = Baseline::default();
    b.learn_edge(&(wl("prod", "db"), ext("backup.example:5432")));
    b.learn_edge(&(wl("lab", "api"), wl("prod", "db")));
    b.learn_endpoint(
        &(wl("lab", "jupyter"), wl("lab", "api")),
        "GET /v1/users/{id}",
    );
    b.learn_edge(&(NodeId::Internet, wl("lab", "jupyter")));
    b.learn_endpoint(
        &(wl("lab", "jupyter"), wl("lab", "api")),
        "DELETE /v1/users/{id}",
    );
    b.learn_edge(&(wl("lab", "jupyter"), wl("lab", "api")));
    b.learn_edge(&(wl("lab", "jupyter"), ext("pypi.org:443")));
    for (ns, name) in [("prod", "db"), ("lab", "jupyter"), ("lab", "api")] {
        b.learn_workload(&WorkloadId::new(ns, name).unwrap());
    }
    b
}

#[test]
fn a_baseline_round_trips_through_yaml() {
    let empty = Baseline::default();
    let mut dns_only = Baseline::default();
    dns_only.learn_edge(&(wl("lab", "nb"), ext("pypi.org")));
    let mut ipv6 = Baseline::default();
    ipv6.learn_edge(&(wl("lab", "nb"), ext("[2001:db8::1]:443")));
    ipv6.learn_endpoint(
        &(wl("lab", "nb"), ext("[2001:db8::1]:443")),
        "POST /pkg.Svc/Call",
    );
    let mut quoted = Baseline::default();
    let odd = (wl("lab", "nb"), ext("x.example:80"));
    quoted.learn_edge(&odd);
    for endpoint in [
        "GET /a: b",
        "GET /#frag",
        "GET /'q'",
        "GET /\"dq\"",
        "GET /- x",
        "GET /é",
    ] {
        quoted.learn_endpoint(&odd, endpoint);
    }
    for (name, baseline) in [
        ("empty", empty),
        ("sample", sample()),
        ("dns names without a port", dns_only),
        ("IPv6 and gRPC", ipv6),
        ("endpoints YAML would misread unquoted", quoted),
    ] {
        let yaml = to_yaml(&baseline, None);
        let back = parse(&yaml).unwrap_or_else(|e| panic!("{name}: {e}\n{yaml}"));
        assert_eq!(back.baseline, baseline, "{name}:\n{yaml}");
        assert_eq!(back.namespace, None, "{name}");
        assert_eq!(to_yaml(&back.baseline, None), yaml, "{name}: stable bytes");
    }
}

#[test]
fn the_document_is_sorted_whatever_the_order_things_were_learned_in() {
    assert_eq!(to_yaml(&sample(), None), to_yaml(&sample_shuffled(), None));
    let yaml = to_yaml(&sample(), None);
    // A hand-written document (other indentation, other order) means the
    // same and exports to the canonical bytes.
    let read = parse(SAMPLE_YAML).unwrap();
    assert_eq!(read.baseline, sample());
    assert_eq!(to_yaml(&read.baseline, None), yaml);
    let pos = |needle: &str| {
        yaml.find(needle)
            .unwrap_or_else(|| panic!("{needle}: {yaml}"))
    };
    assert!(pos("  lab:") < pos("  prod:"));
    assert!(pos("- api") < pos("- jupyter"));
    assert!(pos("from: internet") < pos("from: workload:lab/api"));
    assert!(pos("to: external:pypi.org:443") < pos("to: workload:lab/api"));
    assert!(pos("- DELETE /v1/users/{id}") < pos("- GET /v1/users/{id}"));
    assert!(yaml.starts_with("version: 1\n"), "{yaml}");
}

#[test]
fn an_export_of_one_namespace_says_so_and_holds_every_edge_that_touches_it() {
    let yaml = to_yaml(&sample(), Some("prod"));
    assert!(yaml.contains("namespace: prod\n"), "{yaml}");
    let read = parse(&yaml).unwrap();
    assert_eq!(read.namespace.as_deref(), Some("prod"));
    let mut want = Baseline::default();
    want.learn_workload(&WorkloadId::new("prod", "db").unwrap());
    want.learn_edge(&(wl("lab", "api"), wl("prod", "db")));
    want.learn_edge(&(wl("prod", "db"), ext("backup.example:5432")));
    assert_eq!(read.baseline, want, "{yaml}");
    assert_eq!(restrict(&sample(), Some("prod")), want);
    assert_eq!(restrict(&sample(), None), sample());
}

#[test]
fn a_bad_document_is_refused_naming_its_line() {
    let ok_edge = "      - from: workload:lab/nb\n        to: external:pypi.org:443\n";
    let cases: Vec<(&str, String, u64, &str)> = vec![
        ("empty", String::new(), 1, "empty"),
        ("not YAML", "version: 1\nnamespaces: [\n".into(), 2, ""),
        ("tabs are not YAML", "version: 1\nnamespaces:\n\tlab: {}\n".into(), 3, ""),
        ("a list, not a document", "- a\n- b\n".into(), 1, ""),
        ("no version", "namespaces: {}\n".into(), 1, "missing field `version`"),
        ("unknown version", "namespaces: {}\nversion: 2\n".into(), 2, "version 2 is not known"),
        ("unknown field", "version: 1\nnamspaces: {}\n".into(), 2, "unknown field `namspaces`"),
        (
            "duplicate namespace",
            "version: 1\nnamespaces:\n  lab: {}\n  lab: {}\n".into(),
            4,
            "duplicate mapping key: lab",
        ),
        (
            "duplicate field",
            format!("version: 1\nnamespaces:\n  lab:\n    edges:\n{ok_edge}        to: internet\n"),
            7,
            "duplicate",
        ),
        (
            "bad node id",
            "version: 1\nnamespaces:\n  lab:\n    edges:\n      - from: workload:lab/nb\n        to: pool.example:3333\n".into(),
            6,
            "\"pool.example:3333\" is not a node id",
        ),
        (
            "bad workload in a node id",
            "version: 1\nnamespaces:\n  lab:\n    edges:\n      - from: workload:lab/NB\n        to: internet\n".into(),
            5,
            "may hold only",
        ),
        (
            "whitespace in an external name",
            "version: 1\nnamespaces:\n  lab:\n    edges:\n      - from: workload:lab/nb\n        to: \"external:a b:1\"\n".into(),
            6,
            "is not a node id",
        ),
        (
            "bad namespace",
            "version: 1\nnamespaces:\n  Lab:\n    workloads: [nb]\n".into(),
            3,
            "namespace \"Lab\" may hold only",
        ),
        (
            "bad workload name",
            "version: 1\nnamespaces:\n  lab:\n    workloads:\n      - nb\n      - \"a/b\"\n".into(),
            6,
            "workload name \"a/b\"",
        ),
        (
            "workload twice",
            "version: 1\nnamespaces:\n  lab:\n    workloads:\n      - nb\n      - nb\n".into(),
            6,
            "workload lab/nb is listed twice",
        ),
        (
            "edge twice",
            format!("version: 1\nnamespaces:\n  lab:\n    edges:\n{ok_edge}{ok_edge}"),
            7,
            "is listed twice",
        ),
        (
            "edge under another namespace",
            format!("version: 1\nnamespaces:\n  prod:\n    edges:\n{ok_edge}"),
            5,
            "belongs under namespace lab, not prod",
        ),
        (
            "edge without a workload",
            "version: 1\nnamespaces:\n  lab:\n    edges:\n      - from: internet\n        to: external:x:1\n".into(),
            5,
            "no workload at either end",
        ),
        (
            "empty endpoint",
            format!("version: 1\nnamespaces:\n  lab:\n    edges:\n{ok_edge}        endpoints:\n          - GET /\n          - \"\"\n"),
            9,
            "endpoint \"\"",
        ),
        (
            "control character in an endpoint",
            format!("version: 1\nnamespaces:\n  lab:\n    edges:\n{ok_edge}        endpoints: [\"GET /\\n\"]\n"),
            7,
            "endpoint",
        ),
        (
            "outside the document's namespace",
            format!("version: 1\nnamespace: prod\nnamespaces:\n  lab:\n    edges:\n{ok_edge}"),
            6,
            "outside namespace prod",
        ),
        (
            "bad document namespace",
            "version: 1\nnamespace: \"*\"\n".into(),
            2,
            "namespace \"*\"",
        ),
    ];
    for (name, text, line, needle) in cases {
        let err = parse(&text).expect_err(name);
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("line {line}: ")) && shown.contains(needle),
            "{name}: {shown}\n{text}"
        );
        assert!(!shown.contains("DuplicateKeyPolicy"), "{name}: {shown}");
    }
}

#[test]
fn too_many_endpoints_on_one_edge_are_refused() {
    let mut text = "version: 1\nnamespaces:\n  lab:\n    edges:\n      - from: workload:lab/nb\n        to: external:x:1\n        endpoints:\n".to_owned();
    for i in 0..=MAX_ENDPOINTS_PER_EDGE {
        text.push_str(&format!("          - GET /{i}\n"));
    }
    let err = parse(&text).unwrap_err();
    assert!(
        matches!(err, DocError::TooManyEndpoints { line: 5, .. }),
        "{err}"
    );
}

#[test]
fn a_diff_lists_what_was_added_and_removed() {
    let mut old = sample();
    old.learn_workload(&WorkloadId::new("lab", "legacy").unwrap());
    let mut new = sample();
    new.clear(Some("prod"));
    new.learn_workload(&WorkloadId::new("prod", "db").unwrap());
    new.learn_workload(&WorkloadId::new("lab", "viz").unwrap());
    new.learn_edge(&(wl("lab", "jupyter"), ext("pool.example:3333")));
    new.learn_endpoint(
        &(wl("lab", "jupyter"), wl("lab", "api")),
        "PUT /v1/users/{id}",
    );
    new.learn_endpoint(
        &(wl("lab", "jupyter"), ext("pool.example:3333")),
        "GET /job",
    );
    let shown: Vec<String> = diff(&old, &new).iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "- workload lab/legacy",
            "+ workload lab/viz",
            "- edge workload:lab/api -> workload:prod/db",
            "+ edge workload:lab/jupyter -> external:pool.example:3333",
            "+ endpoint workload:lab/jupyter -> external:pool.example:3333 GET /job",
            "+ endpoint workload:lab/jupyter -> workload:lab/api PUT /v1/users/{id}",
            "- edge workload:prod/db -> external:backup.example:5432",
        ]
    );
    assert!(diff(&sample(), &sample_shuffled()).is_empty());
    let reversed: Vec<String> = diff(&new, &old).iter().map(ToString::to_string).collect();
    assert_eq!(reversed.len(), shown.len());
    assert!(reversed.contains(&"+ workload lab/legacy".to_owned()));
}
