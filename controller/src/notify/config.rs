//! Flags of the notifiers (`--notify-*`, `VIGIL_NOTIFY_*`) and their
//! resolution at start: the secret files are read once, each URL is checked,
//! and a bad one is an error naming the flag. Secrets (the Slack URL, the
//! signing key) are never logged or serialised.

use std::path::{Path, PathBuf};
use std::time::Duration;

use http::Uri;
use serde::{Serialize, Serializer};

use crate::model::Severity;

/// Env var names of the notification flags (also listed in the README).
pub mod env {
    /// `--notify-slack-url-file`.
    pub const SLACK_URL_FILE: &str = "VIGIL_NOTIFY_SLACK_URL_FILE";
    /// `--notify-webhook`.
    pub const WEBHOOK: &str = "VIGIL_NOTIFY_WEBHOOK";
    /// `--notify-webhook-secret-file`.
    pub const WEBHOOK_SECRET_FILE: &str = "VIGIL_NOTIFY_WEBHOOK_SECRET_FILE";
    /// `--notify-min-severity`.
    pub const MIN_SEVERITY: &str = "VIGIL_NOTIFY_MIN_SEVERITY";
    /// `--notify-window`.
    pub const WINDOW: &str = "VIGIL_NOTIFY_WINDOW";
    /// `--notify-rate-limit`.
    pub const RATE_LIMIT: &str = "VIGIL_NOTIFY_RATE_LIMIT";
}

/// File name of the webhook signing key inside the data directory (the
/// default of `--notify-webhook-secret-file`).
pub const WEBHOOK_SECRET_FILE: &str = "notify-webhook.secret";

/// Where alerts are sent, and how often.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args, Serialize)]
pub struct NotifyArgs {
    /// A file holding a Slack incoming-webhook URL (a secret: it is read
    /// once at start and never logged).
    #[arg(long, env = env::SLACK_URL_FILE)]
    pub notify_slack_url_file: Option<PathBuf>,
    /// A URL that receives every notification as signed JSON (POST; see
    /// the README for the body and how to verify `X-Vigil-Signature`).
    #[arg(long, env = env::WEBHOOK, value_parser = parse_url)]
    #[serde(serialize_with = "redacted")]
    pub notify_webhook: Option<Uri>,
    /// The key that signs webhook bodies (HMAC-SHA256). Default:
    /// `<data-dir>/notify-webhook.secret`, created (mode 0600) on first
    /// start; give the receiver the same file.
    #[arg(long, env = env::WEBHOOK_SECRET_FILE)]
    pub notify_webhook_secret_file: Option<PathBuf>,
    /// The least severity notified: low, medium, high or critical.
    #[arg(long, env = env::MIN_SEVERITY, default_value = "medium")]
    pub notify_min_severity: Severity,
    /// De-duplication window per alert id: the first occurrence is sent at
    /// once, repeats within the window are folded into one follow-up at its
    /// end (with the count). E.g. `30s`, `5m`, `1h`.
    #[arg(long, env = env::WINDOW, default_value = "5m", value_parser = parse_duration)]
    #[serde(serialize_with = "seconds")]
    pub notify_window: Duration,
    /// At most this many messages a minute per destination (a burst of as
    /// many, then one every 60/N s); the rest wait, most severe first.
    #[arg(long, env = env::RATE_LIMIT, default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..=6000))]
    pub notify_rate_limit: u32,
}

impl Default for NotifyArgs {
    /// No sink; the flags' defaults.
    fn default() -> Self {
        Self {
            notify_slack_url_file: None,
            notify_webhook: None,
            notify_webhook_secret_file: None,
            notify_min_severity: Severity::Medium,
            notify_window: Duration::from_secs(300),
            notify_rate_limit: 30,
        }
    }
}

/// Why the notification flags could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The Slack URL file could not be read.
    #[error("--notify-slack-url-file {path}: {source}")]
    SlackFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The Slack URL file does not hold a URL (its content is not shown:
    /// it is a secret).
    #[error("--notify-slack-url-file {path}: {why}")]
    SlackUrl {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: &'static str,
    },
    /// The webhook signing key could not be read or created.
    #[error("--notify-webhook-secret-file: {0}")]
    Secret(#[from] crate::token::TokenError),
}

/// The flag values, resolved: secrets read, URLs checked.
#[derive(Clone)]
pub struct Settings {
    /// The Slack incoming-webhook URL (secret).
    pub slack: Option<Uri>,
    /// The JSON webhook URL and its signing key.
    pub webhook: Option<(Uri, Vec<u8>)>,
    /// The least severity notified.
    pub min_severity: Severity,
    /// The de-duplication window.
    pub window: Duration,
    /// Messages a minute, per sink.
    pub per_minute: u32,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("slack", &self.slack.as_ref().map(|_| "<secret>"))
            .field("webhook", &self.webhook.as_ref().map(|(u, _)| host_of(u)))
            .field("min_severity", &self.min_severity)
            .field("window", &self.window)
            .field("per_minute", &self.per_minute)
            .finish()
    }
}

impl NotifyArgs {
    /// Reads the secrets; `None` when no sink is configured.
    pub fn resolve(&self, data_dir: &Path) -> Result<Option<Settings>, ConfigError> {
        let slack = match &self.notify_slack_url_file {
            Some(path) => Some(read_slack_url(path)?),
            None => None,
        };
        let webhook = match &self.notify_webhook {
            Some(url) => {
                let path = self
                    .notify_webhook_secret_file
                    .clone()
                    .unwrap_or_else(|| data_dir.join(WEBHOOK_SECRET_FILE));
                let key = crate::token::load_or_create(&path, "webhook signing")?;
                Some((url.clone(), key.into_bytes()))
            }
            None => None,
        };
        if slack.is_none() && webhook.is_none() {
            return Ok(None);
        }
        Ok(Some(Settings {
            slack,
            webhook,
            min_severity: self.notify_min_severity,
            window: self.notify_window,
            per_minute: self.notify_rate_limit,
        }))
    }
}

fn read_slack_url(path: &Path) -> Result<Uri, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SlackFile {
        path: path.to_owned(),
        source,
    })?;
    let bad = |why| ConfigError::SlackUrl {
        path: path.to_owned(),
        why,
    };
    let text = text.trim();
    if text.is_empty() {
        return Err(bad(
            "the file is empty; write the incoming-webhook URL in it",
        ));
    }
    parse_url(text).map_err(|_| bad("the file does not hold an http:// or https:// URL"))
}

/// Parses an `http://` or `https://` URL with a host.
pub fn parse_url(s: &str) -> Result<Uri, String> {
    let uri: Uri = s
        .parse()
        .map_err(|_| "not a URL: use http://host[:port]/path or https://...".to_owned())?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err("not an http:// or https:// URL with a host".to_owned()),
    }
}

/// Parses a duration: a whole number with a unit, `ms`, `s`, `m` or `h`
/// (`30s`, `5m`); at least one second.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration: use e.g. 30s, 5m or 1h"))?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        _ => return Err(format!("{s:?} has no unit: use ms, s, m or h, e.g. 5m")),
    };
    if duration < Duration::from_secs(1) {
        return Err(format!("{s:?} is too short: at least 1s"));
    }
    Ok(duration)
}

/// The scheme and host of a URL, the only part of it ever logged or shown
/// (its path and query may carry a token).
pub fn host_of(uri: &Uri) -> String {
    format!(
        "{}://{}",
        uri.scheme_str().unwrap_or("http"),
        uri.authority()
            .map_or("", |a| a.as_str().rsplit('@').next().unwrap_or(""))
    )
}

fn redacted<S: Serializer>(url: &Option<Uri>, s: S) -> Result<S::Ok, S::Error> {
    match url {
        Some(url) => s.serialize_str(&format!("{}/...", host_of(url))),
        None => s.serialize_none(),
    }
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, want) in [
            ("30s", Ok(Duration::from_secs(30))),
            ("5m", Ok(Duration::from_secs(300))),
            ("1h", Ok(Duration::from_secs(3600))),
            ("1500ms", Ok(Duration::from_millis(1500))),
            ("5", Err("has no unit")),
            ("m", Err("is not a duration")),
            ("500ms", Err("too short")),
            ("-5m", Err("is not a duration")),
            ("5 m", Err("has no unit")),
        ] {
            let got = parse_duration(text);
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(got), Err(want)) => assert!(got.contains(want), "{text}: {got}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn the_default_is_the_flags_defaults() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            notify: NotifyArgs,
        }
        let parsed = <Cli as clap::Parser>::try_parse_from(["vigil-controller"]).unwrap();
        assert_eq!(parsed.notify, NotifyArgs::default());
        let dir = tempfile::tempdir().unwrap();
        assert!(
            parsed.notify.resolve(dir.path()).unwrap().is_none(),
            "no sink"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "no key is created without a webhook"
        );
    }

    #[test]
    fn urls() {
        assert!(parse_url("https://hooks.slack.com/services/T/B/x").is_ok());
        assert!(parse_url("http://127.0.0.1:9000/hook").is_ok());
        for bad in [
            "ftp://x/y",
            "hooks.slack.com/services",
            "/path",
            "",
            "https://",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_the_host_of_a_url_is_shown() {
        let uri: Uri = "https://user:pw@hooks.example.com/services/SECRET?t=SECRET"
            .parse()
            .unwrap();
        assert_eq!(host_of(&uri), "https://hooks.example.com");
    }

    #[test]
    fn the_slack_file_must_hold_a_url_and_its_content_is_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("slack");
        std::fs::write(&path, "not-a-url-but-SECRET\n").unwrap();
        let e = read_slack_url(&path).unwrap_err().to_string();
        assert!(e.contains("does not hold") && !e.contains("SECRET"), "{e}");
        std::fs::write(&path, "\n").unwrap();
        assert!(
            read_slack_url(&path)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        std::fs::write(&path, "https://hooks.slack.com/services/T/B/c\n").unwrap();
        assert_eq!(
            read_slack_url(&path).unwrap().path(),
            "/services/T/B/c",
            "trimmed"
        );
        let missing = read_slack_url(&dir.path().join("nope")).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }
}
