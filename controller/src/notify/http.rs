//! The HTTP side of a sink: one POST per attempt through hyper-util's
//! client (rustls with the Mozilla roots for `https://`), a timeout on the
//! connection and on the whole exchange, and the answer classified for
//! [`super::retry`]. Errors never show the URL (it may hold a secret).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::dedup::Message;
use super::payload;
use super::retry::{self, Verdict};

/// Time to connect (TCP and TLS).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for one whole attempt: connect, send, read the answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The most of an answer's body that is read (then it is dropped).
const MAX_ANSWER: usize = 64 * 1024;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// The receiver answered with a status other than 2xx.
    #[error("the receiver answered HTTP {status}")]
    Status {
        /// The status.
        status: u16,
        /// Its `Retry-After`, in seconds.
        retry_after: Option<Duration>,
    },
    /// No answer in time.
    #[error("no answer within {} s", .0.as_secs())]
    Timeout(Duration),
    /// The receiver could not be reached (DNS, TCP, TLS) or the exchange
    /// broke off.
    #[error("cannot reach the receiver: {0}")]
    Unreachable(String),
    /// The TLS setup failed (no usable crypto provider).
    #[error("cannot set up TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The request could not be built.
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
}

impl DeliveryError {
    /// Whether to try again.
    pub fn verdict(&self) -> Verdict {
        match self {
            Self::Status {
                status,
                retry_after,
            } => retry::classify(*status, *retry_after),
            Self::Timeout(_) | Self::Unreachable(_) => Verdict::Again { retry_after: None },
            Self::Tls(_) | Self::Request(_) => Verdict::Refused,
        }
    }
}

/// Sends one message, one attempt; `delivery` names the message (the same
/// on its retries).
pub trait Transport: Send + Sync + 'static {
    /// One attempt.
    fn send(
        &self,
        message: &Message,
        delivery: &str,
    ) -> impl Future<Output = Result<(), DeliveryError>> + Send;
}

/// How the body is written.
#[derive(Clone)]
pub enum Format {
    /// Slack's `text` + `blocks`.
    Slack,
    /// The alert JSON, signed with this key.
    Webhook {
        /// The HMAC-SHA256 key.
        key: Arc<[u8]>,
    },
}

/// A sink reached over HTTP(S).
#[derive(Clone)]
pub struct HttpSink {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    url: Uri,
    format: Format,
}

impl HttpSink {
    /// A sink posting to `url` (kept secret) in `format`.
    pub fn new(url: Uri, format: Format) -> Result<Self, DeliveryError> {
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_connect_timeout(Some(CONNECT_TIMEOUT));
        tcp.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_http1()
            .wrap_connector(tcp);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(https);
        Ok(Self {
            client,
            url,
            format,
        })
    }

    fn request(
        &self,
        message: &Message,
        delivery: &str,
    ) -> Result<Request<Full<Bytes>>, DeliveryError> {
        let builder = Request::post(self.url.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("vigil-controller/", env!("CARGO_PKG_VERSION")),
            );
        let request = match &self.format {
            Format::Slack => builder.body(Full::new(Bytes::from(payload::slack_body(message))))?,
            Format::Webhook { key } => {
                let body = payload::webhook_body(message);
                // Signed at each attempt: a retry carries a fresh timestamp.
                let timestamp = crate::model::now_unix();
                builder
                    .header(payload::TIMESTAMP_HEADER, timestamp.to_string())
                    .header(
                        payload::SIGNATURE_HEADER,
                        payload::signature(key, timestamp, &body),
                    )
                    .header(payload::DELIVERY_HEADER, delivery)
                    .body(Full::new(Bytes::from(body)))?
            }
        };
        Ok(request)
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<(), DeliveryError> {
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| DeliveryError::Unreachable(chain(&e)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(retry::parse_retry_after);
        // Read (a bounded part of) the answer so the connection is reused.
        let _ = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await;
        if status.is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status {
                status: status.as_u16(),
                retry_after,
            })
        }
    }
}

impl Transport for HttpSink {
    async fn send(&self, message: &Message, delivery: &str) -> Result<(), DeliveryError> {
        let request = self.request(message, delivery)?;
        tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request))
            .await
            .map_err(|_| DeliveryError::Timeout(REQUEST_TIMEOUT))?
    }
}

/// An error and its causes, `: `-joined (hyper-util's own message is only
/// "client error (Connect)").
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}
