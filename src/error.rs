//! The errors a client can receive, independent of the dialect they are rendered in.
//!
//! Each variant knows its HTTP status and its OpenAI `type`/`code`; the dialect modules turn it into
//! bytes. Messages are written for the client: they name models and providers, never keys or
//! upstream URLs.

use std::time::Duration;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GatewayError {
    #[error("{message}")]
    InvalidRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("the API key '{key}' may not use model '{model}'")]
    ModelNotAllowed { key: String, model: String },
    /// The key has a budget and the model has no price to count against it.
    #[error(
        "the API key '{key}' has a budget, and model '{model}' has no price to count against it; \
         give its targets a `price` (or use a model the price catalog knows)"
    )]
    ModelNotPriced { key: String, model: String },
    #[error("{0}")]
    UnknownModel(String),
    #[error("no route for {method} {path}")]
    NotFound { method: String, path: String },
    /// A stored response that does not exist, expired, or belongs to another key.
    #[error("{message}")]
    ResponseNotFound {
        message: String,
        param: Option<&'static str>,
    },
    /// A filter refused the request or its answer.
    #[error("{message}")]
    Filtered {
        status: u16,
        message: String,
        code: &'static str,
    },
    /// The store of Responses answers cannot be reached.
    #[error("{0}")]
    StoreUnavailable(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: usize },
    /// The client key is over one of its own limits or its budget.
    #[error("{message}")]
    KeyLimited {
        message: String,
        code: &'static str,
        retry_after: Option<String>,
    },
    /// The limits backend cannot be reached and `state.failure_mode` is `fail_closed`.
    #[error("{0}")]
    LimitsUnavailable(String),
    /// The upstream answered with an error status; its message is passed on.
    #[error("{message}")]
    Upstream {
        status: u16,
        message: String,
        kind: String,
        code: Option<String>,
        param: Option<String>,
        retry_after: Option<String>,
    },
    /// Every attempt failed without an upstream answer to pass on (connect errors, resets).
    #[error("{0}")]
    BadGateway(String),
    #[error("{0}")]
    GatewayTimeout(String),
    #[error("{0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(message: impl Into<String>, param: Option<&'static str>) -> Self {
        GatewayError::InvalidRequest {
            message: message.into(),
            param,
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            GatewayError::InvalidRequest { .. } => 400,
            GatewayError::Unauthorized => 401,
            GatewayError::ModelNotAllowed { .. } | GatewayError::ModelNotPriced { .. } => 403,
            GatewayError::UnknownModel(_)
            | GatewayError::NotFound { .. }
            | GatewayError::ResponseNotFound { .. } => 404,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::BodyTooLarge { .. } => 413,
            GatewayError::KeyLimited { .. } => 429,
            GatewayError::LimitsUnavailable(_) | GatewayError::StoreUnavailable(_) => 503,
            GatewayError::Filtered { status, .. } => *status,
            GatewayError::Upstream { status, .. } => *status,
            GatewayError::BadGateway(_) => 502,
            GatewayError::GatewayTimeout(_) => 504,
            GatewayError::Internal(_) => 500,
        }
    }

    /// OpenAI's `error.type`.
    pub fn openai_type(&self) -> &str {
        match self {
            GatewayError::InvalidRequest { .. }
            | GatewayError::UnknownModel(_)
            | GatewayError::NotFound { .. }
            | GatewayError::ResponseNotFound { .. }
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::BodyTooLarge { .. } => "invalid_request_error",
            GatewayError::Unauthorized => "authentication_error",
            GatewayError::ModelNotAllowed { .. } | GatewayError::ModelNotPriced { .. } => {
                "permission_error"
            }
            GatewayError::KeyLimited { .. } => "rate_limit_error",
            GatewayError::LimitsUnavailable(_) | GatewayError::StoreUnavailable(_) => {
                "server_error"
            }
            GatewayError::Upstream { kind, .. } => kind,
            GatewayError::Filtered { status, .. } => match status {
                400..=499 => "invalid_request_error",
                _ => "server_error",
            },
            GatewayError::BadGateway(_) | GatewayError::Internal(_) => "server_error",
            GatewayError::GatewayTimeout(_) => "timeout",
        }
    }

    /// OpenAI's `error.code`.
    pub fn openai_code(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { .. } => Some("invalid_request"),
            GatewayError::Unauthorized => Some("invalid_api_key"),
            GatewayError::ModelNotAllowed { .. } => Some("model_not_allowed"),
            GatewayError::ModelNotPriced { .. } => Some("model_not_priced"),
            GatewayError::UnknownModel(_) => Some("model_not_found"),
            GatewayError::NotFound { .. } | GatewayError::ResponseNotFound { .. } => {
                Some("not_found")
            }
            GatewayError::StoreUnavailable(_) => Some("store_unavailable"),
            GatewayError::Filtered { code, .. } => Some(code),
            GatewayError::MethodNotAllowed { .. } => Some("method_not_allowed"),
            GatewayError::BodyTooLarge { .. } => Some("request_too_large"),
            GatewayError::KeyLimited { code, .. } => Some(code),
            GatewayError::LimitsUnavailable(_) => Some("limits_unavailable"),
            GatewayError::Upstream { code, .. } => code.as_deref(),
            GatewayError::BadGateway(_) => Some("upstream_error"),
            GatewayError::GatewayTimeout(_) => Some("upstream_timeout"),
            GatewayError::Internal(_) => Some("internal_error"),
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::InvalidRequest { param, .. }
            | GatewayError::ResponseNotFound { param, .. } => *param,
            GatewayError::Upstream { param, .. } => param.as_deref(),
            _ => None,
        }
    }

    /// The `Retry-After` value to send with the error, if any.
    pub fn retry_after(&self) -> Option<&str> {
        match self {
            GatewayError::Upstream { retry_after, .. }
            | GatewayError::KeyLimited { retry_after, .. } => retry_after.as_deref(),
            _ => None,
        }
    }

    pub fn timeout(provider: &str, phase: &str, after: Duration) -> Self {
        GatewayError::GatewayTimeout(format!(
            "provider '{provider}' timed out ({phase}) after {} ms",
            after.as_millis()
        ))
    }
}
