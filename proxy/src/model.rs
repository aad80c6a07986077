//! Small domain types shared across the data path: the identity of this
//! sidecar, request directions and protocols, and one request's record.
//!
//! Base tier: depends only on the proto crate for conversions.

use std::net::SocketAddr;

use serde::Serialize;
use vigil_proto::v1;

/// Header through which a proxy tells the peer's inbound side who calls.
pub const SOURCE_HEADER: &str = "vigil-source";

/// The identity of this sidecar (and so of the workload beside it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// Workload name.
    pub workload: String,
    /// Namespace of the workload.
    pub namespace: String,
    /// Random per-process instance id (hex).
    pub instance: String,
    /// The account that owns the workload (`--tenant`), empty if unknown.
    pub tenant: String,
    /// The profile the workload belongs to (`--profile`), empty for its
    /// own name.
    pub profile: String,
}

impl Identity {
    /// `namespace/workload`, the form used in headers and policies.
    pub fn source(&self) -> String {
        format!("{}/{}", self.namespace, self.workload)
    }

    /// The protobuf form.
    pub fn to_proto(&self) -> v1::Identity {
        v1::Identity {
            workload: self.workload.clone(),
            namespace: self.namespace.clone(),
            instance: self.instance.clone(),
            tenant: self.tenant.clone(),
            profile: self.profile.clone(),
        }
    }
}

/// True when `name` is a valid namespace or workload name: 1 to 63 bytes of
/// `[a-z0-9-._]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        })
}

/// Parses a `vigil-source` header value: `ns/name` with valid segments.
pub fn parse_source(value: &str) -> Option<&str> {
    let (ns, name) = value.split_once('/')?;
    (is_valid_name(ns) && is_valid_name(name)).then_some(value)
}

/// Which way a request crossed the sidecar.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a peer into the local workload.
    Inbound,
    /// From the local workload out.
    Outbound,
}

impl Direction {
    /// The protobuf enum value.
    pub fn to_proto(self) -> v1::Direction {
        match self {
            Direction::Inbound => v1::Direction::Inbound,
            Direction::Outbound => v1::Direction::Outbound,
        }
    }
}

/// The protocol seen on a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// HTTP/1.x requests.
    Http1,
    /// HTTP/2 requests (other than gRPC).
    Http2,
    /// gRPC calls (HTTP/2 with `content-type: application/grpc`).
    Grpc,
    /// TLS, forwarded without decryption; named by its SNI.
    Tls,
    /// The Stratum mining protocol, on any port.
    Stratum,
    /// An opaque TCP stream or tunnel (CONNECT).
    Tcp,
    /// A DNS query of the pod, answered through the sidecar's DNS listener.
    Dns,
    /// A UDP flow other than DNS.
    Udp,
    /// A UDP flow recognised as QUIC.
    Quic,
}

impl Protocol {
    /// The protobuf enum value.
    pub fn to_proto(self) -> v1::Protocol {
        match self {
            Protocol::Http1 => v1::Protocol::Http1,
            Protocol::Http2 => v1::Protocol::Http2,
            Protocol::Grpc => v1::Protocol::Grpc,
            Protocol::Tls => v1::Protocol::Tls,
            Protocol::Stratum => v1::Protocol::Stratum,
            Protocol::Tcp => v1::Protocol::Tcp,
            Protocol::Dns => v1::Protocol::Dns,
            Protocol::Udp => v1::Protocol::Udp,
            Protocol::Quic => v1::Protocol::Quic,
        }
    }

    /// The protocol of an HTTP request: gRPC, HTTP/2 or HTTP/1.
    pub fn of_request<B>(req: &http::Request<B>) -> Self {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/grpc"));
        match (grpc, req.version()) {
            (true, _) => Protocol::Grpc,
            (false, http::Version::HTTP_2) => Protocol::Http2,
            _ => Protocol::Http1,
        }
    }
}

/// What the sidecar observed about one request or tunnel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Direction of the request.
    pub direction: Direction,
    /// Protocol of the request.
    pub protocol: Protocol,
    /// Inbound: the caller `ns/name`, empty for the internet.
    pub source: String,
    /// Outbound: the destination as named, `host:port` (DNS: the queried
    /// name, no port).
    pub authority: String,
    /// Outbound: the resolved address, when known.
    pub resolved: Option<SocketAddr>,
    /// HTTP method (`CONNECT` for tunnels; DNS: the query type, `A`).
    pub method: String,
    /// Path template.
    pub path: String,
    /// HTTP status, 0 for transport errors and tunnels (DNS: the response
    /// code, RCODE: 0 `NOERROR`, 3 `NXDOMAIN`, 5 `REFUSED`...).
    pub status: u16,
    /// Time to response headers (or tunnel duration), in microseconds.
    pub latency_us: u64,
    /// Bytes from the client.
    pub bytes_in: u64,
    /// Bytes to the client.
    pub bytes_out: u64,
    /// Whether the local policy denied it.
    pub denied: bool,
    /// Inbound: the `ns/name` the caller claimed in `vigil-source` from an
    /// IP that workload does not call from (`source` is then the
    /// internet); empty otherwise.
    pub claimed_source: String,
    /// Outbound, redirected: the name the client gave (`host:port`) when
    /// the real destination is not an address it resolved to; `authority`
    /// is then the real destination. Empty otherwise.
    pub claimed_authority: String,
    /// Inbound: the IP the caller called from, when `source` is a claim
    /// this sidecar could not check (its policy has no IPs for that name),
    /// for the controller to check. `None` otherwise.
    pub source_ip: Option<std::net::IpAddr>,
    /// How many requests or streams this record counts: 1, or 0 for a long
    /// stream's later reports, which carry only the bytes since the last.
    pub count: u64,
}

impl Record {
    /// A record of `direction` and `protocol` with nothing observed yet:
    /// callers fill in what they know with struct update syntax.
    pub fn new(direction: Direction, protocol: Protocol) -> Self {
        Record {
            direction,
            protocol,
            source: String::new(),
            authority: String::new(),
            resolved: None,
            method: String::new(),
            path: String::new(),
            status: 0,
            latency_us: 0,
            bytes_in: 0,
            bytes_out: 0,
            denied: false,
            claimed_source: String::new(),
            claimed_authority: String::new(),
            source_ip: None,
            count: 1,
        }
    }
}

/// Resolves once `signal` is true (or its sender is gone).
pub async fn stopped(signal: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = signal.wait_for(|stop| *stop).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources() {
        let cases = [
            ("default/web", true),
            ("ns-1/app.v2_x", true),
            ("Default/web", false),
            ("default/", false),
            ("/web", false),
            ("a/b/c", false),
            ("web", false),
            ("ns/we b", false),
        ];
        for (value, ok) in cases {
            assert_eq!(parse_source(value).is_some(), ok, "{value}");
        }
        assert!(!is_valid_name(&"a".repeat(64)));
    }
}
