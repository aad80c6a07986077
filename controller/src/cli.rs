//! `vigilctl`: reads and changes the controller through its HTTP API.
//!
//! Human output is aligned tables; `--json` prints the API's JSON as is.
//! Errors say what failed and what to do, and exit non-zero.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::api::{ModesView, SetModeRequest, StatusView};
use crate::model::{Alert, Mode};
use crate::snapshot::GraphView;

mod response;
pub use response::{AlertsCommand, BaselineCommand, WorkloadArgs};

/// Env var of the controller URL.
pub const ENV_CONTROLLER: &str = "VIGIL_CONTROLLER";
/// Env var holding the admin token itself.
pub const ENV_TOKEN: &str = "VIGIL_TOKEN";
/// Env var naming the admin token file.
pub const ENV_TOKEN_FILE: &str = "VIGIL_TOKEN_FILE";
/// Token file tried last: the controller's default data directory.
pub const DEFAULT_TOKEN_FILE: &str = "./vigil-data/admin.token";

/// Command line of `vigilctl`.
#[derive(Debug, clap::Parser)]
#[command(
    name = "vigilctl",
    version,
    about = "Read and steer Vigil: modes, service graph, alerts, status"
)]
pub struct Cli {
    /// URL of the controller's HTTP API.
    #[arg(long, global = true, env = ENV_CONTROLLER, default_value = "http://127.0.0.1:8480")]
    pub controller: String,
    /// File holding the admin token (else $VIGIL_TOKEN, else ./vigil-data/admin.token).
    #[arg(long, global = true, env = ENV_TOKEN_FILE)]
    pub token_file: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Show the modes, or switch to learning or enforcement.
    Mode {
        /// The mode to switch to; shows the modes when absent.
        #[arg(value_enum)]
        mode: Option<ModeArg>,
        /// Only this namespace (default: every namespace, and new ones).
        #[arg(long, short)]
        namespace: Option<String>,
        /// With enforcement: raise alerts but do not block.
        #[arg(long)]
        alert_only: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the service graph: nodes and edges.
    Graph {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the alerts, newest first; `alerts accept ID` accepts one.
    #[command(args_conflicts_with_subcommands = true)]
    Alerts {
        /// Act on an alert.
        #[command(subcommand)]
        action: Option<AlertsCommand>,
        /// Only alerts of this tenant (the account that owns the workload).
        #[arg(long)]
        tenant: Option<String>,
        /// Only alerts of this namespace.
        #[arg(long, short)]
        namespace: Option<String>,
        /// Only alerts of this kind, e.g. `threat`.
        #[arg(long)]
        kind: Option<String>,
        /// Only alerts of at least this severity (low, medium, high, critical).
        #[arg(long)]
        severity: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the controller's health, sidecars, modes and counts.
    Status {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Threat intelligence: whether a name is on a threat list.
    Threats {
        /// What to do.
        #[command(subcommand)]
        command: ThreatsCommand,
    },
    /// Quarantine a workload: every sidecar of it refuses all traffic but
    /// its health checks (in every mode, across restarts) until released.
    Quarantine(WorkloadArgs),
    /// Release a quarantined workload.
    Release(WorkloadArgs),
    /// Show the audit log: every mode change, import, accept, quarantine
    /// and release, with time, actor and the old and new value.
    Audit {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The baseline as code: export, import and diff YAML documents.
    Baseline {
        /// What to do.
        #[command(subcommand)]
        command: BaselineCommand,
    },
    /// Print a manifest with the vigil-proxy sidecar injected (what the
    /// admission webhook does), e.g. `vigilctl inject -f app.yaml | kubectl apply -f -`.
    Inject(crate::kube::cli::InjectArgs),
    /// Print a manifest with Vigil's sidecar removed.
    Uninject(crate::kube::cli::UninjectArgs),
    /// Print the sidecar token narrowed to one namespace: the token to put
    /// in that namespace's Secret, with which its holder can register and
    /// report for that namespace's sidecars only (read offline from the
    /// controller's sidecar token file; the chart does the same).
    SidecarToken {
        /// The namespace.
        #[arg(long)]
        namespace: String,
        /// The controller's sidecar token (`--sidecar-token-file` of
        /// vigil-controller, by default `<data-dir>/sidecar.token`).
        #[arg(long, env = "VIGIL_SIDECAR_TOKEN_FILE")]
        sidecar_token_file: PathBuf,
    },
}

/// `vigilctl threats` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum ThreatsCommand {
    /// Say whether NAME (a host name, IP, or either with a port) is listed,
    /// and by which feed. Exit status: 0 listed, 1 not listed, 2 could not
    /// tell (a bad name, the controller unreachable).
    Check {
        /// The name, e.g. xmr-eu1.nanopool.org or 203.0.113.7:3333.
        name: String,
        /// Print JSON: {"name", "listed", "feed", "entry"}.
        #[arg(long)]
        json: bool,
    },
}

/// The outcome of `vigilctl threats check` that is not "listed".
#[derive(Debug, thiserror::Error)]
enum CheckFailed {
    /// On no list (already printed).
    #[error("{0} is not listed")]
    NotListed(String),
    /// The controller could not say.
    #[error("{0:#}")]
    Unknown(anyhow::Error),
}

async fn threats_check(api: &ApiClient, name: &str, json: bool) -> Result<(), CheckFailed> {
    let path = format!("/api/v1/threats/check?name={}", percent_encode(name));
    let (view, bytes) = api
        .get::<crate::threat::api::CheckView>(&path)
        .await
        .map_err(CheckFailed::Unknown)?;
    if json {
        print_json(&bytes).map_err(CheckFailed::Unknown)?;
    } else {
        let line = match (&view.feed, &view.entry) {
            (Some(feed), Some(entry)) if view.listed => {
                format!("{}: listed by {feed} (entry {entry})\n", view.name)
            }
            _ => format!("{}: not listed\n", view.name),
        };
        out(&line).map_err(CheckFailed::Unknown)?;
    }
    if view.listed {
        Ok(())
    } else {
        Err(CheckFailed::NotListed(view.name))
    }
}

/// `text` for a URL query value: unreserved bytes as they are, the rest
/// `%XX`.
fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reports an error [`run`] returned on stderr and gives the exit status:
/// for `threats check`, 1 when the name is not listed (already said on
/// stdout, so nothing more is printed) and 2 when it could not tell; 1 for
/// every other failure.
pub fn report_error(e: &anyhow::Error) -> std::process::ExitCode {
    match e.downcast_ref::<CheckFailed>() {
        Some(CheckFailed::NotListed(_)) => std::process::ExitCode::from(1),
        Some(CheckFailed::Unknown(_)) => {
            eprintln!("vigilctl: {e:#}");
            std::process::ExitCode::from(2)
        }
        None => {
            eprintln!("vigilctl: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Modes that can be switched to.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ModeArg {
    /// Learn the baseline from what is seen.
    Learning,
    /// Alert on (and, unless --alert-only, block) what is outside the baseline.
    Enforcement,
}

struct ApiClient {
    base: String,
    token: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Bytes> {
        self.call_as(method, path, body, "application/json").await
    }

    /// [`ApiClient::call`] with a body of type `content_type`.
    async fn call_as(
        &self,
        method: Method,
        path: &str,
        body: Option<String>,
        content_type: &str,
    ) -> anyhow::Result<Bytes> {
        let uri = format!("{}{path}", self.base);
        let mut req = Request::builder()
            .method(method)
            .uri(&uri)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .with_context(|| format!("{uri:?} is not a valid URL"))?;
        let response = tokio::time::timeout(Duration::from_secs(10), self.client.request(req))
            .await
            .with_context(|| format!("the controller at {} did not answer within 10 s", self.base))?
            .with_context(|| format!("cannot reach the controller at {}: is vigil-controller running? (set --controller or {ENV_CONTROLLER})", self.base))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .context("reading the controller's answer")?
            .to_bytes();
        if status.is_success() {
            return Ok(bytes);
        }
        let detail = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
        if status == StatusCode::UNAUTHORIZED {
            bail!(
                "the controller refused the token ({detail}): pass the controller's <data-dir>/admin.token with --token-file or {ENV_TOKEN}"
            );
        }
        bail!("the controller answered {status}: {detail}")
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<(T, Bytes)> {
        let bytes = self.call(Method::GET, path, None).await?;
        let value = serde_json::from_slice(&bytes).with_context(|| {
            format!("the controller's answer to {path} is not what vigilctl expects")
        })?;
        Ok((value, bytes))
    }
}

fn load_token(token_file: Option<&PathBuf>) -> anyhow::Result<String> {
    let read = |path: &PathBuf| -> anyhow::Result<String> {
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the token file {}", path.display()))?;
        let token = token.trim().to_owned();
        if token.is_empty() {
            bail!("the token file {} is empty", path.display());
        }
        Ok(token)
    };
    if let Some(path) = token_file {
        return read(path);
    }
    if let Ok(token) = std::env::var(ENV_TOKEN)
        && !token.trim().is_empty()
    {
        return Ok(token.trim().to_owned());
    }
    let default = PathBuf::from(DEFAULT_TOKEN_FILE);
    if default.exists() {
        return read(&default);
    }
    bail!("no admin token: pass --token-file <data-dir>/admin.token or set {ENV_TOKEN}")
}

/// Formats rows as a table with aligned columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: &mut dyn Iterator<Item = &str>, out: &mut String| {
        let parts: Vec<String> = cells
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out.push_str(parts.join("  ").trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied(), &mut out);
    for row in rows {
        line(&mut row.iter().map(String::as_str), &mut out);
    }
    out
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

fn modes_table(view: &ModesView) -> String {
    let mut rows = vec![vec![
        "(default)".to_owned(),
        view.default.label().to_owned(),
    ]];
    rows.extend(
        view.namespaces
            .iter()
            .map(|(ns, m)| vec![ns.clone(), m.label().to_owned()]),
    );
    table(&["NAMESPACE", "MODE"], &rows)
}

fn graph_tables(g: &GraphView) -> String {
    let nodes: Vec<_> = g
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.id.clone(),
                n.kind.clone(),
                n.namespace.clone().unwrap_or_else(|| "-".into()),
                n.sidecars.to_string(),
            ]
        })
        .collect();
    let edges: Vec<_> = g
        .edges
        .iter()
        .map(|e| {
            vec![
                e.source.to_string(),
                e.target.to_string(),
                e.requests.to_string(),
                e.denied.to_string(),
                yes_no(e.in_baseline),
                if e.violation {
                    "VIOLATION".into()
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    format!(
        "{}\n{}",
        table(&["NODE", "KIND", "NAMESPACE", "SIDECARS"], &nodes),
        table(
            &[
                "SOURCE",
                "TARGET",
                "REQUESTS",
                "DENIED",
                "BASELINE",
                "VIOLATION"
            ],
            &edges
        )
    )
}

fn alerts_table(alerts: &[Alert]) -> String {
    if alerts.is_empty() {
        return "no alerts\n".to_owned();
    }
    let rows: Vec<_> = alerts
        .iter()
        .map(|a| {
            vec![
                a.id.clone(),
                a.severity.as_str().to_owned(),
                a.kind.as_str().to_owned(),
                a.namespace.clone(),
                a.workload.clone(),
                if a.tenant.is_empty() {
                    "-".to_owned()
                } else {
                    a.tenant.clone()
                },
                match (&a.claimed, a.destination.is_empty()) {
                    // The name given, and where the traffic really went.
                    (Some(claimed), _) => format!("{} (as {claimed})", a.destination),
                    (None, true) => "-".into(),
                    (None, false) => a.destination.clone(),
                },
                serde_json::to_value(a.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                a.count.to_string(),
                a.denied.to_string(),
                a.first_seen.clone(),
                a.last_seen.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "SEVERITY",
            "KIND",
            "NAMESPACE",
            "WORKLOAD",
            "TENANT",
            "DESTINATION",
            "ACTION",
            "COUNT",
            "DENIED",
            "FIRST SEEN",
            "LAST SEEN",
        ],
        &rows,
    )
}

fn status_text(s: &StatusView) -> String {
    let c = &s.counts;
    let modes: Vec<String> = s
        .modes
        .iter()
        .map(|(ns, m)| format!("{ns}={}", m.label()))
        .collect();
    format!(
        "controller:          {} (version {}, up {} s)\n\
         default mode:        {}\n\
         namespace modes:     {}\n\
         sidecars connected:  {}\n\
         workloads:           {}\n\
         graph:               {} nodes, {} edges\n\
         baseline:            {} workloads, {} edges\n\
         alerts:              {}\n\
         dropped observations: {}\n",
        if s.healthy { "healthy" } else { "unhealthy" },
        s.version,
        s.uptime_seconds,
        s.default_mode.label(),
        if modes.is_empty() {
            "-".into()
        } else {
            modes.join(", ")
        },
        c.sidecars_connected,
        c.workloads,
        c.nodes,
        c.edges,
        c.baseline_workloads,
        c.baseline_edges,
        c.alerts,
        c.dropped_observations,
    ) + &stability_text(s)
        + &crate::notify::status::text(&s.notifications)
}

/// One line per namespace whose baseline grew: "stable for 2h13m".
fn stability_text(s: &StatusView) -> String {
    s.stability
        .iter()
        .map(|(ns, st)| format!("learning {ns:<11} {}\n", st.summary))
        .collect()
}

/// Writes `text` to standard output. A closed pipe (`vigilctl alerts |
/// head`) ends the program quietly, as for any Unix filter.
fn out(text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        result => result.context("writing to standard output"),
    }
}

fn print_json(bytes: &Bytes) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_slice(bytes)?;
    out(&format!("{}\n", serde_json::to_string_pretty(&value)?))
}

/// The query string of `vigilctl alerts` filters.
fn alerts_query(filters: &[(&str, &Option<String>)]) -> String {
    let pairs: Vec<String> = filters
        .iter()
        .filter_map(|(key, value)| {
            let value = value.as_deref()?;
            Some(format!("{key}={}", percent_encode(value)))
        })
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// `vigilctl sidecar-token`: the namespace token of `namespace`.
fn print_namespace_token(namespace: &str, sidecar_token_file: &Path) -> anyhow::Result<()> {
    crate::model::WorkloadId::new(namespace, "x")
        .map_err(|e| anyhow::anyhow!("--namespace {namespace:?}: {e}"))?;
    let text = std::fs::read_to_string(sidecar_token_file)
        .with_context(|| format!("cannot read {}", sidecar_token_file.display()))?;
    let secret = text.trim();
    if secret.is_empty() {
        bail!("{} is empty", sidecar_token_file.display());
    }
    println!("{}", crate::token::namespace_token(secret, namespace));
    Ok(())
}

/// Runs one `vigilctl` command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if response::is_diff(&cli.command) {
        // `baseline diff` exits 1 when they differ, so any failure is 2.
        return response::exit_2_on_error(run_command(cli).await);
    }
    run_command(cli).await
}

async fn run_command(cli: Cli) -> anyhow::Result<()> {
    let command = match cli.command {
        Command::Inject(args) => return crate::kube::cli::inject(&args),
        Command::Uninject(args) => return crate::kube::cli::uninject(&args),
        Command::SidecarToken {
            namespace,
            sidecar_token_file,
        } => return print_namespace_token(&namespace, &sidecar_token_file),
        other => other,
    };
    let token = load_token(cli.token_file.as_ref())?;
    let base = cli.controller.trim_end_matches('/').to_owned();
    if !base.starts_with("http://") {
        bail!("--controller must be an http:// URL, got {base:?}");
    }
    let api = ApiClient {
        base,
        token,
        client: Client::builder(TokioExecutor::new()).build_http(),
    };
    match command {
        Command::Inject(_) | Command::Uninject(_) | Command::SidecarToken { .. } => {
            unreachable!("handled above")
        }
        Command::Mode {
            mode: None,
            json,
            namespace: _,
            alert_only: _,
        } => {
            let (view, bytes) = api.get::<ModesView>("/api/v1/mode").await?;
            if json {
                print_json(&bytes)?
            } else {
                out(&modes_table(&view))?
            }
        }
        Command::Mode {
            mode: Some(mode),
            namespace,
            alert_only,
            json,
        } => {
            if alert_only && matches!(mode, ModeArg::Learning) {
                bail!("--alert-only applies to enforcement only");
            }
            let request = SetModeRequest {
                mode: match mode {
                    ModeArg::Learning => "learning",
                    ModeArg::Enforcement => "enforcement",
                }
                .to_owned(),
                alert_only,
                namespace: namespace.clone(),
            };
            let bytes = api
                .call(
                    Method::PUT,
                    "/api/v1/mode",
                    Some(serde_json::to_string(&request)?),
                )
                .await?;
            if json {
                print_json(&bytes)?;
            } else {
                let view: ModesView = serde_json::from_slice(&bytes)?;
                let label = if alert_only {
                    Mode::Enforcement { alert_only }
                } else if matches!(mode, ModeArg::Learning) {
                    Mode::Learning
                } else {
                    Mode::Enforcement { alert_only: false }
                };
                out(&format!(
                    "switched {} to {}\n",
                    namespace
                        .as_deref()
                        .map_or_else(|| "all namespaces".to_owned(), |n| format!("namespace {n}")),
                    label.label()
                ))?;
                out(&modes_table(&view))?;
            }
        }
        Command::Graph { json } => {
            let (view, bytes) = api.get::<GraphView>("/api/v1/graph").await?;
            if json {
                print_json(&bytes)?
            } else {
                out(&graph_tables(&view))?
            }
        }
        Command::Alerts {
            action: Some(AlertsCommand::Accept { id }),
            ..
        } => response::accept(&api, &id).await?,
        Command::Quarantine(args) => response::quarantine(&api, &args, true).await?,
        Command::Release(args) => response::quarantine(&api, &args, false).await?,
        Command::Audit { json } => response::audit(&api, json).await?,
        Command::Baseline { command } => response::baseline(&api, command).await?,
        Command::Alerts {
            action: None,
            json,
            tenant,
            namespace,
            kind,
            severity,
        } => {
            let query = alerts_query(&[
                ("tenant", &tenant),
                ("namespace", &namespace),
                ("kind", &kind),
                ("severity", &severity),
            ]);
            let (view, bytes) = api
                .get::<Vec<Alert>>(&format!("/api/v1/alerts{query}"))
                .await?;
            if json {
                print_json(&bytes)?
            } else {
                out(&alerts_table(&view))?
            }
        }
        Command::Threats {
            command: ThreatsCommand::Check { name, json },
        } => threats_check(&api, &name, json).await?,
        Command::Status { json } => {
            let (view, bytes) = api.get::<StatusView>("/api/v1/status").await?;
            if json {
                print_json(&bytes)?
            } else {
                out(&status_text(&view))?
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_mismatch_shows_the_name_given_beside_the_real_destination() {
        let mut alert = Alert {
            id: String::new(),
            kind: crate::model::AlertKind::NameMismatch,
            severity: crate::model::Severity::High,
            namespace: "notebooks".into(),
            workload: "jupyter".into(),
            tenant: "alice".into(),
            destination: "10.0.0.9:443".into(),
            action: crate::model::Action::Blocked,
            count: 2,
            denied: 2,
            first_seen: "t0".into(),
            last_seen: "t1".into(),
            claimed: Some("pypi.org:443".into()),
            explanation: String::new(),
            evidence: crate::model::Evidence::default(),
        };
        alert.upgrade();
        let out = alerts_table(&[alert]);
        assert!(
            out.contains("name_mismatch") && out.contains("10.0.0.9:443 (as pypi.org:443)"),
            "{out}"
        );
    }

    #[test]
    fn tables_align_columns() {
        let out = table(
            &["A", "LONG HEADER"],
            &[vec!["wide cell".into(), "x".into()]],
        );
        assert_eq!(out, "A          LONG HEADER\nwide cell  x\n");
    }
}
