//! Wiring: validate the config, bind every listener, spawn the data path,
//! telemetry, control and admin tasks, and shut them down in order.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use vigil_proto::v1;

use crate::admin::{self, AdminState};
use crate::config::{Args, Config, ConfigError};
use crate::connection;
use crate::context::{HttpMetrics, Shared, UpstreamClients};
use crate::control::{self, ControlMetrics};
use crate::dns::{self, Dns, DnsError, DnsMetrics};
use crate::listener::{self, ListenerError};
use crate::model::{Direction, Identity};
use crate::policy::{Policy, PolicyRx};
use crate::resolve::Resolver;
use crate::runtime::ControlRuntime;
use crate::telemetry;
use crate::udp::{self, Udp, UdpError, UdpMetrics};

/// Most open connections to the admin listener.
const ADMIN_MAX_CONNECTIONS: usize = 64;
/// Upper bound on sending the last report at shutdown.
pub const FINAL_REPORT_TIMEOUT: Duration = Duration::from_secs(1);
/// Capacity of the channel from the aggregator to the report task.
const BATCH_CAPACITY: usize = 64;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The flags are invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not be bound.
    #[error(transparent)]
    Listener(#[from] ListenerError),
    /// The DNS listener could not be bound.
    #[error(transparent)]
    Dns(#[from] DnsError),
    /// The UDP relay could not be opened (`--udp-addr` given).
    #[error(transparent)]
    Udp(#[from] UdpError),
    /// No randomness for the instance id.
    #[error("cannot generate an instance id: {0}")]
    Random(getrandom::Error),
    /// The control runtime could not start.
    #[error("cannot start the control runtime: {0}")]
    Runtime(std::io::Error),
}

/// A started proxy.
#[derive(Debug)]
pub struct Running {
    /// Bound outbound listener address.
    pub outbound_addr: SocketAddr,
    /// Bound inbound listener address.
    pub inbound_addr: SocketAddr,
    /// Bound IPv6 outbound listener address, if any.
    pub outbound_addr6: Option<SocketAddr>,
    /// Bound IPv6 inbound listener address, if any.
    pub inbound_addr6: Option<SocketAddr>,
    /// Bound admin listener address.
    pub admin_addr: SocketAddr,
    /// Bound DNS listener address (UDP and TCP), unless `--dns-addr off`.
    pub dns_addr: Option<SocketAddr>,
    /// Bound IPv6 DNS listener address, if any.
    pub dns_addr6: Option<SocketAddr>,
    /// Bound UDP relay addresses (IPv4, then IPv6), none when off.
    pub udp_addrs: Vec<SocketAddr>,
    policy: PolicyRx,
    data_shutdown: watch::Sender<bool>,
    tunnel_stop: watch::Sender<bool>,
    flush: watch::Sender<bool>,
    admin_shutdown: watch::Sender<bool>,
    data_listeners: Vec<JoinHandle<()>>,
    admin_listener: JoinHandle<()>,
    aggregator: JoinHandle<()>,
    reporter: JoinHandle<()>,
    policy_task: JoinHandle<()>,
    control_rt: ControlRuntime,
}

fn instance_id() -> Result<String, StartError> {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).map_err(StartError::Random)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Validates `args`, binds every listener (port 0 allowed) and spawns all
/// tasks. Forwarding works at once, with an allow-all policy until the
/// controller sends one.
pub async fn start(args: Args) -> Result<Running, StartError> {
    let config = Config::from_args(args)?;
    let identity = Identity {
        workload: config.args.workload.clone(),
        namespace: config.args.namespace.clone(),
        instance: instance_id()?,
        tenant: config.args.tenant.clone(),
        profile: config.args.profile.clone(),
    };
    let (outbound, outbound_addr) = listener::bind("outbound", config.args.outbound_addr).await?;
    let (inbound, inbound_addr) = listener::bind("inbound", config.args.inbound_addr).await?;
    let (admin, admin_addr) = listener::bind("admin", config.args.admin_addr).await?;
    let outbound6 = match config
        .args
        .outbound_addr6
        .resolve(config.args.outbound_addr)
    {
        Some(addr) => listener::bind_v6_only("outbound6", addr).await?,
        None => None,
    };
    let inbound6 = match config.args.inbound_addr6.resolve(config.args.inbound_addr) {
        Some(addr) => listener::bind_v6_only("inbound6", addr).await?,
        None => None,
    };
    let outbound_addr6 = outbound6.as_ref().map(|(_, addr)| *addr);
    let inbound_addr6 = inbound6.as_ref().map(|(_, addr)| *addr);
    let dns4 = match config.args.dns.listen() {
        Some(addr) => dns::bind(addr, false).await?,
        None => None,
    };
    let dns6 = match config.args.dns.listen6() {
        Some(addr) => dns::bind(addr, true).await?,
        None => None,
    };
    let dns_addr = dns4.as_ref().map(|b| b.addr);
    let dns_addr6 = dns6.as_ref().map(|b| b.addr);
    let udp_bound = udp::open(&config.args.udp)?;
    let udp_addrs: Vec<SocketAddr> = udp_bound.iter().map(|b| b.addr).collect();

    let mut registry = Registry::default();
    let (telemetry, records) = telemetry::channel(&mut registry);
    let http_metrics = HttpMetrics::register(&mut registry);
    let control_metrics = ControlMetrics::register(&mut registry);
    let dns_metrics = DnsMetrics::register(&mut registry);
    let udp_metrics = UdpMetrics::register(&mut registry);

    let initial = match config
        .args
        .policy_cache
        .as_deref()
        .map(control::cache::load)
    {
        Some(Ok(Some(cached))) => {
            tracing::info!(version = cached.version, mode = %cached.mode, "enforcing the cached policy until the controller answers");
            cached
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "starting without the cached policy");
            Policy::allow_all()
        }
        Some(Ok(None)) | None => Policy::allow_all(),
    };
    let (policy_tx, policy) = watch::channel(Arc::new(initial));
    let (data_shutdown, _) = watch::channel(false);
    let (tunnel_stop, _) = watch::channel(false);
    let (flush, _) = watch::channel(false);
    let (admin_shutdown, _) = watch::channel(false);

    let shared = Arc::new(Shared {
        client: UpstreamClients::new(),
        limits: config.args.limits.clone(),
        policy: policy.clone(),
        telemetry,
        metrics: http_metrics,
        resolver: Resolver::new(config.hosts.clone(), config.search.clone()),
        identity: identity.clone(),
        source: ::http::HeaderValue::from_str(&identity.source())
            .expect("validated names are valid header text"),
        app_addr: config.args.app_addr,
        sidecar_ports: [Some(outbound_addr), Some(inbound_addr), Some(admin_addr)]
            .into_iter()
            .chain([outbound_addr6, inbound_addr6, dns_addr, dns_addr6])
            .flatten()
            .map(|a| a.port())
            .collect(),
        stop: tunnel_stop.subscribe(),
        policy_deadline: tokio::time::Instant::now()
            + Duration::from_millis(config.args.policy_wait_ms),
        default_policy: Arc::new(config.args.default_policy.policy()),
        report_interval: config.report_interval(),
    });

    // Data path.
    let limits = &config.args.limits;
    let builder = Arc::new(listener::http_builder(limits));
    let spawn_data = |direction: Direction, listener, addr: SocketAddr| {
        let (shared, builder) = (shared.clone(), builder.clone());
        let name = match direction {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        };
        listener::spawn(
            name,
            listener,
            limits.max_connections,
            move |accepted| {
                let (shared, builder) = (shared.clone(), builder.clone());
                async move {
                    match direction {
                        Direction::Outbound => {
                            connection::outbound(shared, builder, addr, accepted).await
                        }
                        Direction::Inbound => {
                            connection::inbound(shared, builder, addr, accepted).await
                        }
                    }
                }
            },
            data_shutdown.subscribe(),
            limits.drain_timeout(),
        )
    };
    // Each listener has its own connection cap: the IPv6 twins add to it.
    let mut data_listeners = vec![
        spawn_data(Direction::Outbound, outbound, outbound_addr),
        spawn_data(Direction::Inbound, inbound, inbound_addr),
    ];
    data_listeners.extend(outbound6.map(|(l, addr)| spawn_data(Direction::Outbound, l, addr)));
    data_listeners.extend(inbound6.map(|(l, addr)| spawn_data(Direction::Inbound, l, addr)));
    data_listeners.push(crate::runtime::spawn_timer_heartbeat(
        data_shutdown.subscribe(),
    ));
    // DNS: UDP and TCP on each address, sharing one bound on queries in flight.
    if let Some(upstream) = config.dns_upstream {
        let dns = Arc::new(Dns {
            upstream,
            policy: policy.clone(),
            policy_deadline: shared.policy_deadline,
            default_policy: shared.default_policy.clone(),
            telemetry: shared.telemetry.clone(),
            answers: shared.resolver.pod_answers(),
            metrics: dns_metrics,
            in_flight: Arc::new(tokio::sync::Semaphore::new(dns::MAX_IN_FLIGHT)),
        });
        for bound in dns4.into_iter().chain(dns6) {
            data_listeners.push(dns::spawn_udp(
                dns.clone(),
                bound.udp,
                data_shutdown.subscribe(),
            ));
            data_listeners.push(dns::spawn_tcp(
                dns.clone(),
                bound.tcp,
                data_shutdown.subscribe(),
            ));
        }
    }

    // UDP: the relay sockets share one context.
    let relay = Arc::new(Udp {
        policy: policy.clone(),
        policy_deadline: shared.policy_deadline,
        default_policy: shared.default_policy.clone(),
        telemetry: shared.telemetry.clone(),
        answers: shared.resolver.pod_answers(),
        report_interval: config.report_interval(),
        idle_timeout: config.args.udp.idle_timeout(),
        max_flows: usize::try_from(config.args.udp.udp_max_flows).unwrap_or(usize::MAX),
        metrics: udp_metrics,
        stop: tunnel_stop.subscribe(),
    });
    for bound in udp_bound {
        data_listeners.push(udp::spawn(relay.clone(), bound, data_shutdown.subscribe()));
    }

    // Telemetry, control and admin run on their own small runtime: entering
    // it makes `tokio::spawn` and socket registration below use it.
    let control_rt = ControlRuntime::start().map_err(StartError::Runtime)?;
    let entered = control_rt.handle().enter();
    let (batch_tx, batch_rx) = mpsc::channel::<v1::ReportBatch>(BATCH_CAPACITY);
    let aggregator = telemetry::spawn_aggregator(
        records,
        identity.to_proto(),
        config.report_interval(),
        batch_tx,
        flush.subscribe(),
    );
    let target = control::Target {
        url: config.args.controller.clone(),
        token_file: config.args.controller_token_file.clone(),
    };
    let reporter = control::report::spawn(target.clone(), batch_rx);
    let registration = v1::Registration {
        identity: Some(identity.to_proto()),
        inbound_addrs: config
            .advertise_addrs(inbound_addr)
            .iter()
            .map(ToString::to_string)
            .collect(),
        proxy_version: env!("CARGO_PKG_VERSION").to_string(),
    };
    let policy_task = control::policy::spawn(
        target,
        registration,
        policy_tx,
        control_metrics,
        config.args.policy_cache.clone(),
    );

    // Admin.
    let state = Arc::new(AdminState {
        registry,
        ready: AtomicBool::new(false),
        config,
        policy: policy.clone(),
    });
    let admin_state = state.clone();
    let admin = admin
        .into_std()
        .and_then(tokio::net::TcpListener::from_std)
        .map_err(StartError::Runtime)?;
    let admin_builder = Arc::new(listener::http_builder(&state.config.args.limits));
    let admin_listener = listener::spawn(
        "admin",
        admin,
        ADMIN_MAX_CONNECTIONS,
        move |accepted| {
            let state = admin_state.clone();
            let builder = admin_builder.clone();
            async move {
                let service =
                    hyper::service::service_fn(move |req| admin::serve(state.clone(), req));
                listener::serve_http(&builder, accepted.watcher, accepted.stream, service).await;
            }
        },
        admin_shutdown.subscribe(),
        Duration::from_secs(1),
    );
    drop(entered);
    state.ready.store(true, Ordering::Relaxed);
    let off = |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_string(), |a| a.to_string());
    tracing::info!(
        %outbound_addr,
        %inbound_addr,
        %admin_addr,
        outbound_addr6 = %off(outbound_addr6),
        inbound_addr6 = %off(inbound_addr6),
        dns_addr = %off(dns_addr),
        dns_addr6 = %off(dns_addr6),
        udp_addr = %off(udp_addrs.iter().copied().find(SocketAddr::is_ipv4)),
        udp_addr6 = %off(udp_addrs.iter().copied().find(SocketAddr::is_ipv6)),
        dns_upstream = %state.config.dns_upstream.map_or_else(|| "off".to_string(), |a| a.to_string()),
        identity = %identity.source(),
        "vigil-proxy started"
    );

    Ok(Running {
        outbound_addr,
        inbound_addr,
        outbound_addr6,
        inbound_addr6,
        admin_addr,
        dns_addr,
        dns_addr6,
        udp_addrs,
        policy,
        data_shutdown,
        tunnel_stop,
        flush,
        admin_shutdown,
        data_listeners,
        admin_listener,
        aggregator,
        reporter,
        policy_task,
        control_rt,
    })
}

impl Running {
    /// The policy in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy.borrow().clone()
    }

    /// Stops accepting, drains open connections (at most `--drain-timeout-ms`),
    /// closes tunnels, flushes telemetry and gives the last report
    /// [`FINAL_REPORT_TIMEOUT`] to reach the controller.
    pub async fn shutdown(self) {
        let _ = self.data_shutdown.send(true);
        for task in self.data_listeners {
            let _ = task.await;
        }
        let _ = self.tunnel_stop.send(true);
        let _ = self.flush.send(true);
        let _ = self.aggregator.await;
        let mut reporter = self.reporter;
        if tokio::time::timeout(FINAL_REPORT_TIMEOUT, &mut reporter)
            .await
            .is_err()
        {
            tracing::warn!("the last report was not acknowledged in time");
            reporter.abort();
        }
        self.policy_task.abort();
        let _ = self.admin_shutdown.send(true);
        let _ = self.admin_listener.await;
        self.control_rt.stop().await;
        tracing::info!("vigil-proxy stopped");
    }

    /// Runs until ctrl-c or SIGTERM, then shuts down.
    pub async fn wait(self) {
        wait_for_signal().await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
