//! Helpers shared by the validation tests: a fixed environment, and the issues a config text
//! is refused with.

use crate::config::{parse, ConfigError};

pub(super) fn env(name: &str) -> Option<String> {
    match name {
        "OPENAI_API_KEY" => Some("sk-live".into()),
        _ => None,
    }
}

pub(super) fn issues(text: &str) -> Vec<String> {
    match parse(text, env) {
        Err(ConfigError::Invalid(list)) => list.iter().map(ToString::to_string).collect(),
        Err(other) => vec![other.to_string()],
        Ok(_) => vec![],
    }
}
