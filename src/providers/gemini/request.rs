//! Canonical request → Gemini `GenerateContentRequest` (docs/translation.md §5.4).

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::schema::sanitize_schema;
use super::*;
use crate::chat::{self, parse_data_url, Content, ContentPart};
use crate::providers::convert::{push_turn, require_turns, tool_arguments, unsupported_role, Turn};

/// Guesses a media type from a URL's extension (Gemini needs one for `fileData`).
fn mime_from_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    match path.rsplit('.').next() {
        Some("png") => "image/png",
        Some("gif") => "image/gif",
        Some("webp") => "image/webp",
        Some("heic") => "image/heic",
        Some("heif") => "image/heif",
        Some("pdf") => "application/pdf",
        Some("mp3") => "audio/mp3",
        Some("wav") => "audio/wav",
        _ => "image/jpeg",
    }
}

fn user_parts(content: &Content<'_>) -> Result<Vec<Value>, GatewayError> {
    let parts = match content {
        Content::Text(t) if t.is_empty() => return Ok(Vec::new()),
        Content::Text(t) => return Ok(vec![json!({"text": t})]),
        Content::Parts(parts) => parts,
    };
    let mut out = Vec::with_capacity(parts.len());
    for part in parts {
        match part {
            ContentPart::Text { text, .. } | ContentPart::Refusal { refusal: text } => {
                if !text.is_empty() {
                    out.push(json!({"text": text}));
                }
            }
            // Another vendor's thinking means nothing to Gemini.
            ContentPart::Thinking { .. } | ContentPart::RedactedThinking { .. } => {}
            ContentPart::ImageUrl { image_url } => {
                let url = image_url.url.as_ref();
                if let Some((mime, data)) = parse_data_url(url) {
                    out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
                } else if ["https://", "http://", "gs://"]
                    .iter()
                    .any(|scheme| url.starts_with(scheme))
                {
                    out.push(json!({"fileData": {"mimeType": mime_from_url(url), "fileUri": url}}));
                } else {
                    return Err(invalid(
                        "image_url must be a base64 data URL or an http(s) URL",
                        "messages",
                    ));
                }
            }
            ContentPart::File { file } => {
                if file.file_id.is_some() {
                    return Err(invalid(
                        "file_id references cannot be sent to provider kind gemini; send file_data",
                        "messages",
                    ));
                }
                let data = file
                    .file_data
                    .as_deref()
                    .ok_or_else(|| invalid("file parts need file_data", "messages"))?;
                // OpenAI's file parts are PDFs; bare base64 is accepted as one.
                let (mime, b64) = parse_data_url(data).unwrap_or(("application/pdf", data));
                out.push(json!({"inlineData": {"mimeType": mime, "data": b64}}));
            }
            ContentPart::InputAudio { input_audio } => {
                let data = input_audio
                    .get("data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid("input_audio needs data", "messages"))?;
                let mime = match input_audio.get("format").and_then(Value::as_str) {
                    Some("wav") => "audio/wav",
                    Some("mp3") => "audio/mp3",
                    _ => return Err(invalid("input_audio format must be wav or mp3", "messages")),
                };
                out.push(json!({"inlineData": {"mimeType": mime, "data": data}}));
            }
        }
    }
    Ok(out)
}

/// A tool result's content as a `functionResponse.response` object.
fn function_response(content: Option<&Content<'_>>) -> Value {
    let text = content.map(Content::text).unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => json!({"output": v}),
        Err(_) => json!({"output": text}),
    }
}

/// `systemInstruction` parts and the alternating `contents`.
fn build_contents(params: &chat::Request<'_>) -> Result<(Vec<Value>, Vec<Turn>), GatewayError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    // Function names of all calls seen so far, by OpenAI tool-call id.
    let mut call_names: HashMap<&str, &str> = HashMap::new();
    for message in &params.messages {
        match &*message.role {
            "system" | "developer" => {
                let text = message.text();
                if !text.is_empty() {
                    system.push(json!({"text": text}));
                }
            }
            "user" => {
                let parts = match &message.content {
                    Some(c) => user_parts(c)?,
                    None => Vec::new(),
                };
                push_turn(&mut turns, "user", parts);
            }
            "assistant" => {
                let mut parts = Vec::new();
                let text = message.text();
                if !text.is_empty() {
                    parts.push(json!({"text": text}));
                }
                for call in message.tool_calls.iter().flatten() {
                    let args = tool_arguments(&call.function.arguments)?;
                    call_names.insert(call.id.as_ref(), call.function.name.as_ref());
                    let mut part =
                        json!({"functionCall": {"name": call.function.name, "args": args}});
                    if let Some(sig) = signature_of(&call.id) {
                        part["thoughtSignature"] = json!(sig);
                    }
                    parts.push(part);
                }
                push_turn(&mut turns, "model", parts);
            }
            "tool" => {
                let id = message
                    .tool_call_id
                    .as_deref()
                    .ok_or_else(|| invalid("tool messages need a tool_call_id", "messages"))?;
                let name = call_names.get(id).ok_or_else(|| {
                    invalid(
                        format!("tool message for '{id}' does not answer any earlier tool call"),
                        "messages",
                    )
                })?;
                let part = json!({"functionResponse": {
                    "name": name,
                    "response": function_response(message.content.as_ref()),
                }});
                push_turn(&mut turns, "user", vec![part]);
            }
            other => return Err(unsupported_role(other)),
        }
    }
    require_turns(&turns)?;
    Ok((system, turns))
}

/// Gives the first call of each model turn that carries no signature at all the stand-in.
/// Turns with a signature are left alone: of parallel calls only the first one carries it.
fn fill_missing_signatures(turns: &mut [Turn]) {
    for (role, parts) in turns.iter_mut() {
        if *role != "model" || parts.iter().any(|p| p.get("thoughtSignature").is_some()) {
            continue;
        }
        if let Some(first_call) = parts.iter_mut().find(|p| p.get("functionCall").is_some()) {
            first_call["thoughtSignature"] = json!(SKIP_SIGNATURE);
        }
    }
}

fn tool_config(choice: &Value) -> Result<Value, GatewayError> {
    let config = match choice {
        Value::String(s) => match s.as_str() {
            "auto" => json!({"mode": "AUTO"}),
            "none" => json!({"mode": "NONE"}),
            "required" => json!({"mode": "ANY"}),
            other => {
                return Err(invalid(
                    format!("unknown tool_choice '{other}'"),
                    "tool_choice",
                ))
            }
        },
        Value::Object(o) => {
            let name = o
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
                .ok_or_else(|| invalid("tool_choice must name a function", "tool_choice"))?;
            json!({"mode": "ANY", "allowedFunctionNames": [name]})
        }
        _ => {
            return Err(invalid(
                "tool_choice must be a string or an object",
                "tool_choice",
            ))
        }
    };
    Ok(json!({"functionCallingConfig": config}))
}

fn thinking_config(effort: &str) -> Result<Value, GatewayError> {
    let budget = match effort {
        "none" => return Ok(json!({"thinkingBudget": 0})),
        "minimal" | "low" => 1024,
        "medium" => 8192,
        "high" | "xhigh" | "max" => 24576,
        other => {
            return Err(invalid(
                format!("unknown reasoning_effort '{other}'"),
                "reasoning_effort",
            ))
        }
    };
    Ok(json!({"thinkingBudget": budget, "includeThoughts": true}))
}

/// Refuses the fields Gemini cannot honour and any field this adapter does not know.
fn check_fields(params: &chat::Request<'_>) -> Result<(), GatewayError> {
    if params.logit_bias.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(invalid(
            "logit_bias is not supported by provider kind gemini",
            "logit_bias",
        ));
    }
    for (key, value) in &params.rest {
        match key.as_str() {
            "audio" if !value.is_null() => {
                return Err(invalid(
                    "audio output is not supported by provider kind gemini",
                    "audio",
                ))
            }
            "modalities" => {
                if value
                    .as_array()
                    .is_some_and(|m| m.iter().any(|v| v != "text"))
                {
                    return Err(invalid(
                        "provider kind gemini only answers with text modalities",
                        "modalities",
                    ));
                }
            }
            "audio" => {}
            k if DROPPED_FIELDS.contains(&k) => {}
            k => {
                return Err(GatewayError::invalid(
                    format!("parameter '{k}' is not supported by provider kind gemini"),
                    None,
                ))
            }
        }
    }
    Ok(())
}

impl GeminiAdapter {
    /// The Gemini request body for a canonical request, sent to `model`.
    pub fn request_body(params: &chat::Request<'_>, model: &str) -> Result<Value, GatewayError> {
        check_fields(params)?;
        let (system, mut turns) = build_contents(params)?;
        if validates_signatures(model) {
            fill_missing_signatures(&mut turns);
        }
        let mut body = Map::new();
        if !system.is_empty() {
            body.insert("systemInstruction".into(), json!({"parts": system}));
        }
        body.insert(
            "contents".into(),
            turns
                .into_iter()
                .map(|(role, parts)| json!({"role": role, "parts": parts}))
                .collect(),
        );

        let mut declarations = Vec::new();
        for tool in params.tools.iter().flatten() {
            let Some(function) = tool.function.as_ref().filter(|_| tool.kind == "function") else {
                return Err(invalid(
                    format!(
                        "tool type '{}' is not supported by provider kind gemini",
                        tool.kind
                    ),
                    "tools",
                ));
            };
            let mut decl = json!({"name": function.name});
            if let Some(d) = &function.description {
                decl["description"] = json!(d);
            }
            if let Some(p) = &function.parameters {
                let parameters = sanitize_schema(p, "tools")?;
                // A function without parameters sends none: an empty object schema is noise.
                let has_params = parameters
                    .get("properties")
                    .and_then(Value::as_object)
                    .is_some_and(|o| !o.is_empty())
                    || parameters.get("anyOf").is_some();
                if has_params {
                    decl["parameters"] = parameters;
                }
            }
            declarations.push(decl);
        }
        if !declarations.is_empty() {
            body.insert(
                "tools".into(),
                json!([{"functionDeclarations": declarations}]),
            );
            if let Some(choice) = params.tool_choice.as_ref().filter(|c| !c.is_null()) {
                body.insert("toolConfig".into(), tool_config(choice)?);
            }
        }

        let mut generation = Map::new();
        let mut set = |k: &str, v: Option<Value>| {
            if let Some(v) = v {
                generation.insert(k.into(), v);
            }
        };
        set("temperature", params.temperature.map(|v| json!(v)));
        set("topP", params.top_p.map(|v| json!(v)));
        set("topK", params.top_k.map(|v| json!(v)));
        set(
            "maxOutputTokens",
            params.max_output_tokens().map(|v| json!(v)),
        );
        set("seed", params.seed.map(|v| json!(v)));
        set("presencePenalty", params.presence_penalty.map(|v| json!(v)));
        set(
            "frequencyPenalty",
            params.frequency_penalty.map(|v| json!(v)),
        );
        if params.logprobs == Some(true) {
            set("responseLogprobs", Some(json!(true)));
            set("logprobs", params.top_logprobs.map(|v| json!(v)));
        }
        let stops = params.stop_sequences()?;
        if stops.len() > MAX_STOP_SEQUENCES {
            return Err(invalid(
                format!("provider kind gemini accepts at most {MAX_STOP_SEQUENCES} stop sequences"),
                "stop",
            ));
        }
        if !stops.is_empty() {
            set("stopSequences", Some(json!(stops)));
        }
        if let Some(n) = params.n.filter(|n| *n > 1) {
            if params.stream {
                return Err(invalid(
                    "n > 1 cannot be streamed from provider kind gemini",
                    "n",
                ));
            }
            set("candidateCount", Some(json!(n)));
        }
        if let Some(format) = params.response_format.as_ref().filter(|f| !f.is_null()) {
            match format.get("type").and_then(Value::as_str) {
                Some("text") => {}
                Some("json_object") => set("responseMimeType", Some(json!("application/json"))),
                Some("json_schema") => {
                    set("responseMimeType", Some(json!("application/json")));
                    if let Some(schema) = format.get("json_schema").and_then(|s| s.get("schema")) {
                        set(
                            "responseSchema",
                            Some(sanitize_schema(schema, "response_format")?),
                        );
                    }
                }
                other => {
                    return Err(invalid(
                        format!(
                            "response_format type '{}' is not supported",
                            other.unwrap_or("(none)")
                        ),
                        "response_format",
                    ))
                }
            }
        }
        match (params.thinking_budget, params.reasoning_effort.as_deref()) {
            (Some(budget), _) => set(
                "thinkingConfig",
                Some(json!({"thinkingBudget": budget, "includeThoughts": true})),
            ),
            (None, Some(effort)) => set("thinkingConfig", Some(thinking_config(effort)?)),
            (None, None) => {}
        }
        if !generation.is_empty() {
            body.insert("generationConfig".into(), Value::Object(generation));
        }
        Ok(Value::Object(body))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn golden_request_with_tools_history_and_signatures() {
        let req = ChatRequest::parse(fixture!("request_tools.openai.json").as_bytes()).unwrap();
        let key = Secret::new("g-key");
        let extra = [(
            http::HeaderName::from_static("x-extra"),
            HeaderValue::from_static("1"),
        )];
        let out = GeminiAdapter
            .build_request(
                &ClientRequest::OpenAi(req),
                &AttemptTarget {
                    upstream_model: "gemini-2.5-flash",
                    endpoint: &endpoint(),
                    api_key: Some(&key),
                    extra_headers: &extra,
                },
            )
            .unwrap();
        assert_eq!(
            out.path_and_query,
            "/v1beta/models/gemini-2.5-flash:generateContent"
        );
        let header = |name: &str| {
            out.headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(header("x-goog-api-key").as_deref(), Some("g-key"));
        assert_eq!(header("content-type").as_deref(), Some("application/json"));
        assert_eq!(header("x-extra").as_deref(), Some("1"));
        let body: Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(body, json(fixture!("request_tools.gemini.json")));
    }

    #[test]
    fn case01_system_and_developer_messages_keep_their_order() {
        let body = body_with(
            json!([{"role": "system", "content": "a"}, {"role": "user", "content": "x"},
                   {"role": "developer", "content": [{"type": "text", "text": "b"}]},
                   {"role": "system", "content": ""}]),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "a"}, {"text": "b"}]})
        );
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "x"}]}])
        );
    }

    #[test]
    fn case04_empty_user_content_is_never_sent() {
        let body = body_with(
            json!([{"role": "user", "content": ""},
                   {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "hi"}]},
                   {"role": "assistant", "content": ""},
                   {"role": "assistant", "content": null},
                   {"role": "user", "content": "again"}]),
            json!({}),
        )
        .unwrap();
        // The empty assistant turns vanish, so the two user turns merge into one.
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "hi"}, {"text": "again"}]}])
        );
        let all_empty = body_with(
            json!([{"role": "user", "content": ""}, {"role": "user", "content": []}]),
            json!({}),
        );
        assert_eq!(all_empty.unwrap_err().param(), Some("messages"));
    }

    #[test]
    fn case05_consecutive_tool_results_form_one_user_turn() {
        let body = body_with(
            json!([{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [
                       {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                       {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "a", "content": "1"},
                   {"role": "tool", "tool_call_id": "b", "content": [{"type": "text", "text": "two"}]}]),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            body["contents"][2],
            json!({"role": "user", "parts": [
                {"functionResponse": {"name": "f", "response": {"output": 1}}},
                {"functionResponse": {"name": "g", "response": {"output": "two"}}}]})
        );
        assert_eq!(body["contents"].as_array().unwrap().len(), 3);
    }

    #[test]
    fn case10_tool_call_arguments_empty_object_invalid() {
        let with_args = |args: &str| {
            body_with(
                json!([{"role": "user", "content": "x"},
                       {"role": "assistant", "tool_calls": [
                           {"id": "a", "type": "function", "function": {"name": "f", "arguments": args}}]}]),
                json!({}),
            )
        };
        for empty in ["", "{}", "  "] {
            assert_eq!(
                with_args(empty).unwrap()["contents"][1]["parts"][0]["functionCall"]["args"],
                json!({})
            );
        }
        for bad in ["{", "[1]", "\"s\""] {
            let err = with_args(bad).unwrap_err();
            assert_eq!(
                (err.status(), err.param()),
                (400, Some("messages")),
                "{bad}"
            );
        }
    }

    #[test]
    fn case11_tool_result_name_is_looked_up_by_call_id() {
        let body = body_with(
            json!([{"role": "user", "content": "x"},
                   {"role": "assistant", "tool_calls": [
                       {"id": "call_9", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                   {"role": "tool", "tool_call_id": "call_9", "content": "{\"ok\":true}"}]),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            body["contents"][2]["parts"][0]["functionResponse"],
            json!({"name": "lookup", "response": {"output": {"ok": true}}})
        );
        for orphan in [
            json!([{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}]),
            json!([{"role": "user", "content": "x"}, {"role": "tool", "content": "r"}]),
        ] {
            let err = body_with(orphan, json!({})).unwrap_err();
            assert_eq!((err.status(), err.param()), (400, Some("messages")));
        }
    }

    #[test]
    fn case12_assistant_text_and_tool_calls_stay_in_one_model_turn() {
        let body = body_with(
            json!([{"role": "user", "content": "x"},
                   {"role": "assistant", "content": "Let me look.", "tool_calls": [
                       {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"q\":1}"}}]}]),
            json!({}),
        )
        .unwrap();
        assert_eq!(
            body["contents"][1],
            json!({"role": "model", "parts": [{"text": "Let me look."},
                                              {"functionCall": {"name": "f", "args": {"q": 1}}}]})
        );
    }

    #[test]
    fn case14_stop_as_string_whitespace_and_at_most_five() {
        let stops = |stop: Value| body_with(hello(), json!({ "stop": stop }));
        assert_eq!(
            stops(json!("\n")).unwrap()["generationConfig"]["stopSequences"],
            json!(["\n"])
        );
        assert_eq!(
            stops(json!(["a", "b", "c", "d", "e"])).unwrap()["generationConfig"]["stopSequences"],
            json!(["a", "b", "c", "d", "e"])
        );
        let err = stops(json!(["a", "b", "c", "d", "e", "f"])).unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("stop")));
        assert_eq!(stops(json!([1])).unwrap_err().param(), Some("stop"));
        assert!(stops(json!(null))
            .unwrap()
            .get("generationConfig")
            .is_none());
    }

    #[test]
    fn case16_images_pdfs_and_audio() {
        let parts = |content: Value| {
            body_with(json!([{ "role": "user", "content": content }]), json!({}))
                .map(|b| b["contents"][0]["parts"].clone())
        };
        let got = parts(json!([
            {"type": "image_url", "image_url": {"url": "data:image/webp;base64,UklG"}},
            {"type": "image_url", "image_url": {"url": "data:image/png;charset=utf-8;base64,iVBO"}},
            {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,Qk0="}},
            {"type": "image_url", "image_url": {"url": "data:application/pdf;base64,JVBERi0="}},
            {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0x"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.PNG?size=2"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/photo"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/doc.pdf"}},
            {"type": "input_audio", "input_audio": {"data": "UklGR", "format": "wav"}},
            {"type": "input_audio", "input_audio": {"data": "SUQz", "format": "mp3"}}
        ]))
        .unwrap();
        assert_eq!(
            got,
            json!([
                {"inlineData": {"mimeType": "image/webp", "data": "UklG"}},
                {"inlineData": {"mimeType": "image/png", "data": "iVBO"}},
                // Gemini decides about formats it may learn; the gateway does not guess.
                {"inlineData": {"mimeType": "image/bmp", "data": "Qk0="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
                {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0x"}},
                {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.PNG?size=2"}},
                {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/photo"}},
                {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/doc.pdf"}},
                {"inlineData": {"mimeType": "audio/wav", "data": "UklGR"}},
                {"inlineData": {"mimeType": "audio/mp3", "data": "SUQz"}}
            ])
        );
        for refused in [
            json!([{"type": "file", "file": {"file_id": "file-123"}}]),
            json!([{"type": "input_audio", "input_audio": {"data": "x", "format": "flac"}}]),
            json!([{"type": "image_url", "image_url": {"url": "ftp://example.com/a.png"}}]),
        ] {
            let err = parts(refused.clone()).unwrap_err();
            assert_eq!(
                (err.status(), err.param()),
                (400, Some("messages")),
                "{refused}"
            );
        }
    }

    #[test]
    fn case21_n_becomes_candidate_count_but_not_for_streams() {
        assert_eq!(
            body_with(hello(), json!({"n": 2})).unwrap()["generationConfig"]["candidateCount"],
            2
        );
        let err = body_with(hello(), json!({"n": 2, "stream": true})).unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("n")));
        let two = decode_as_openai(
            r#"{"candidates": [
                {"content": {"parts": [{"text": "B"}], "role": "model"}, "finishReason": "MAX_TOKENS", "index": 1},
                {"content": {"parts": [{"text": "A"}], "role": "model"}, "finishReason": "STOP"}]}"#,
        );
        let choices = two["choices"].as_array().unwrap();
        assert_eq!(
            (
                &choices[0]["message"]["content"],
                &choices[0]["finish_reason"]
            ),
            (&json!("A"), &json!("stop"))
        );
        assert_eq!(
            (
                &choices[1]["index"],
                &choices[1]["message"]["content"],
                &choices[1]["finish_reason"]
            ),
            (&json!(1), &json!("B"), &json!("length"))
        );
    }

    #[test]
    fn case23_unsigned_history_gets_the_documented_stand_in_on_gemini_3_only() {
        let history = json!([
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": "Sure.", "tool_calls": [
                {"id": "toolu_01", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "toolu_02", "type": "function", "function": {"name": "g", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "toolu_01", "content": "1"},
            {"role": "tool", "tool_call_id": "toolu_02", "content": "2"}]);
        let g3 = body_for_model(history.clone(), json!({}), "gemini-3.1-pro-preview").unwrap();
        let parts = &g3["contents"][1]["parts"];
        assert!(parts[0].get("thoughtSignature").is_none());
        assert_eq!(parts[1]["thoughtSignature"], SKIP_SIGNATURE);
        assert!(parts[2].get("thoughtSignature").is_none());
        for older in ["gemini-2.5-pro", "gemini-flash-latest"] {
            let body = body_for_model(history.clone(), json!({}), older).unwrap();
            assert!(
                !body.to_string().contains(SKIP_SIGNATURE),
                "{older}: {body}"
            );
        }
        assert!(validates_signatures("gemini-10-ultra"));
        assert!(!validates_signatures("gemma-3-27b-it"));
    }

    #[test]
    fn refusals_name_the_parameter_and_drops_are_silent() {
        let err = |extra: Value| body_with(hello(), extra).unwrap_err();
        for (extra, param) in [
            (json!({"logit_bias": {"1": 2}}), Some("logit_bias")),
            (
                json!({"audio": {"voice": "alloy", "format": "wav"}}),
                Some("audio"),
            ),
            (json!({"modalities": ["text", "audio"]}), Some("modalities")),
            (
                json!({"tool_choice": "sometimes", "tools": [{"type": "function", "function": {"name": "f"}}]}),
                Some("tool_choice"),
            ),
            (
                json!({"reasoning_effort": "extreme"}),
                Some("reasoning_effort"),
            ),
            (
                json!({"response_format": {"type": "grammar"}}),
                Some("response_format"),
            ),
            (json!({"whatever": 1}), None),
            (json!({"functions": []}), None),
        ] {
            let e = err(extra.clone());
            assert_eq!((e.status(), e.param()), (400, param), "{extra}");
        }
        assert!(err(json!({"whatever": 1}))
            .to_string()
            .contains("'whatever'"));

        let ok = body_with(
            hello(),
            json!({"parallel_tool_calls": false, "user": "u", "safety_identifier": "s", "store": true,
                   "metadata": {"a": "b"}, "service_tier": "auto", "prompt_cache_key": "k",
                   "stream_options": {"include_usage": true}, "modalities": ["text"], "audio": null,
                   "logit_bias": null, "max_tokens": 10, "max_completion_tokens": 20, "top_k": 40,
                   "seed": 7, "presence_penalty": 0.5, "frequency_penalty": 0.25,
                   "logprobs": true, "top_logprobs": 3, "response_format": {"type": "json_object"}}),
        )
        .unwrap();
        assert_eq!(
            ok["generationConfig"],
            json!({"topK": 40, "maxOutputTokens": 20, "seed": 7, "presencePenalty": 0.5,
                   "frequencyPenalty": 0.25, "responseLogprobs": true, "logprobs": 3,
                   "responseMimeType": "application/json"})
        );
        assert_eq!(ok.as_object().unwrap().len(), 2, "{ok}");
    }

    #[test]
    fn reasoning_effort_maps_to_thinking_budgets() {
        for (effort, config) in [
            ("none", json!({"thinkingBudget": 0})),
            (
                "low",
                json!({"thinkingBudget": 1024, "includeThoughts": true}),
            ),
            (
                "medium",
                json!({"thinkingBudget": 8192, "includeThoughts": true}),
            ),
            (
                "high",
                json!({"thinkingBudget": 24576, "includeThoughts": true}),
            ),
        ] {
            let body = body_with(hello(), json!({ "reasoning_effort": effort })).unwrap();
            assert_eq!(
                body["generationConfig"]["thinkingConfig"], config,
                "{effort}"
            );
        }
    }

    // ---- response and stream tricky cases ----
}
