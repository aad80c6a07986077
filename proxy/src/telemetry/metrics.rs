//! Prometheus metrics of observed traffic, per direction, protocol and
//! destination. Updated by the aggregator task, off the request path.
//!
//! Cardinality is bounded: the first [`MAX_DESTINATIONS`] destinations get
//! their own label value, later ones share `other`.

use std::collections::HashMap;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::model::{Direction, Protocol, Record};

/// Distinct destination label values kept; the rest are `other`.
pub const MAX_DESTINATIONS: usize = 100;
/// The label value shared by destinations past the bound.
pub const OTHER: &str = "other";

/// `protocol` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum ProtocolLabel {
    /// HTTP/1.x.
    http1,
    /// HTTP/2.
    http2,
    /// gRPC.
    grpc,
    /// TLS (not decrypted).
    tls,
    /// Stratum mining protocol.
    stratum,
    /// Opaque TCP.
    tcp,
    /// DNS queries.
    dns,
    /// UDP flows other than DNS.
    udp,
    /// QUIC flows.
    quic,
}

impl From<Protocol> for ProtocolLabel {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Http1 => Self::http1,
            Protocol::Http2 => Self::http2,
            Protocol::Grpc => Self::grpc,
            Protocol::Tls => Self::tls,
            Protocol::Stratum => Self::stratum,
            Protocol::Tcp => Self::tcp,
            Protocol::Dns => Self::dns,
            Protocol::Udp => Self::udp,
            Protocol::Quic => Self::quic,
        }
    }
}

/// Labels of the observed-traffic metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObservedLabels {
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Protocol.
    pub protocol: ProtocolLabel,
    /// Outbound: `host:port` (bounded); inbound: the caller `ns/name`,
    /// `internet` (bounded).
    pub destination: String,
}

/// The metrics, and the series of each destination given its own label
/// (and of `other`), looked up once and then counted without the family's
/// lock and label hashing.
#[derive(Debug)]
pub struct ObservedMetrics {
    requests: Family<ObservedLabels, Counter>,
    denied: Family<ObservedLabels, Counter>,
    latency: Family<ObservedLabels, Histogram, fn() -> Histogram>,
    named: HashMap<String, Vec<Series>>,
    other: Vec<Series>,
}

/// The metrics of one (direction, protocol, destination).
#[derive(Debug)]
struct Series {
    direction: Direction,
    protocol: Protocol,
    requests: Counter,
    latency: Histogram,
    /// Made at the first denial, so a destination never denied has no
    /// denied series.
    denied: Option<Counter>,
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl ObservedMetrics {
    /// Creates and registers the metrics.
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::default();
        let denied = Family::default();
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register(
            "vigil_proxy_observed_requests",
            "Requests and streams observed, by direction, protocol and destination",
            requests.clone(),
        );
        registry.register(
            "vigil_proxy_observed_denied",
            "Requests and streams denied by policy, by direction, protocol and destination",
            denied.clone(),
        );
        registry.register(
            "vigil_proxy_observed_latency_seconds",
            "Time to response headers (requests) or stream duration, by direction, protocol and destination",
            latency.clone(),
        );
        Self {
            requests,
            denied,
            latency,
            named: HashMap::new(),
            other: Vec::new(),
        }
    }

    /// Counts one record.
    pub fn observe(&mut self, record: &Record) {
        if record.count == 0 {
            // A long stream's later report: bytes only, no new request.
            return;
        }
        let (direction, protocol) = (record.direction, record.protocol);
        let name = match direction {
            Direction::Outbound => record.authority.as_str(),
            Direction::Inbound if record.source.is_empty() => "internet",
            Direction::Inbound => record.source.as_str(),
        };
        let (label, list) = if self.named.contains_key(name) {
            (name, self.named.get_mut(name).expect("just checked"))
        } else if self.named.len() < MAX_DESTINATIONS {
            (name, self.named.entry(name.to_owned()).or_default())
        } else {
            (OTHER, &mut self.other)
        };
        let labels = || ObservedLabels {
            direction: match direction {
                Direction::Outbound => "outbound",
                Direction::Inbound => "inbound",
            }
            .to_owned(),
            protocol: protocol.into(),
            destination: label.to_owned(),
        };
        let at = match list
            .iter()
            .position(|s| s.direction == direction && s.protocol == protocol)
        {
            Some(at) => at,
            None => {
                let labels = labels();
                list.push(Series {
                    direction,
                    protocol,
                    requests: self.requests.get_or_create(&labels).clone(),
                    latency: self.latency.get_or_create(&labels).clone(),
                    denied: None,
                });
                list.len() - 1
            }
        };
        let series = &mut list[at];
        series.requests.inc();
        if record.denied {
            series
                .denied
                .get_or_insert_with(|| self.denied.get_or_create(&labels()).clone())
                .inc();
        }
        series.latency.observe(record.latency_us as f64 / 1e6);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(authority: &str) -> Record {
        Record {
            authority: authority.into(),
            latency_us: 1500,
            denied: true,
            ..Record::new(Direction::Outbound, Protocol::Tls)
        }
    }

    #[test]
    fn each_direction_and_protocol_of_a_destination_is_its_own_series() {
        let mut registry = Registry::default();
        let mut metrics = ObservedMetrics::register(&mut registry);
        let allowed = |protocol| Record {
            authority: "pypi.org:443".into(),
            latency_us: 1000,
            ..Record::new(Direction::Outbound, protocol)
        };
        for record in [
            allowed(Protocol::Tls),
            allowed(Protocol::Tls),
            allowed(Protocol::Http1),
            record("pypi.org:443"),
        ] {
            metrics.observe(&record);
        }
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let at = |metric: &str, protocol: &str| {
            let series = format!(
                r#"{metric}{{direction="outbound",protocol="{protocol}",destination="pypi.org:443"}} "#
            );
            text.lines()
                .find_map(|l| l.strip_prefix(series.as_str()))
                .map(str::to_owned)
        };
        let requests = "vigil_proxy_observed_requests_total";
        let denied = "vigil_proxy_observed_denied_total";
        assert_eq!(at(requests, "tls").as_deref(), Some("3"), "{text}");
        assert_eq!(at(requests, "http1").as_deref(), Some("1"), "{text}");
        assert_eq!(at(denied, "tls").as_deref(), Some("1"), "{text}");
        assert_eq!(at(denied, "http1"), None, "never denied: no denied series");
    }

    #[test]
    fn destinations_are_bounded_and_encoded() {
        let mut registry = Registry::default();
        let mut metrics = ObservedMetrics::register(&mut registry);
        for i in 0..(MAX_DESTINATIONS + 50) {
            metrics.observe(&record(&format!("h{i}.example:443")));
        }
        metrics.observe(&record("h0.example:443"));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let series = text
            .lines()
            .filter(|l| l.starts_with("vigil_proxy_observed_requests_total{"))
            .count();
        assert_eq!(series, MAX_DESTINATIONS + 1, "100 named + other");
        assert!(text.contains(r#"vigil_proxy_observed_requests_total{direction="outbound",protocol="tls",destination="h0.example:443"} 2"#), "{text}");
        assert!(text.contains(r#"destination="other"} 50"#), "{text}");
        assert!(text.contains("vigil_proxy_observed_denied_total"));
    }
}
