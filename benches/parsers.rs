//! Micro-benchmarks of the sidecar's per-connection and per-request pure
//! functions: protocol detection, ClientHello parsing, Stratum recognition,
//! path templating and policy evaluation.
//!
//! `cargo bench --bench parsers`

use std::collections::HashSet;
use std::hint::black_box;
use std::net::SocketAddr;

use criterion::{Criterion, criterion_group, criterion_main};
use vigil_proxy::detect::{detect, stratum::parse_stratum, tls::parse_client_hello};
use vigil_proxy::policy::{Policy, evaluate_outbound};
use vigil_proxy::template::template;

#[allow(dead_code, missing_docs)]
#[path = "../proxy/src/detect/testdata.rs"]
mod testdata;

fn parsers(c: &mut Criterion) {
    let hello = testdata::curl_hello();
    let request = b"GET /api/users/8412/files/a1b2c3d4e5 HTTP/1.1\r\nHost: api\r\n\r\n";
    let login = testdata::XMRIG_LOGIN.as_bytes();
    c.bench_function("detect/http1", |b| b.iter(|| detect(black_box(request))));
    c.bench_function("detect/tls_client_hello", |b| {
        b.iter(|| detect(black_box(&hello)))
    });
    c.bench_function("tls/parse_client_hello", |b| {
        b.iter(|| parse_client_hello(black_box(&hello)))
    });
    c.bench_function("stratum/xmrig_login", |b| {
        b.iter(|| parse_stratum(black_box(login)))
    });
    c.bench_function("template/ids", |b| {
        b.iter(|| {
            template(black_box(
                "/api/users/8412/files/a1b2c3d4e5f6a7b8/versions/3",
            ))
        })
    });
}

fn policy(c: &mut Criterion) {
    let mut policy = Policy::allow_all();
    policy.enforce = true;
    policy.allowed_authorities = (0..200).map(|i| format!("svc-{i}.example:443")).collect();
    policy.allowed_addrs = (0..200u16)
        .map(|i| SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250) as u8], 8080)))
        .collect::<HashSet<_>>();
    let addr: SocketAddr = "10.9.9.9:3333".parse().unwrap();
    c.bench_function("policy/evaluate_outbound_deny", |b| {
        b.iter(|| {
            evaluate_outbound(
                black_box(&policy),
                black_box("pool.minexmr.com:3333"),
                Some(addr),
            )
        })
    });
}

criterion_group!(benches, parsers, policy);
criterion_main!(benches);
