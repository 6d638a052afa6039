//! The state of the Responses API: answers kept for `previous_response_id` and for
//! `GET|DELETE /v1/responses/{id}`, in the [`store`](crate::store), scoped
//! to the client key that made them (another key is told they do not exist).
//!
//! A stored record is `{"input": [...], "response": {...}}`: every input item of the
//! conversation up to this response (the earlier turns' input and output, then this request's
//! input; never `instructions`, which OpenAI does not carry over either) and the response object
//! as the client received it. A continued conversation is that input followed by the response's
//! output.

use bytes::Bytes;
use pingora::protocols::http::ServerSession;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::ctx::RequestCtx;
use super::respond;
use crate::dialect::responses::ResponsesRequest;
use crate::error::GatewayError;
use crate::routing::{ClientKey, RoutingTable};
use crate::store::RESPONSES;

#[derive(Deserialize)]
struct Record<'a> {
    #[serde(borrow)]
    input: &'a RawValue,
    #[serde(borrow)]
    response: &'a RawValue,
}

#[derive(Deserialize)]
struct Output<'a> {
    #[serde(default, borrow)]
    output: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct Identified {
    #[serde(default)]
    id: Option<String>,
}

fn unavailable(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::StoreUnavailable(format!("stored responses are unavailable: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> GatewayError {
    GatewayError::Internal(format!("a stored response is unreadable: {e}"))
}

/// `[a..., b...]` from two JSON arrays, without parsing their items.
fn concat_arrays(a: &str, b: &str) -> Result<Vec<u8>, GatewayError> {
    let inner = |s: &str| -> Result<String, GatewayError> {
        let t = s.trim();
        t.strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .map(|t| t.trim().to_string())
            .ok_or_else(|| corrupt("items are not a list"))
    };
    let (a, b) = (inner(a)?, inner(b)?);
    let mut out = Vec::with_capacity(a.len() + b.len() + 3);
    out.push(b'[');
    out.extend_from_slice(a.as_bytes());
    if !a.is_empty() && !b.is_empty() {
        out.push(b',');
    }
    out.extend_from_slice(b.as_bytes());
    out.push(b']');
    Ok(out)
}

/// Loads the conversation a request continues into [`ResponsesRequest::history`].
pub(super) async fn load_history(
    request: &mut ResponsesRequest,
    owner: Option<&str>,
) -> Result<(), GatewayError> {
    let Some(id) = request.previous_response_id.as_deref() else {
        return Ok(());
    };
    let stored = RESPONSES
        .get(id, owner)
        .await
        .map_err(unavailable)?
        .ok_or_else(|| GatewayError::ResponseNotFound {
            message: format!("Previous response with id '{id}' not found."),
            param: Some("previous_response_id"),
        })?;
    let record: Record = serde_json::from_slice(&stored).map_err(corrupt)?;
    let output: Output = serde_json::from_str(record.response.get()).map_err(corrupt)?;
    let output = output.output.map_or("[]", RawValue::get);
    request.history = Some(Bytes::from(concat_arrays(record.input.get(), output)?));
    Ok(())
}

/// A response object's `id`: read off its start when it leads (the gateway's encoder and
/// OpenAI both put it first, and the rest of a large answer need not be scanned), else parsed.
fn response_id(body: &[u8]) -> Option<String> {
    if let Some(rest) = body.strip_prefix(br#"{"id":""#) {
        if let Some(end) = rest.iter().position(|b| *b == b'"' || *b == b'\\') {
            if rest[end] == b'"' {
                return std::str::from_utf8(&rest[..end]).ok().map(str::to_string);
            }
        }
    }
    serde_json::from_slice::<Identified>(body)
        .ok()
        .and_then(|r| r.id)
}

/// Keeps an answered request's response (`body`, as the client received it) when it asked to
/// be stored. A store that fails is logged, not sent to the client: its answer is complete.
pub(crate) async fn keep(request: &ResponsesRequest, owner: Option<&str>, body: &[u8]) {
    if !request.store {
        return;
    }
    if let Err(e) = try_keep(request, owner, body).await {
        log::warn!("response not stored: {e}");
    }
}

async fn try_keep(
    request: &ResponsesRequest,
    owner: Option<&str>,
    body: &[u8],
) -> Result<(), GatewayError> {
    let id = response_id(body).ok_or_else(|| corrupt("the response has no id"))?;
    let input = request.input_items()?;
    let input = match &request.history {
        Some(history) => concat_arrays(
            std::str::from_utf8(history).map_err(corrupt)?,
            std::str::from_utf8(&input).map_err(corrupt)?,
        )?,
        None => input,
    };
    let mut record = Vec::with_capacity(input.len() + body.len() + 24);
    record.extend_from_slice(b"{\"input\":");
    record.extend_from_slice(&input);
    record.extend_from_slice(b",\"response\":");
    record.extend_from_slice(body);
    record.push(b'}');
    RESPONSES
        .put(&id, owner, Bytes::from(record))
        .await
        .map_err(unavailable)
}

/// `GET /v1/responses/{id}` and `DELETE /v1/responses/{id}`.
pub(super) async fn handle(
    session: &mut ServerSession,
    ctx: &mut RequestCtx,
    table: &RoutingTable,
    delete: bool,
    id: &str,
) -> pingora::Result<()> {
    let answer = match super::authenticate(session, table) {
        Ok(key) => {
            ctx.client_key = key.map(|k| k.name.clone());
            answer(key, delete, id).await
        }
        Err(err) => Err(err),
    };
    match answer {
        Ok(body) => respond::json(session, ctx, 200, body, None).await,
        Err(err) => respond::error(session, ctx, &err).await,
    }
}

async fn answer(key: Option<&ClientKey>, delete: bool, id: &str) -> Result<Bytes, GatewayError> {
    let owner = key.map(|k| k.name.as_str());
    let not_found = || GatewayError::ResponseNotFound {
        message: format!("Response with id '{id}' not found."),
        param: None,
    };
    if delete {
        if !RESPONSES.delete(id, owner).await.map_err(unavailable)? {
            return Err(not_found());
        }
        let body = serde_json::json!({"id": id, "object": "response", "deleted": true});
        return Ok(crate::chat::json_bytes(&body));
    }
    let stored = RESPONSES
        .get(id, owner)
        .await
        .map_err(unavailable)?
        .ok_or_else(not_found)?;
    let record: Record = serde_json::from_slice(&stored).map_err(corrupt)?;
    Ok(Bytes::copy_from_slice(record.response.get().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_read_off_the_start_or_parsed() {
        assert_eq!(
            response_id(br#"{"id":"resp_1","x":1}"#).as_deref(),
            Some("resp_1")
        );
        assert_eq!(
            response_id(br#"{"object":"response","id":"resp_2"}"#).as_deref(),
            Some("resp_2")
        );
        assert_eq!(
            response_id(br#"{"id":"a\"b","x":1}"#).as_deref(),
            Some("a\"b")
        );
        assert_eq!(response_id(b"{}"), None);
    }

    #[test]
    fn arrays_join_without_reparsing() {
        assert_eq!(concat_arrays("[1, 2]", " [3] ").unwrap(), b"[1, 2,3]");
        assert_eq!(concat_arrays("[]", "[3]").unwrap(), b"[3]");
        assert_eq!(concat_arrays("[1]", "[ ]").unwrap(), b"[1]");
        assert!(concat_arrays("{}", "[]").is_err());
    }
}
