//! The one failure classifier: whose fault a failed attempt was, whether another attempt may
//! follow, and the `outcome` label it is counted under.
//!
//! Errors are judged by the status the adapter mapped them to, not by the vendor's raw status:
//! Gemini answers a bad key with 400 `API_KEY_INVALID`, which its adapter turns into 401, and a
//! 401 is the provider's fault (the gateway's key), so it fails over like every vendor's bad key.

use std::time::{Duration, SystemTime};

use crate::config::RetryPolicy;
use crate::error::GatewayError;
use crate::transport::AttemptError;

pub use crate::routing::retry::Fault;

/// `Retry-After` as seconds or an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// An error the upstream answered (an error status, or an error inside an answer that had not
/// reached the client yet), with the outcome label of an error status. `direct` is a
/// `PROVIDER/MODEL` route, whose model the client chose.
pub fn upstream_error(
    error: &GatewayError,
    policy: &RetryPolicy,
    direct: bool,
) -> (Fault, &'static str) {
    // A filter's refusal of the answer says nothing about the provider, and another target
    // would be refused alike.
    if matches!(error, GatewayError::Filtered { .. }) {
        return (Fault::Request, "filtered");
    }
    let status = error.status();
    match status {
        // The client named a model the vendor does not have: its mistake, which must not
        // switch the provider off for everyone else.
        404 if direct => (Fault::Request, "4xx"),
        429 => (
            Fault::RateLimited {
                retry_after: error.retry_after().and_then(parse_retry_after),
                retryable: policy.retries_status(429),
            },
            "429",
        ),
        // A provider that rejects the gateway's own key, or does not know the model, is broken
        // for every request: the next target may well answer.
        401 | 403 | 404 => (
            Fault::Provider {
                retryable: policy.retries_status(status) || policy.retries_status(502),
            },
            "4xx",
        ),
        400..=499 => (Fault::Request, "4xx"),
        _ => (
            Fault::Provider {
                retryable: policy.retries_status(status),
            },
            "5xx",
        ),
    }
}

/// No usable answer arrived: the client error, the fault and the outcome label.
pub fn transport_error(
    provider: &str,
    err: AttemptError,
    policy: &RetryPolicy,
) -> (GatewayError, Fault, &'static str) {
    let (error, retryable, outcome) = match err {
        AttemptError::Timeout { phase, after } => (
            GatewayError::timeout(provider, phase, after),
            policy.retries_timeout(),
            "timeout",
        ),
        AttemptError::Connect(why) => (
            GatewayError::BadGateway(format!("provider '{provider}' is unreachable: {why}")),
            policy.retries_connect(),
            "connect_error",
        ),
        AttemptError::Io(why) => (
            GatewayError::BadGateway(format!("provider '{provider}' failed: {why}")),
            policy.retries_connect(),
            "io_error",
        ),
        AttemptError::Unsendable(why) => {
            return (
                GatewayError::Internal(format!(
                    "a request to provider '{provider}' cannot be sent: {why}"
                )),
                Fault::Request,
                "invalid_request",
            )
        }
    };
    (error, Fault::Provider { retryable }, outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RetryOn;

    fn policy(on: Vec<RetryOn>) -> RetryPolicy {
        RetryPolicy {
            on,
            ..RetryPolicy::default()
        }
    }

    fn upstream(status: u16, retry_after: Option<&str>) -> GatewayError {
        GatewayError::Upstream {
            status,
            message: "m".into(),
            kind: "k".into(),
            code: None,
            param: None,
            retry_after: retry_after.map(str::to_string),
        }
    }

    #[test]
    fn bad_keys_fail_over_and_request_errors_do_not() {
        let p = policy(vec![RetryOn::ServerErrors]);
        // Every vendor's bad key arrives here as 401/403, whatever status the vendor used.
        for status in [401, 403, 404] {
            assert_eq!(
                upstream_error(&upstream(status, None), &p, false),
                (Fault::Provider { retryable: true }, "4xx")
            );
        }
        assert_eq!(
            upstream_error(&upstream(400, None), &p, false),
            (Fault::Request, "4xx")
        );
        assert_eq!(
            upstream_error(&upstream(422, None), &p, false),
            (Fault::Request, "4xx")
        );
        assert_eq!(
            upstream_error(&upstream(503, None), &p, false),
            (Fault::Provider { retryable: true }, "5xx")
        );
        assert_eq!(
            upstream_error(&GatewayError::BadGateway("x".into()), &p, false),
            (Fault::Provider { retryable: true }, "5xx")
        );
        assert_eq!(
            upstream_error(&upstream(429, Some("7")), &p, false),
            (
                Fault::RateLimited {
                    retry_after: Some(Duration::from_secs(7)),
                    retryable: false
                },
                "429"
            )
        );
        // On a direct route the client chose the model: the vendor not knowing it is the
        // client's mistake; a bad key is still the provider's.
        assert_eq!(
            upstream_error(&upstream(404, None), &p, true),
            (Fault::Request, "4xx")
        );
        assert_eq!(
            upstream_error(&upstream(401, None), &p, true),
            (Fault::Provider { retryable: true }, "4xx")
        );
        let none = policy(vec![]);
        assert_eq!(
            upstream_error(&upstream(401, None), &none, false),
            (Fault::Provider { retryable: false }, "4xx")
        );
    }

    #[test]
    fn retry_after_seconds_and_dates() {
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(" 1.5 "),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_retry_after("-1"), None);
        let later = SystemTime::now() + Duration::from_secs(30);
        let parsed = parse_retry_after(&httpdate::fmt_http_date(later)).unwrap();
        assert!(
            parsed <= Duration::from_secs(30) && parsed >= Duration::from_secs(28),
            "{parsed:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
