//! The gRPC edge facing the sidecars (`vigil.v1.Controller`).
//!
//! Validates and converts protobuf messages into domain types, hands them to
//! the engine, and streams policy back. No decisions are made here.

use std::net::SocketAddr;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, WatchStream};
use tonic::service::{Interceptor, interceptor::InterceptedService};
use tonic::{Request, Response, Status, Streaming};
use vigil_proto::v1;

use crate::engine::Registration;
use crate::engine::{EngineError, Handle};
use crate::model::{Batch, Direction, NameError, Observation, Protocol, WorkloadId};
use crate::policy::PolicySpec;
use crate::token::Scope;

/// Most observations accepted in one batch.
const MAX_OBSERVATIONS: usize = 50_000;
/// Longest authority accepted (RFC 1035 name + port).
const MAX_AUTHORITY: usize = 261;
/// Longest path template accepted.
const MAX_PATH: usize = 2048;
/// Longest method accepted.
const MAX_METHOD: usize = 32;
/// Most inbound addresses a sidecar may advertise.
const MAX_ADDRS: usize = 64;

/// An observation that failed validation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ObservationError {
    /// Direction unset or unknown.
    #[error("direction {0} is not inbound or outbound")]
    Direction(i32),
    /// The source was not `ns/name`.
    #[error("source: {0}")]
    Source(NameError),
    /// A claimed authority on an inbound observation, or not `host:port`.
    #[error("claimed authority {0:?} is not an outbound host:port")]
    ClaimedAuthority(String),
    /// The claimed source was not `ns/name`, or came with a verified source
    /// or on an outbound observation.
    #[error("claimed source {0:?} is not an unproven inbound ns/name")]
    ClaimedSource(String),
    /// A source IP that is not an IP, or not beside an inbound claimed
    /// `source`.
    #[error("source IP {0:?} is not the IP of an inbound caller's unchecked claim")]
    SourceIp(String),
    /// The authority was missing, too long or held bad characters.
    #[error("authority {0:?} is not a host:port")]
    Authority(String),
    /// The resolved address did not parse.
    #[error("resolved address {0:?} is not ip:port")]
    Addr(String),
    /// The method was too long or not a token.
    #[error("method {0:?} is not an HTTP method")]
    Method(String),
    /// The path was too long.
    #[error("path is longer than {MAX_PATH} bytes")]
    Path,
    /// The status was not an HTTP status.
    #[error("status {0} is out of range")]
    Status(u32),
    /// More denied than seen.
    #[error("denied {denied} exceeds count {count}")]
    Denied {
        /// Denied requests.
        denied: u64,
        /// All requests.
        count: u64,
    },
}

fn protocol_of(p: i32) -> Protocol {
    match v1::Protocol::try_from(p) {
        Ok(v1::Protocol::Http1) => Protocol::Http1,
        Ok(v1::Protocol::Http2) => Protocol::Http2,
        Ok(v1::Protocol::Tcp) => Protocol::Tcp,
        Ok(v1::Protocol::Tls) => Protocol::Tls,
        Ok(v1::Protocol::Grpc) => Protocol::Grpc,
        Ok(v1::Protocol::Stratum) => Protocol::Stratum,
        Ok(v1::Protocol::Dns) => Protocol::Dns,
        Ok(v1::Protocol::Udp) => Protocol::Udp,
        Ok(v1::Protocol::Quic) => Protocol::Quic,
        Ok(v1::Protocol::Unspecified) | Err(_) => Protocol::Unknown,
    }
}

/// A `tchar` of RFC 9110 section 5.6.2: any method is a token of these
/// (`M-SEARCH`, `X_GET`, ...), and the sidecar judges every one.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn valid_authority(a: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':' | '[' | ']');
    !a.is_empty() && a.len() <= MAX_AUTHORITY && a.chars().all(ok)
}

impl TryFrom<v1::Observation> for Observation {
    type Error = ObservationError;

    fn try_from(o: v1::Observation) -> Result<Self, Self::Error> {
        let direction = match v1::Direction::try_from(o.direction) {
            Ok(v1::Direction::Inbound) => Direction::Inbound,
            Ok(v1::Direction::Outbound) => Direction::Outbound,
            _ => return Err(ObservationError::Direction(o.direction)),
        };
        let source = match o.source.as_str() {
            "" => None,
            s => Some(s.parse().map_err(ObservationError::Source)?),
        };
        let authority = o.authority.to_ascii_lowercase();
        let authority_ok = valid_authority(&authority)
            || (direction == Direction::Inbound && authority.is_empty());
        if !authority_ok {
            return Err(ObservationError::Authority(o.authority));
        }
        let resolved_addr = match o.resolved_addr.as_str() {
            "" => None,
            a => Some(
                a.parse()
                    .map_err(|_| ObservationError::Addr(o.resolved_addr.clone()))?,
            ),
        };
        if o.method.len() > MAX_METHOD || !o.method.bytes().all(is_tchar) {
            return Err(ObservationError::Method(o.method));
        }
        if o.path.len() > MAX_PATH {
            return Err(ObservationError::Path);
        }
        let status = u16::try_from(o.status)
            .ok()
            .filter(|s| *s <= 999)
            .ok_or(ObservationError::Status(o.status))?;
        if o.denied > o.count {
            return Err(ObservationError::Denied {
                denied: o.denied,
                count: o.count,
            });
        }
        let claimed_source = match o.claimed_source.as_str() {
            "" => None,
            c if direction == Direction::Inbound && source.is_none() => Some(
                c.parse()
                    .map_err(|_| ObservationError::ClaimedSource(o.claimed_source.clone()))?,
            ),
            _ => return Err(ObservationError::ClaimedSource(o.claimed_source)),
        };
        let claimed_authority = match o.claimed_authority.to_ascii_lowercase() {
            c if c.is_empty() => None,
            c if direction == Direction::Outbound && valid_authority(&c) => Some(c),
            _ => return Err(ObservationError::ClaimedAuthority(o.claimed_authority)),
        };
        let source_ip = match o.source_ip.as_str() {
            "" => None,
            ip if direction == Direction::Inbound && source.is_some() => Some(
                ip.parse::<std::net::IpAddr>()
                    .map_err(|_| ObservationError::SourceIp(o.source_ip.clone()))?
                    .to_canonical(),
            ),
            _ => return Err(ObservationError::SourceIp(o.source_ip)),
        };
        Ok(Self {
            direction,
            protocol: protocol_of(o.protocol),
            source,
            claimed_source,
            claimed_authority,
            source_ip,
            authority,
            resolved_addr,
            method: o.method,
            path: o.path,
            status,
            count: o.count,
            denied: o.denied,
            bytes_in: o.bytes_in,
            bytes_out: o.bytes_out,
            latency_sum_us: o.latency_sum_us,
        })
    }
}

fn identity(identity: Option<v1::Identity>) -> Result<WorkloadId, Status> {
    let identity = identity.ok_or_else(|| Status::invalid_argument("identity is missing"))?;
    let namespace = if identity.namespace.is_empty() {
        "default"
    } else {
        &identity.namespace
    };
    WorkloadId::new(namespace, &identity.workload)
        .map_err(|e| Status::invalid_argument(format!("identity: {e}")))
}

/// The tenant and profile an identity carries, checked like the sidecar
/// checks its flags.
fn labels(identity: Option<&v1::Identity>) -> Result<(String, String), Status> {
    let Some(identity) = identity else {
        return Ok(Default::default());
    };
    if !vigil_proto::is_valid_tenant(&identity.tenant) {
        return Err(Status::invalid_argument(format!(
            "identity: tenant {:?} may hold only letters, digits and '@._+=-'",
            identity.tenant
        )));
    }
    if !vigil_proto::is_valid_profile(&identity.profile) {
        return Err(Status::invalid_argument(format!(
            "identity: profile {:?} may hold only a-z, 0-9 and '._-/'",
            identity.profile
        )));
    }
    Ok((identity.tenant.clone(), identity.profile.clone()))
}

impl From<&PolicySpec> for v1::Policy {
    fn from(spec: &PolicySpec) -> Self {
        Self {
            version: spec.version,
            enforce: spec.enforce,
            allowed_authorities: spec.allowed_authorities.iter().cloned().collect(),
            allowed_addrs: spec.allowed_addrs.iter().map(ToString::to_string).collect(),
            allowed_sources: spec.allowed_sources.iter().cloned().collect(),
            mode: spec.mode.label().to_owned(),
            source_ips: spec
                .source_ips
                .iter()
                .map(|(id, ips)| {
                    let ips = ips.iter().map(ToString::to_string).collect();
                    (id.clone(), v1::SourceIps { ips })
                })
                .collect(),
            denied_names: spec.denied_names.iter().cloned().collect(),
            enforce_threats: spec.enforce_threats,
            quarantined: spec.quarantined,
        }
    }
}

fn engine_status(e: EngineError) -> Status {
    Status::unavailable(e.to_string())
}

/// Tells the engine when a sidecar's policy stream is dropped.
struct Connection {
    engine: Handle,
    id: WorkloadId,
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.engine.disconnect(self.id.clone());
    }
}

/// The gRPC service.
#[derive(Clone, Debug)]
pub struct Ingest {
    engine: Handle,
}

impl Ingest {
    /// A service feeding `engine`.
    pub fn new(engine: Handle) -> Self {
        Self { engine }
    }

    /// The tonic server for this service: every call must present
    /// `authorization: Bearer <sidecar token>`.
    /// Refused calls are counted in `vigil_controller_grpc_unauthenticated`
    /// (registered in `registry`): code probing the port is a signal too.
    pub fn into_server(
        self,
        sidecar_token: String,
        registry: &mut prometheus_client::registry::Registry,
    ) -> InterceptedService<v1::controller_server::ControllerServer<Self>, SidecarAuth> {
        let refused = prometheus_client::metrics::counter::Counter::default();
        registry.register(
            "vigil_controller_grpc_unauthenticated",
            "gRPC calls refused for a missing or wrong sidecar token",
            refused.clone(),
        );
        v1::controller_server::ControllerServer::with_interceptor(
            self,
            SidecarAuth {
                token: sidecar_token.into(),
                refused,
            },
        )
    }
}

/// Refuses gRPC calls without the sidecar token (`UNAUTHENTICATED`), so
/// that code which merely reaches the port cannot register workloads, read
/// their policies or feed the baseline.
#[derive(Clone, Debug)]
pub struct SidecarAuth {
    token: std::sync::Arc<str>,
    refused: prometheus_client::metrics::counter::Counter,
}

impl Interceptor for SidecarAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let presented = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::token::bearer);
        match presented.map(|token| crate::token::scope_of(token, &self.token)) {
            Some(Some(scope)) => {
                let mut request = request;
                request.extensions_mut().insert(scope);
                Ok(request)
            }
            Some(None) => {
                self.refused.inc();
                Err(Status::unauthenticated("the sidecar token is wrong"))
            }
            None => {
                self.refused.inc();
                Err(Status::unauthenticated(
                    "missing the sidecar token: start vigil-proxy with --controller-token-file",
                ))
            }
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl v1::controller_server::Controller for Ingest {
    type RegisterStream = BoxStream<v1::Policy>;
    type ReportStream = BoxStream<v1::ReportAck>;

    async fn register(
        &self,
        request: Request<v1::Registration>,
    ) -> Result<Response<Self::RegisterStream>, Status> {
        let from = request.remote_addr().map(|a| a.ip());
        let scope = scope(&request);
        let registration = request.into_inner();
        let (tenant, profile) = labels(registration.identity.as_ref())?;
        let id = identity(registration.identity)?;
        check_scope(&scope, &id)?;
        if registration.inbound_addrs.len() > MAX_ADDRS {
            return Err(Status::invalid_argument(format!(
                "more than {MAX_ADDRS} inbound addresses"
            )));
        }
        let addrs = registration
            .inbound_addrs
            .iter()
            .map(|a| {
                a.parse::<SocketAddr>().map_err(|_| {
                    Status::invalid_argument(format!("inbound address {a:?} is not ip:port"))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let policies = self
            .engine
            .register(Registration {
                id: id.clone(),
                addrs,
                version: registration.proxy_version,
                from,
                tenant,
                profile,
            })
            .await
            .map_err(engine_status)?;
        let connection = Connection {
            engine: self.engine.clone(),
            id,
        };
        let stream = WatchStream::new(policies).map(move |spec| {
            let _alive = &connection;
            Ok(v1::Policy::from(spec.as_ref()))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn report(
        &self,
        request: Request<Streaming<v1::ReportBatch>>,
    ) -> Result<Response<Self::ReportStream>, Status> {
        let scope = scope(&request);
        let mut batches = request.into_inner();
        let engine = self.engine.clone();
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            loop {
                let batch = match batches.message().await {
                    Ok(Some(batch)) => batch,
                    Ok(None) => break,
                    Err(status) => {
                        tracing::debug!(%status, "report stream ended");
                        break;
                    }
                };
                let seq = batch.seq;
                let result = match apply(&engine, &scope, batch).await {
                    Ok(()) => Ok(v1::ReportAck { seq }),
                    Err(status) => Err(status),
                };
                let failed = result.is_err();
                if tx.send(result).await.is_err() || failed {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What the call's token lets it speak for (set by [`SidecarAuth`]; a
/// service called without the interceptor, as in tests, speaks for any).
fn scope<T>(request: &Request<T>) -> Scope {
    request
        .extensions()
        .get::<Scope>()
        .cloned()
        .unwrap_or(Scope::Any)
}

/// `PERMISSION_DENIED` unless `scope` lets the caller speak for `id`: a
/// namespace token registers and reports for its own namespace only.
fn check_scope(scope: &Scope, id: &WorkloadId) -> Result<(), Status> {
    if scope.allows(&id.namespace) {
        return Ok(());
    }
    let Scope::Namespace(own) = scope else {
        unreachable!("Scope::Any allows every namespace")
    };
    tracing::warn!(workload = %id, token_namespace = %own, "a sidecar token of one namespace spoke for another; refused");
    Err(Status::permission_denied(format!(
        "this sidecar token is namespace {own}'s, not {}'s",
        id.namespace
    )))
}

/// Validates one batch and hands it to the engine. Invalid observations are
/// skipped (and logged); an invalid identity or an oversized batch fails the
/// stream.
async fn apply(engine: &Handle, scope: &Scope, batch: v1::ReportBatch) -> Result<(), Status> {
    let instance = batch
        .identity
        .as_ref()
        .map(|i| i.instance.clone())
        .unwrap_or_default();
    if instance.len() > 64 {
        return Err(Status::invalid_argument(
            "identity.instance is longer than 64 bytes",
        ));
    }
    let reporter = identity(batch.identity)?;
    check_scope(scope, &reporter)?;
    if batch.observations.len() > MAX_OBSERVATIONS {
        return Err(Status::invalid_argument(format!(
            "a batch holds at most {MAX_OBSERVATIONS} observations"
        )));
    }
    let mut observations = Vec::with_capacity(batch.observations.len());
    let mut rejected = 0u64;
    for o in batch.observations {
        match Observation::try_from(o) {
            Ok(o) => observations.push(o),
            Err(e) => {
                rejected += 1;
                tracing::warn!(workload = %reporter, error = %e, "rejected an observation");
            }
        }
    }
    engine
        .report(Batch {
            reporter,
            instance,
            seq: batch.seq,
            observations,
            dropped: batch.dropped.saturating_add(rejected),
        })
        .await
        .map_err(engine_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> v1::Observation {
        v1::Observation {
            direction: v1::Direction::Outbound as i32,
            protocol: v1::Protocol::Http1 as i32,
            authority: "PyPI.org:443".into(),
            resolved_addr: "151.101.0.223:443".into(),
            method: "GET".into(),
            path: "/simple/{id}".into(),
            status: 200,
            count: 3,
            denied: 1,
            ..Default::default()
        }
    }

    #[test]
    fn valid_observations_convert_with_a_lowercase_authority() {
        let dns = v1::Observation {
            protocol: v1::Protocol::Dns.into(),
            authority: "Files.PythonHosted.org".into(),
            method: "AAAA".into(),
            status: 5,
            ..good()
        };
        let o = Observation::try_from(dns).unwrap();
        assert_eq!(
            (o.protocol, o.authority.as_str()),
            (Protocol::Dns, "files.pythonhosted.org"),
            "a DNS query names a host, with no port"
        );
        let o = Observation::try_from(good()).unwrap();
        assert_eq!(o.authority, "pypi.org:443");
        assert_eq!(o.protocol, Protocol::Http1);
        assert_eq!(o.resolved_addr, Some("151.101.0.223:443".parse().unwrap()));
    }

    #[test]
    fn bogus_observations_are_rejected_with_a_reason() {
        type Mutation = fn(&mut v1::Observation);
        let cases: Vec<(Mutation, ObservationError)> = vec![
            (|o| o.direction = 9, ObservationError::Direction(9)),
            (
                |o| o.authority = "a b:80".into(),
                ObservationError::Authority("a b:80".into()),
            ),
            (
                |o| o.authority = String::new(),
                ObservationError::Authority(String::new()),
            ),
            (
                |o| o.resolved_addr = "nope".into(),
                ObservationError::Addr("nope".into()),
            ),
            (
                |o| o.method = "GET\r\n".into(),
                ObservationError::Method("GET\r\n".into()),
            ),
            (|o| o.path = "/".repeat(5000), ObservationError::Path),
            (|o| o.status = 70_000, ObservationError::Status(70_000)),
            (
                |o| o.denied = 9,
                ObservationError::Denied {
                    denied: 9,
                    count: 3,
                },
            ),
        ];
        for (mutate, expected) in cases {
            let mut o = good();
            mutate(&mut o);
            assert_eq!(Observation::try_from(o).unwrap_err(), expected);
        }
        let mut o = good();
        o.direction = v1::Direction::Inbound as i32;
        o.source = "Not/Valid".into();
        assert!(matches!(
            Observation::try_from(o),
            Err(ObservationError::Source(_))
        ));
    }

    #[test]
    fn every_rfc9110_method_token_is_accepted() {
        for method in [
            "GET", "PROPFIND", "M-SEARCH", "X_GET", "BREW", "a.b~c!", "MKCOL",
        ] {
            let o = v1::Observation {
                method: method.into(),
                ..good()
            };
            let converted = Observation::try_from(o).unwrap_or_else(|e| panic!("{method}: {e}"));
            assert_eq!(converted.method, method);
        }
        for bad in ["GET /", "GE\"T", "(GET)", "GET,PUT", "G\u{e9}T", "GET\t"] {
            let o = v1::Observation {
                method: bad.into(),
                ..good()
            };
            assert_eq!(
                Observation::try_from(o).unwrap_err(),
                ObservationError::Method(bad.into()),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_claimed_authority_is_an_outbound_host_port() {
        let lied = v1::Observation {
            authority: "10.66.0.2:8000".into(),
            claimed_authority: "PyPI.test:8000".into(),
            ..good()
        };
        let o = Observation::try_from(lied.clone()).unwrap();
        assert_eq!(o.claimed_authority.as_deref(), Some("pypi.test:8000"));
        assert_eq!(o.authority, "10.66.0.2:8000");
        let inbound = v1::Observation {
            direction: v1::Direction::Inbound as i32,
            authority: String::new(),
            ..lied.clone()
        };
        let junk = v1::Observation {
            claimed_authority: "a b".into(),
            ..lied
        };
        for (o, claimed) in [(inbound, "PyPI.test:8000"), (junk, "a b")] {
            assert_eq!(
                Observation::try_from(o).unwrap_err(),
                ObservationError::ClaimedAuthority(claimed.into())
            );
        }
    }

    #[test]
    fn a_claimed_source_is_only_an_unproven_inbound_name() {
        let inbound = |source: &str, claimed: &str| v1::Observation {
            direction: v1::Direction::Inbound as i32,
            authority: String::new(),
            source: source.into(),
            claimed_source: claimed.into(),
            ..good()
        };
        let ok = Observation::try_from(inbound("", "default/web")).unwrap();
        assert_eq!(ok.claimed_source, Some("default/web".parse().unwrap()));
        assert_eq!(ok.source, None);
        for (o, why) in [
            (inbound("", "Not A Name"), "not a name"),
            (
                inbound("default/api", "default/web"),
                "with a verified source",
            ),
            (
                v1::Observation {
                    claimed_source: "default/web".into(),
                    ..good()
                },
                "outbound",
            ),
        ] {
            assert!(
                matches!(
                    Observation::try_from(o),
                    Err(ObservationError::ClaimedSource(_))
                ),
                "{why}"
            );
        }
    }

    #[test]
    fn a_source_ip_comes_only_beside_an_inbound_claimed_source() {
        let inbound = |source: &str, ip: &str| v1::Observation {
            direction: v1::Direction::Inbound as i32,
            authority: String::new(),
            source: source.into(),
            source_ip: ip.into(),
            ..good()
        };
        let ok = Observation::try_from(inbound("default/web", "::ffff:10.0.0.5")).unwrap();
        assert_eq!(
            ok.source_ip,
            Some("10.0.0.5".parse().unwrap()),
            "a mapped IPv4 made plain"
        );
        for (o, why) in [
            (inbound("default/web", "10.0.0.300"), "not an IP"),
            (inbound("default/web", "10.0.0.5:80"), "an address"),
            (inbound("", "10.0.0.5"), "from the internet"),
            (
                v1::Observation {
                    source_ip: "10.0.0.5".into(),
                    ..good()
                },
                "outbound",
            ),
        ] {
            assert!(
                matches!(Observation::try_from(o), Err(ObservationError::SourceIp(_))),
                "{why}"
            );
        }
    }

    #[test]
    fn identity_defaults_the_namespace_and_validates_names() {
        let id = identity(Some(v1::Identity {
            workload: "web".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(id.to_string(), "default/web");
        assert!(identity(None).is_err());
        assert!(
            identity(Some(v1::Identity {
                workload: "../etc".into(),
                ..Default::default()
            }))
            .is_err()
        );
    }
}
