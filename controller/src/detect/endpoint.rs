//! `new_endpoint`: a known call carrying an API endpoint (HTTP method and
//! path template, or gRPC method) never seen while learning. Endpoints are
//! learned while learning, on edges that are (or are being) learned.

use super::{Check, Detector, Finding, Input, Learn};
use crate::model::{AlertKind, Mode, Observation, Protocol, with_endpoint};

/// The API-endpoint detector.
pub struct Endpoint;

/// Whether `obs` carries an API endpoint (`METHOD path-template`): HTTP
/// and gRPC requests do; tunnels, streams and DNS do not.
fn carries_endpoint(obs: &Observation) -> bool {
    let http = matches!(
        obs.protocol,
        Protocol::Http1 | Protocol::Http2 | Protocol::Grpc
    );
    http && !obs.method.is_empty() && obs.method != "CONNECT"
}

impl Detector for Endpoint {
    fn check(&self, input: &Input<'_>) -> Check {
        let obs = input.obs;
        if !carries_endpoint(obs) {
            return Check::normal();
        }
        with_endpoint(&obs.method, &obs.path, |endpoint| judge(input, endpoint))
    }
}

/// The endpoint detector's verdict on `endpoint` of `input`'s edge.
fn judge(input: &Input<'_>, endpoint: &str) -> Check {
    let edge = input.edge;
    if input.known.is_some_and(|k| k.has_endpoint(endpoint)) {
        return Check::normal();
    }
    if input.mode == Mode::Learning {
        return Check {
            learn: vec![Learn::Endpoint(edge.clone(), endpoint.to_owned())],
            ..Check::normal()
        };
    }
    // A call outside the baseline is the edge detector's; a known call
    // whose endpoints were never learned (a baseline from before
    // endpoints were learned) is judged by its edge alone.
    if !input.known.is_some_and(|k| k.edge && k.has_endpoints()) {
        return Check::normal();
    }
    Check {
        finding: Some(Finding::new(
            AlertKind::NewEndpoint,
            input.mode.action(),
            input.about,
        )),
        ..Check::normal()
    }
}
