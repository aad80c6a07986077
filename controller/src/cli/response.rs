//! `vigilctl quarantine`, `release`, `alerts accept`, `audit` and
//! `baseline export|import|diff`: the response and baseline-as-code
//! commands (see [`crate::api`] for their endpoints and
//! [`crate::baseline_doc`] for the document).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, bail};
use hyper::Method;

use super::{ApiClient, out, print_json, table};
use crate::api::{ImportView, QuarantineView};
use crate::baseline_doc;
use crate::model::{Alert, AuditEntry, WorkloadId};

/// Exit status of `baseline diff` when the file and the controller differ.
pub const DIFF_DIFFERENT: u8 = 1;
/// Exit status of `baseline diff` when it could not compare (any error).
pub const DIFF_ERROR: u8 = 2;

/// Which workload `quarantine` and `release` act on.
#[derive(Debug, clap::Args)]
pub struct WorkloadArgs {
    /// The workload: `NAME` (in --namespace) or `NAMESPACE/NAME`.
    pub workload: String,
    /// Its namespace.
    #[arg(long, short, default_value = "default")]
    pub namespace: String,
}

impl WorkloadArgs {
    /// The workload named, checked.
    pub fn id(&self) -> anyhow::Result<WorkloadId> {
        let id = match self.workload.split_once('/') {
            Some(_) => self.workload.parse::<WorkloadId>(),
            None => WorkloadId::new(&self.namespace, &self.workload),
        };
        id.with_context(|| format!("{:?} is not a workload", self.workload))
    }
}

/// `vigilctl alerts` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AlertsCommand {
    /// Accept an alert: what it saw becomes part of the baseline (the
    /// workload's profile), so the same traffic passes in enforcement.
    Accept {
        /// The alert's id (the ID column of `vigilctl alerts`).
        id: String,
    },
}

/// `vigilctl baseline` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum BaselineCommand {
    /// Print the baseline as YAML (sorted, stable, for review and version
    /// control): `vigilctl baseline export > baseline.yaml`.
    Export {
        /// Only this namespace (its workloads and every edge touching them).
        #[arg(long, short)]
        namespace: Option<String>,
    },
    /// Load a baseline document: replace the baseline (of --namespace, of
    /// the file's `namespace:`, or of every namespace), or add to it.
    Import {
        /// The YAML file, `-` for standard input.
        file: PathBuf,
        /// Add to the current baseline instead of replacing it.
        #[arg(long)]
        merge: bool,
        /// Only this namespace.
        #[arg(long, short)]
        namespace: Option<String>,
    },
    /// Replay the recent traffic against the current baseline and print
    /// what enforcement would have blocked and flagged: the dry run before
    /// switching a namespace to enforcement.
    Simulate {
        /// Only this namespace.
        #[arg(long, short)]
        namespace: Option<String>,
        /// How far back, e.g. 30m, 1h (default), 2h30m, 1d.
        #[arg(long, default_value = "1h")]
        since: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare a baseline document with the controller's baseline: prints
    /// `+` for what only the file has and `-` for what only the controller
    /// has; exits 0 when they are the same, 1 when they differ, 2 on error.
    Diff {
        /// The YAML file, `-` for standard input.
        file: PathBuf,
        /// Only this namespace.
        #[arg(long, short)]
        namespace: Option<String>,
    },
}

/// Whether `command` is `baseline diff`.
pub(super) fn is_diff(command: &super::Command) -> bool {
    matches!(
        command,
        super::Command::Baseline {
            command: BaselineCommand::Diff { .. }
        }
    )
}

/// Exits with [`DIFF_ERROR`] when `result` is a failure (after saying why).
pub(super) fn exit_2_on_error(result: anyhow::Result<()>) -> anyhow::Result<()> {
    if let Err(e) = result {
        eprintln!("vigilctl: {e:#}");
        std::process::exit(i32::from(DIFF_ERROR));
    }
    Ok(())
}

/// Quarantines (`on`) or releases a workload.
pub(super) async fn quarantine(
    api: &ApiClient,
    args: &WorkloadArgs,
    on: bool,
) -> anyhow::Result<()> {
    let id = args.id()?;
    let verb = if on { "quarantine" } else { "release" };
    let bytes = api
        .call(
            Method::POST,
            &format!("/api/v1/workloads/{}/{}/{verb}", id.namespace, id.name),
            None,
        )
        .await?;
    let view: QuarantineView = serde_json::from_slice(&bytes)
        .context("the controller's answer is not what vigilctl expects")?;
    let text = match (on, view.changed) {
        (true, true) => format!(
            "quarantined {}: its sidecars refuse all traffic but health checks until `vigilctl release {}`\n",
            view.workload, view.workload
        ),
        (true, false) => format!("{} was already quarantined\n", view.workload),
        (false, true) => format!("released {}\n", view.workload),
        (false, false) => format!("{} was not quarantined\n", view.workload),
    };
    out(&text)
}

/// Accepts an alert into the baseline.
pub(super) async fn accept(api: &ApiClient, id: &str) -> anyhow::Result<()> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        bail!("{id:?} is not an alert id (the ID column of vigilctl alerts)");
    }
    let bytes = api
        .call(Method::POST, &format!("/api/v1/alerts/{id}/accept"), None)
        .await?;
    let alert: Alert = serde_json::from_slice(&bytes)
        .context("the controller's answer is not what vigilctl expects")?;
    out(&format!(
        "accepted {} ({} {}/{}{}): it is part of the baseline now\n",
        alert.id,
        alert.kind.as_str(),
        alert.namespace,
        alert.workload,
        if alert.destination.is_empty() {
            String::new()
        } else {
            format!(" -> {}", alert.destination)
        },
    ))
}

/// The audit log as a table.
pub fn audit_table(entries: &[AuditEntry]) -> String {
    if entries.is_empty() {
        return "no audit entries\n".to_owned();
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                e.seq.to_string(),
                e.at.clone(),
                e.actor.clone(),
                e.action.clone(),
                e.target.clone(),
                e.old.clone(),
                e.new.clone(),
            ]
        })
        .collect();
    table(
        &["SEQ", "TIME", "ACTOR", "ACTION", "TARGET", "OLD", "NEW"],
        &rows,
    )
}

/// Prints the audit log.
pub(super) async fn audit(api: &ApiClient, json: bool) -> anyhow::Result<()> {
    let (entries, bytes) = api.get::<Vec<AuditEntry>>("/api/v1/audit").await?;
    if json {
        print_json(&bytes)
    } else {
        out(&audit_table(&entries))
    }
}

/// Reads a document from `file` (`-`: standard input).
fn read_document(file: &PathBuf) -> anyhow::Result<(String, String)> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the baseline document from standard input")?;
        return Ok(("<stdin>".to_owned(), text));
    }
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok((file.display().to_string(), text))
}

/// Reads and checks a document; an error names the file and the line.
fn load_document(file: &PathBuf) -> anyhow::Result<(String, String, baseline_doc::Parsed)> {
    let (name, text) = read_document(file)?;
    let parsed =
        baseline_doc::parse(&text).with_context(|| format!("{name} is not a valid baseline"))?;
    Ok((name, text, parsed))
}

/// The namespace a command acts on: the flag's or the file's, which must agree.
fn scope(flag: Option<&str>, file: Option<&str>, name: &str) -> anyhow::Result<Option<String>> {
    match (flag, file) {
        (Some(flag), Some(file)) if flag != file => {
            bail!("{name} is for namespace {file}, not {flag}")
        }
        (flag, file) => Ok(flag.or(file).map(str::to_owned)),
    }
}

fn namespace_query(namespace: Option<&str>) -> String {
    namespace.map_or_else(String::new, |ns| format!("namespace={ns}"))
}

/// Runs a `vigilctl baseline` command.
pub(super) async fn baseline(api: &ApiClient, command: BaselineCommand) -> anyhow::Result<()> {
    match command {
        BaselineCommand::Simulate {
            namespace,
            since,
            json,
        } => simulate(api, namespace, &since, json).await,
        BaselineCommand::Export { namespace } => {
            if let Some(ns) = &namespace {
                crate::model::validate_name("namespace", ns)?;
            }
            let query = namespace_query(namespace.as_deref());
            let yaml = api
                .call(Method::GET, &format!("/api/v1/baseline?{query}"), None)
                .await?;
            out(&String::from_utf8_lossy(&yaml))
        }
        BaselineCommand::Import {
            file,
            merge,
            namespace,
        } => {
            let (name, text, parsed) = load_document(&file)?;
            let ns = scope(namespace.as_deref(), parsed.namespace.as_deref(), &name)?;
            let mut query = format!("merge={merge}");
            if let Some(ns) = &ns {
                query.push_str(&format!("&{}", namespace_query(Some(ns))));
            }
            let bytes = api
                .call_as(
                    Method::PUT,
                    &format!("/api/v1/baseline?{query}"),
                    Some(text),
                    crate::api::YAML,
                )
                .await
                .with_context(|| format!("importing {name}"))?;
            let view: ImportView = serde_json::from_slice(&bytes)
                .context("the controller's answer is not what vigilctl expects")?;
            out(&format!(
                "imported {name} into {} ({}): {} workloads, {} edges before; {} workloads, {} edges now\n",
                view.namespace.as_deref().map_or_else(
                    || "every namespace".to_owned(),
                    |n| format!("namespace {n}")
                ),
                if view.merged { "merged" } else { "replaced" },
                view.before.workloads,
                view.before.edges,
                view.after.workloads,
                view.after.edges,
            ))
        }
        BaselineCommand::Diff { file, namespace } => {
            let (name, _, parsed) = load_document(&file)?;
            let ns = scope(namespace.as_deref(), parsed.namespace.as_deref(), &name)?;
            let query = namespace_query(ns.as_deref());
            let yaml = api
                .call(Method::GET, &format!("/api/v1/baseline?{query}"), None)
                .await?;
            let running = baseline_doc::parse(&String::from_utf8_lossy(&yaml))
                .context("the controller's baseline could not be read")?;
            let changes = baseline_doc::diff(
                &baseline_doc::restrict(&running.baseline, ns.as_deref()),
                &baseline_doc::restrict(&parsed.baseline, ns.as_deref()),
            );
            let text: String = changes.iter().map(|c| format!("{c}\n")).collect();
            out(&text)?;
            if !changes.is_empty() {
                std::process::exit(i32::from(DIFF_DIFFERENT));
            }
            Ok(())
        }
    }
}

/// `vigilctl baseline simulate`.
async fn simulate(
    api: &ApiClient,
    namespace: Option<String>,
    since: &str,
    json: bool,
) -> anyhow::Result<()> {
    crate::simulate::parse_window(since).map_err(anyhow::Error::msg)?;
    if let Some(ns) = &namespace {
        crate::model::validate_name("namespace", ns)?;
    }
    let mut path = format!("/api/v1/baseline/simulate?since={since}");
    if let Some(ns) = &namespace {
        path.push_str(&format!("&{}", namespace_query(Some(ns))));
    }
    let (report, bytes) = api.get::<crate::simulate::Simulation>(&path).await?;
    if json {
        return print_json(&bytes);
    }
    let scope = namespace.map_or_else(
        || "every namespace".to_owned(),
        |n| format!("namespace {n}"),
    );
    let mut text = format!(
        "dry run of enforcement over the last {since} of {scope}: {} observations replayed\n",
        report.observations
    );
    if report.results.is_empty() {
        text.push_str("enforcement would have blocked nothing and flagged nothing\n");
    } else {
        let rows: Vec<Vec<String>> = report
            .results
            .iter()
            .map(|r| {
                vec![
                    match r.action {
                        crate::model::Action::Blocked => "would block".to_owned(),
                        crate::model::Action::Flagged => "would flag".to_owned(),
                    },
                    r.kind.clone(),
                    r.workload.clone(),
                    r.destination.clone(),
                    r.count.to_string(),
                ]
            })
            .collect();
        text.push_str(&table(
            &["ACTION", "KIND", "WORKLOAD", "DESTINATION", "REQUESTS"],
            &rows,
        ));
    }
    out(&text)
}
