//! Responses API answers from hosts that serve it (OpenAI, Azure, opted-in compatible hosts),
//! passed through to Responses clients: JSON bodies as they came with their usage read, streams
//! event by event with their usage read from the closing `response.completed` (or
//! `response.incomplete`), priced there when the target has a price, and the final response
//! object kept for the gateway's store.
//!
//! An upstream `error` or `response.failed` event is a failure of the attempt: before anything
//! reached the client another target may still answer; after, the stream ends with the
//! gateway's own `error` and `response.failed` events, numbered on from the upstream's.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use crate::accounting::{round_usd, Usage};
use crate::dialect::responses::encode::failure_events;
use crate::error::GatewayError;
use crate::providers::sse::SseEvent;
use crate::providers::stream::{SseFrame, SseHandler};
use crate::providers::{Answer, StreamDecoder, StreamFailure, StreamSettings};

/// The Responses API's `usage` object.
#[derive(Debug, Default, Deserialize)]
pub struct ResponsesUsageWire {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<InputDetails>,
    #[serde(default)]
    output_tokens_details: Option<OutputDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct InputDetails {
    #[serde(default)]
    cached_tokens: u64,
}

#[derive(Debug, Default, Deserialize)]
struct OutputDetails {
    #[serde(default)]
    reasoning_tokens: u64,
}

impl ResponsesUsageWire {
    pub fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.input_tokens,
            completion_tokens: self.output_tokens,
            cached_tokens: self
                .input_tokens_details
                .as_ref()
                .map_or(0, |d| d.cached_tokens),
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens),
            cache_write_tokens: 0,
        }
    }
}

/// A Responses JSON answer, passed through with its usage read.
pub fn decode_responses_json(body: Bytes) -> Result<Answer, StreamFailure> {
    #[derive(Deserialize)]
    struct Probe {
        #[serde(default)]
        usage: Option<ResponsesUsageWire>,
        #[serde(default)]
        output: Option<serde::de::IgnoredAny>,
    }
    let probe: Probe = serde_json::from_slice(&body)
        .map_err(|e| StreamFailure::Malformed(format!("response is not a JSON object: {e}")))?;
    if probe.output.is_none() {
        return Err(StreamFailure::Malformed(
            "response object without output".into(),
        ));
    }
    Ok(Answer::Native {
        usage: probe.usage.map(|u| u.usage()),
        body,
    })
}

/// The fields of a stream event the relay looks at.
#[derive(Deserialize)]
struct EventProbe<'a> {
    #[serde(rename = "type", borrow)]
    kind: &'a str,
    #[serde(default)]
    sequence_number: Option<u64>,
    #[serde(default, borrow)]
    response: Option<&'a RawValue>,
    #[serde(default)]
    code: Option<Value>,
    #[serde(default)]
    message: Option<String>,
}

/// What a stream's `response.created` said of the response, for a failure's own events.
#[derive(Default)]
struct Started {
    response: Map<String, Value>,
}

pub struct ResponsesRelay {
    settings: StreamSettings,
    usage: Option<Usage>,
    done: bool,
    next_sequence: u64,
    started: Option<Started>,
    finished: Option<Bytes>,
}

/// The relay of a Responses stream from a host that serves the API.
pub fn responses_stream_relay(settings: StreamSettings) -> Box<dyn StreamDecoder> {
    Box::new(SseFrame::new(ResponsesRelay {
        settings,
        usage: None,
        done: false,
        next_sequence: 0,
        started: None,
        finished: None,
    }))
}

fn upstream_failure(code: Option<&Value>, message: Option<&str>) -> StreamFailure {
    let code = code.and_then(Value::as_str).map(str::to_string);
    StreamFailure::Upstream(Box::new(GatewayError::Upstream {
        status: 502,
        message: message.unwrap_or("the response failed").to_string(),
        kind: "server_error".into(),
        code,
        param: None,
        retry_after: None,
    }))
}

impl ResponsesRelay {
    /// The closing event's response with `usage.cost` added (when priced), kept as the
    /// stored answer; returns the event's new data.
    fn close(&mut self, data: &str, response: &RawValue) -> Result<String, StreamFailure> {
        let mut object: Map<String, Value> = serde_json::from_str(response.get())
            .map_err(|e| StreamFailure::Malformed(format!("closing event: {e}")))?;
        if let Some(usage) = object.get("usage") {
            let wire: ResponsesUsageWire = serde_json::from_value(usage.clone())
                .map_err(|e| StreamFailure::Malformed(format!("usage: {e}")))?;
            let usage = wire.usage();
            self.usage = Some(usage);
            if let (Some(price), Some(Value::Object(fields))) =
                (self.settings.price, object.get_mut("usage"))
            {
                fields.insert("cost".into(), json!(round_usd(usage.cost(&price))));
            }
        }
        let response = Value::Object(object);
        self.finished = Some(crate::chat::json_bytes(&response));
        let mut event: Map<String, Value> = serde_json::from_str(data)
            .map_err(|e| StreamFailure::Malformed(format!("closing event: {e}")))?;
        event.insert("response".into(), response);
        Ok(Value::Object(event).to_string())
    }
}

fn write_event(out: &mut Vec<u8>, kind: &str, data: &str) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(kind.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(b"\n\n");
}

impl SseHandler<Vec<u8>> for ResponsesRelay {
    fn event(&mut self, event: SseEvent, out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        if self.done || event.data.is_empty() || event.data == "[DONE]" {
            return Ok(());
        }
        let probe: EventProbe = serde_json::from_str(&event.data)
            .map_err(|e| StreamFailure::Malformed(format!("stream event: {e}")))?;
        if let Some(n) = probe.sequence_number {
            self.next_sequence = n + 1;
        }
        match probe.kind {
            "error" => Err(upstream_failure(
                probe.code.as_ref(),
                probe.message.as_deref(),
            )),
            "response.failed" => {
                let error = probe
                    .response
                    .and_then(|r| serde_json::from_str::<Map<String, Value>>(r.get()).ok())
                    .and_then(|mut r| r.remove("error"))
                    .unwrap_or(Value::Null);
                Err(upstream_failure(
                    error.get("code"),
                    error.get("message").and_then(Value::as_str),
                ))
            }
            "response.completed" | "response.incomplete" => {
                let Some(response) = probe.response else {
                    return Err(StreamFailure::Malformed(format!(
                        "{} without a response",
                        probe.kind
                    )));
                };
                let data = self.close(&event.data, response)?;
                self.done = true;
                write_event(out, probe.kind, &data);
                Ok(())
            }
            kind => {
                if kind == "response.created" {
                    let response = probe
                        .response
                        .and_then(|r| serde_json::from_str(r.get()).ok())
                        .unwrap_or_default();
                    self.started = Some(Started { response });
                }
                write_event(out, kind, &event.data);
                Ok(())
            }
        }
    }

    fn end(&mut self, _out: &mut Vec<u8>) -> Result<(), StreamFailure> {
        if self.done {
            Ok(())
        } else {
            Err(StreamFailure::Truncated)
        }
    }

    fn usage(&self) -> Option<Usage> {
        self.usage
    }

    fn fail(&mut self, error: &GatewayError, out: &mut Vec<u8>) -> bool {
        let response = self.started.take().unwrap_or_default().response;
        self.next_sequence = failure_events(self.next_sequence, response, error, out);
        true
    }

    fn finished(&mut self) -> Option<Bytes> {
        self.finished.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Price;

    fn frames(out: &[u8]) -> Vec<(String, Value)> {
        std::str::from_utf8(out)
            .unwrap()
            .split("\n\n")
            .filter(|f| !f.is_empty())
            .map(|f| {
                let (event, data) = f.split_once('\n').unwrap();
                (
                    event.trim_start_matches("event: ").to_string(),
                    serde_json::from_str(data.trim_start_matches("data: ")).unwrap(),
                )
            })
            .collect()
    }

    const STREAM: &str = concat!(
        "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_up\",\"object\":\"response\",\"status\":\"in_progress\",\"model\":\"gpt-4.1\",\"output\":[],\"usage\":null}}\n\n",
        "event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":1,\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"Hi\"}\n\n",
        "event: response.completed\ndata: {\"type\":\"response.completed\",\"sequence_number\":2,\"response\":{\"id\":\"resp_up\",\"object\":\"response\",\"status\":\"completed\",\"model\":\"gpt-4.1\",\"output\":[],\"usage\":{\"input_tokens\":10,\"input_tokens_details\":{\"cached_tokens\":4},\"output_tokens\":3,\"output_tokens_details\":{\"reasoning_tokens\":1},\"total_tokens\":13}}}\n\n",
    );

    #[test]
    fn relays_events_reads_usage_prices_and_keeps_the_final_response() {
        let price = Price {
            input_per_mtok: 1_000_000.0,
            output_per_mtok: 1_000_000.0,
            ..Price::default()
        };
        let mut relay = responses_stream_relay(StreamSettings {
            include_usage: true,
            price: Some(price),
        });
        let mut out = Vec::new();
        // A byte at a time: the frame must not care how the upstream cut it.
        for byte in STREAM.as_bytes() {
            relay.push(std::slice::from_ref(byte), &mut out).unwrap();
        }
        relay.finish(&mut out).unwrap();
        let frames = frames(&out);
        let kinds: Vec<&str> = frames.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.output_text.delta",
                "response.completed"
            ]
        );
        assert_eq!(frames[1].1["delta"], "Hi");
        assert_eq!(frames[2].1["response"]["usage"]["cost"], json!(13.0));
        let usage = relay.usage().unwrap();
        assert_eq!(
            (
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.cached_tokens,
                usage.reasoning_tokens
            ),
            (10, 3, 4, 1)
        );
        let stored: Value = serde_json::from_slice(&relay.finished().unwrap()).unwrap();
        assert_eq!(stored["id"], "resp_up");
        assert_eq!(stored["usage"]["cost"], json!(13.0));
        assert!(relay.finished().is_none(), "taken once");
    }

    #[test]
    fn an_upstream_failure_fails_the_attempt_and_a_cut_stream_is_truncated() {
        let mut relay = responses_stream_relay(StreamSettings::default());
        let mut out = Vec::new();
        let failed = "event: response.failed\ndata: {\"type\":\"response.failed\",\"sequence_number\":3,\"response\":{\"id\":\"r\",\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}\n\n";
        match relay.push(failed.as_bytes(), &mut out) {
            Err(StreamFailure::Upstream(err)) => assert!(err.to_string().contains("boom")),
            other => panic!("expected an upstream failure, got {other:?}"),
        }
        let mut relay = responses_stream_relay(StreamSettings::default());
        relay
            .push(
                &STREAM.as_bytes()[..STREAM.find("event: response.completed").unwrap()],
                &mut out,
            )
            .unwrap();
        assert!(matches!(
            relay.finish(&mut out),
            Err(StreamFailure::Truncated)
        ));
        // The gateway's own failure events number on from the upstream's.
        let mut tail = Vec::new();
        assert!(relay.fail(&GatewayError::BadGateway("cut".into()), &mut tail));
        let frames = frames(&tail);
        assert_eq!(frames[0].0, "error");
        assert_eq!(frames[0].1["sequence_number"], 2);
        assert_eq!(frames[1].0, "response.failed");
        assert_eq!(frames[1].1["sequence_number"], 3);
        assert_eq!(frames[1].1["response"]["id"], "resp_up");
    }

    #[test]
    fn json_answers_pass_through_with_usage() {
        let body = Bytes::from_static(br#"{"id":"resp_1","object":"response","output":[],"usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}"#);
        let Answer::Native { body: out, usage } = decode_responses_json(body.clone()).unwrap()
        else {
            panic!("native answer expected");
        };
        assert_eq!(out, body);
        assert_eq!(usage.unwrap().total(), 7);
        assert!(decode_responses_json(Bytes::from_static(b"{\"id\":1}")).is_err());
    }
}
