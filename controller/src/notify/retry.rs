//! When to try a delivery again, pure: exponential backoff with jitter,
//! bounded attempts, and a receiver's `Retry-After` honoured (capped).

use std::time::Duration;

/// Attempts per message, the first included.
pub const ATTEMPTS: u32 = 6;
/// The first retry waits about this long (half of it to all of it).
pub const BASE: Duration = Duration::from_secs(1);
/// No backoff is longer than this.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A `Retry-After` longer than this is cut to it.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// How one attempt ended, as far as retrying goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Delivered.
    Done,
    /// Worth another try (a network error, a timeout, 408, 425, 429,
    /// 5xx), after `retry_after` when the receiver said so.
    Again {
        /// The receiver's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// Refused for good (another 4xx, e.g. a revoked Slack URL): retrying
    /// would not help.
    Refused,
}

/// Classifies an HTTP status.
pub fn classify(status: u16, retry_after: Option<Duration>) -> Verdict {
    match status {
        200..=299 => Verdict::Done,
        408 | 425 | 429 | 500..=599 => Verdict::Again { retry_after },
        _ => Verdict::Refused,
    }
}

/// The wait before attempt `attempt + 1`, after `attempt` (from 1) failed;
/// `None` when no attempt is left. `jitter` is uniform in `[0, 1)`: the
/// backoff is `b/2 + jitter * b/2` with `b = BASE * 2^(attempt-1)` capped at
/// [`MAX_BACKOFF`]; a `Retry-After` wins when longer.
pub fn delay(attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Option<Duration> {
    if attempt >= ATTEMPTS {
        return None;
    }
    let exp = BASE
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    let jitter = jitter.clamp(0.0, 1.0);
    let backoff = exp / 2 + exp.mul_f64(jitter) / 2;
    Some(match retry_after {
        Some(after) => after.min(MAX_RETRY_AFTER).max(backoff),
        None => backoff,
    })
}

/// Parses `Retry-After` in seconds (the HTTP-date form is ignored: the
/// backoff applies).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A uniform number in `[0, 1)` from the OS (0.5 if it fails).
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 4];
    match getrandom::fill(&mut bytes) {
        Ok(()) => f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0),
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let after = Some(Duration::from_secs(3));
        for (status, want) in [
            (200, Verdict::Done),
            (204, Verdict::Done),
            (500, Verdict::Again { retry_after: None }),
            (503, Verdict::Again { retry_after: after }),
            (429, Verdict::Again { retry_after: after }),
            (408, Verdict::Again { retry_after: None }),
            (400, Verdict::Refused),
            (403, Verdict::Refused),
            (404, Verdict::Refused),
            (301, Verdict::Refused),
        ] {
            let retry_after = if matches!(status, 503 | 429) {
                after
            } else {
                None
            };
            assert_eq!(classify(status, retry_after), want, "{status}");
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        for (attempt, retry_after, jitter, want) in [
            (1, None, 0.0, Some(ms(500))),
            (1, None, 0.999_999, Some(ms(999))),
            (2, None, 0.0, Some(s(1))),
            (3, None, 0.5, Some(ms(3000))),
            (5, None, 0.0, Some(s(8))),
            // Retry-After wins when longer, is capped, never shortens.
            (1, Some(s(30)), 0.0, Some(s(30))),
            (1, Some(s(3600)), 0.0, Some(MAX_RETRY_AFTER)),
            (5, Some(s(1)), 0.0, Some(s(8))),
            // No attempt left.
            (ATTEMPTS, None, 0.0, None),
            (ATTEMPTS, Some(s(1)), 0.0, None),
        ] {
            let got = delay(attempt, retry_after, jitter).map(|d| {
                // Round to milliseconds (float jitter).
                Duration::from_millis(d.as_millis() as u64)
            });
            assert_eq!(got, want, "attempt {attempt}, {retry_after:?}, {jitter}");
        }
        let long = delay(ATTEMPTS - 1, None, 0.999).unwrap();
        assert!(long <= MAX_BACKOFF, "{long:?}");
    }

    #[test]
    fn retry_after_in_seconds() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn jitter_is_in_range() {
        for _ in 0..100 {
            let j = jitter();
            assert!((0.0..1.0).contains(&j), "{j}");
        }
    }
}
