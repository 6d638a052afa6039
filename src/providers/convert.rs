//! Pieces shared by the adapters that rebuild a conversation in another vendor's shape.

use std::collections::HashSet;

use serde_json::{json, Value};

use crate::error::GatewayError;

pub use crate::chat::json_bytes;

/// A conversation turn: role and content blocks (or parts).
pub type Turn = (&'static str, Vec<Value>);

/// Appends to the last turn when it has the same role: the vendors that need alternating roles
/// would otherwise reject (or silently merge) consecutive turns.
pub fn push_turn(turns: &mut Vec<Turn>, role: &'static str, blocks: Vec<Value>) {
    if blocks.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(blocks),
        _ => turns.push((role, blocks)),
    }
}

/// A message role no vendor conversation has.
pub fn unsupported_role(role: &str) -> GatewayError {
    GatewayError::invalid(
        format!("unsupported message role '{role}'"),
        Some("messages"),
    )
}

/// Vendors need at least one user or assistant turn.
pub fn require_turns(turns: &[Turn]) -> Result<(), GatewayError> {
    if turns.is_empty() {
        return Err(GatewayError::invalid(
            "the conversation needs at least one user or assistant message with content",
            Some("messages"),
        ));
    }
    Ok(())
}

/// The id a tool message answers, made vendor-safe by `sanitize`; it must be one of the calls of
/// the preceding assistant turn (`open_calls`), each answered once.
pub fn answered_call(
    tool_call_id: Option<&str>,
    open_calls: &mut HashSet<String>,
    sanitize: impl Fn(&str) -> String,
) -> Result<String, GatewayError> {
    let raw_id = tool_call_id.ok_or_else(|| {
        GatewayError::invalid("tool messages need a tool_call_id", Some("messages"))
    })?;
    let id = sanitize(raw_id);
    if !open_calls.remove(&id) {
        return Err(GatewayError::invalid(
            format!("tool message for '{raw_id}' does not answer a tool call of the preceding assistant message"),
            Some("messages"),
        ));
    }
    Ok(id)
}

/// Adds a tool-result block to the conversation: results lead their user turn (after earlier
/// results, before any text that follows them), as Anthropic and Bedrock require.
pub fn push_tool_result(turns: &mut Vec<Turn>, block: Value, is_result: impl Fn(&Value) -> bool) {
    match turns.last_mut() {
        Some((role, blocks)) if *role == "user" => {
            let at = blocks.iter().take_while(|b| is_result(b)).count();
            blocks.insert(at, block);
        }
        _ => turns.push(("user", vec![block])),
    }
}

/// A past tool call written as text, for a request that declares no tools: vendors that refuse
/// tool blocks without declared tools (Bedrock Converse, Anthropic) still read what happened,
/// and the model cannot call a tool the client did not offer.
pub fn tool_call_text(id: &str, name: &str, arguments: &str) -> String {
    let arguments = if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    };
    format!("[tool call {id}: {name}({arguments})]")
}

/// A past tool result written as text (see [`tool_call_text`]).
pub fn tool_result_text(id: &str, result: &str) -> String {
    format!("[tool result {id}: {result}]")
}

/// Tool-call `arguments` (a JSON text) as an object: empty means no arguments; anything that is
/// not a JSON object is the client's error.
pub fn tool_arguments(arguments: &str) -> Result<Value, GatewayError> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err(GatewayError::invalid(
            "tool call arguments must be a JSON object",
            Some("messages"),
        )),
        Err(_) => Err(GatewayError::invalid(
            "tool call arguments are not valid JSON",
            Some("messages"),
        )),
    }
}

/// The client-facing message of an upstream error. A provider's auth failure is about the
/// gateway's key for it, and its message may quote part of that key, so it is replaced.
/// `provider` prefixes the message; stream decoders pass `None` and the caller adds it.
pub fn upstream_message(provider: Option<&str>, status: u16, message: Option<String>) -> String {
    if status == 401 || status == 403 {
        let name = provider.unwrap_or("the provider");
        return format!("provider '{name}' rejected the gateway's credentials (HTTP {status})");
    }
    let text = message.unwrap_or_else(|| format!("upstream answered HTTP {status}"));
    match provider {
        Some(p) => format!("{p}: {text}"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_merge_by_role_and_skip_empty() {
        let mut turns = Vec::new();
        push_turn(&mut turns, "user", vec![json!(1)]);
        push_turn(&mut turns, "user", vec![json!(2)]);
        push_turn(&mut turns, "assistant", vec![]);
        push_turn(&mut turns, "assistant", vec![json!(3)]);
        assert_eq!(
            turns,
            vec![
                ("user", vec![json!(1), json!(2)]),
                ("assistant", vec![json!(3)])
            ]
        );
    }

    #[test]
    fn arguments() {
        assert_eq!(tool_arguments(" ").unwrap(), json!({}));
        assert_eq!(tool_arguments("{\"a\":1}").unwrap(), json!({"a": 1}));
        assert!(tool_arguments("[1]").is_err());
        assert!(tool_arguments("{").is_err());
    }

    #[test]
    fn messages() {
        assert_eq!(
            upstream_message(Some("p"), 500, Some("boom".into())),
            "p: boom"
        );
        assert_eq!(
            upstream_message(None, 502, None),
            "upstream answered HTTP 502"
        );
        assert!(upstream_message(Some("p"), 401, Some("key sk-1".into())).contains("rejected"));
    }
}
