//! `system_prompt`: text added to (or instead of) the request's system prompt.
//!
//! ```yaml
//! filters:
//!   - {type: system_prompt, prepend: "You are ACME's assistant.", append: "Answer in English."}
//!   - {type: system_prompt, replace: "You are a SQL assistant."}
//! ```
//!
//! `prepend` and `append` go before and after the text of the first system (or `developer`)
//! message, separated from it by a blank line (as text parts of their own when its content is a
//! list of parts, so cache breakpoints stay where they were); without a system message, one is
//! created at the start. `replace` removes every system and `developer` message and puts one
//! system message with its text first; it cannot be combined with `prepend`/`append`. Always
//! rewrites (action `rewrite`).

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::Value;

use super::params::{check_keys, filter_error};
use crate::chat::{Content, ContentPart, Message};
use crate::config::FilterSpec;
use crate::filters::{record, Filter, FilterError, FilterRequest, Verdict};

const SEPARATOR: &str = "\n\n";

pub struct SystemPrompt {
    name: String,
    prepend: Option<String>,
    append: Option<String>,
    replace: Option<String>,
}

impl SystemPrompt {
    pub fn build(spec: &FilterSpec) -> Result<Arc<dyn Filter>, String> {
        check_keys(spec, &["prepend", "append", "replace"])?;
        let text = |key: &str| match spec.settings.get(key) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(format!("{}.{key}: must be a non-empty string", spec.path)),
        };
        let (prepend, append, replace) = (text("prepend")?, text("append")?, text("replace")?);
        if replace.is_some() && (prepend.is_some() || append.is_some()) {
            return Err(format!(
                "{}.replace: cannot be combined with prepend or append",
                spec.path
            ));
        }
        if replace.is_none() && prepend.is_none() && append.is_none() {
            return Err(format!("{}: give prepend, append or replace", spec.path));
        }
        Ok(Arc::new(SystemPrompt {
            name: spec.name.clone(),
            prepend,
            append,
            replace,
        }))
    }
}

fn is_system(message: &Message<'_>) -> bool {
    matches!(message.role.as_ref(), "system" | "developer")
}

fn system_message(text: String) -> Message<'static> {
    Message {
        role: Cow::Borrowed("system"),
        content: Some(Content::Text(Cow::Owned(text))),
        ..Message::default()
    }
}

fn text_part(text: String) -> ContentPart<'static> {
    ContentPart::Text {
        text: Cow::Owned(text),
        cache_control: None,
    }
}

#[async_trait::async_trait]
impl Filter for SystemPrompt {
    fn name(&self) -> &str {
        &self.name
    }

    async fn on_request(&self, request: &mut FilterRequest) -> Result<Verdict, FilterError> {
        let r = request.edit().map_err(filter_error)?;
        if let Some(text) = &self.replace {
            r.messages.retain(|m| !is_system(m));
            r.messages.insert(0, system_message(text.clone()));
        } else {
            let (prepend, append) = (self.prepend.as_deref(), self.append.as_deref());
            match r.messages.iter_mut().find(|m| is_system(m)) {
                None => {
                    let text = [prepend, append].into_iter().flatten().collect::<Vec<_>>();
                    r.messages.insert(0, system_message(text.join(SEPARATOR)));
                }
                Some(message) => match &mut message.content {
                    Some(Content::Parts(parts)) => {
                        if let Some(p) = prepend {
                            parts.insert(0, text_part(format!("{p}{SEPARATOR}")));
                        }
                        if let Some(a) = append {
                            parts.push(text_part(format!("{SEPARATOR}{a}")));
                        }
                    }
                    content => {
                        let current = match content.as_ref() {
                            Some(Content::Text(t)) => t.as_ref(),
                            _ => "",
                        };
                        let text = [prepend, Some(current).filter(|t| !t.is_empty()), append]
                            .into_iter()
                            .flatten()
                            .collect::<Vec<_>>()
                            .join(SEPARATOR);
                        *content = Some(Content::Text(Cow::Owned(text)));
                    }
                },
            }
        }
        record(&self.name, "rewrite", &request.info.request_id);
        Ok(Verdict::Continue)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::params::testing::{anthropic, build_error, openai, spec};
    use crate::chat::{Content, ContentPart};
    use crate::filters::{Filter, FilterRequest};

    fn filter(settings: Value) -> std::sync::Arc<dyn Filter> {
        let mut config = settings;
        config["type"] = json!("system_prompt");
        super::super::build(&spec(config)).expect("build")
    }

    /// Each message as (role, its text parts).
    async fn run(f: &dyn Filter, mut r: FilterRequest) -> Vec<(String, Vec<String>)> {
        f.on_request(&mut r).await.map(|_| ()).expect("ok");
        assert!(r.is_edited());
        let c = r.canonical().expect("canonical");
        c.messages
            .iter()
            .map(|m| {
                let texts = match &m.content {
                    None => vec![],
                    Some(Content::Text(t)) => vec![t.to_string()],
                    Some(Content::Parts(parts)) => parts
                        .iter()
                        .map(|p| match p {
                            ContentPart::Text { text, .. } => text.to_string(),
                            _ => "<other>".to_string(),
                        })
                        .collect(),
                };
                (m.role.to_string(), texts)
            })
            .collect()
    }

    fn chat(messages: Value) -> FilterRequest {
        openai(json!({"model": "m", "messages": messages}), &[], 10)
    }

    fn msg(role: &str, texts: &[&str]) -> (String, Vec<String>) {
        (
            role.to_string(),
            texts.iter().map(ToString::to_string).collect(),
        )
    }

    #[tokio::test]
    async fn prepend_and_append_around_the_first_system_message() {
        let f =
            filter(json!({"prepend": "You are ACME's assistant.", "append": "Answer in English."}));
        let r = chat(json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "Later."}
        ]));
        assert_eq!(
            run(&*f, r).await,
            [
                msg(
                    "system",
                    &["You are ACME's assistant.\n\nBe brief.\n\nAnswer in English."]
                ),
                msg("user", &["hi"]),
                msg("system", &["Later."]),
            ]
        );
    }

    #[tokio::test]
    async fn a_system_message_is_created_when_there_is_none() {
        let f = filter(json!({"prepend": "P.", "append": "A."}));
        let r = chat(json!([{"role": "user", "content": "hi"}]));
        assert_eq!(
            run(&*f, r).await,
            [msg("system", &["P.\n\nA."]), msg("user", &["hi"])]
        );
        let f = filter(json!({"append": "A."}));
        let r = chat(json!([{"role": "user", "content": "hi"}]));
        assert_eq!(run(&*f, r).await[0], msg("system", &["A."]));
    }

    #[tokio::test]
    async fn parts_and_developer_messages() {
        let f = filter(json!({"prepend": "P.", "append": "A."}));
        let r = chat(json!([
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": [{"type": "text", "text": "Rules."}]}
        ]));
        assert_eq!(
            run(&*f, r).await,
            [
                msg("user", &["hi"]),
                msg("developer", &["P.\n\n", "Rules.", "\n\nA."])
            ]
        );
    }

    #[tokio::test]
    async fn replace_removes_every_system_message() {
        let f = filter(json!({"replace": "Only this."}));
        let r = chat(json!([
            {"role": "system", "content": "one"},
            {"role": "user", "content": "hi"},
            {"role": "developer", "content": "two"},
            {"role": "assistant", "content": "yo"}
        ]));
        assert_eq!(
            run(&*f, r).await,
            [
                msg("system", &["Only this."]),
                msg("user", &["hi"]),
                msg("assistant", &["yo"]),
            ]
        );
    }

    #[tokio::test]
    async fn anthropic_system_blocks_keep_their_cache_breakpoint() {
        let f = filter(json!({"prepend": "P."}));
        let mut r = anthropic(json!({
            "model": "claude", "max_tokens": 10,
            "system": [{"type": "text", "text": "Long rules.", "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}]
        }));
        f.on_request(&mut r).await.map(|_| ()).expect("ok");
        let c = r.canonical().expect("canonical");
        let Some(Content::Parts(parts)) = &c.messages[0].content else {
            panic!("parts")
        };
        let shown: Vec<(String, bool)> = parts
            .iter()
            .map(|p| match p {
                ContentPart::Text {
                    text,
                    cache_control,
                } => (text.to_string(), cache_control.is_some()),
                _ => (String::new(), false),
            })
            .collect();
        assert_eq!(
            shown,
            [
                ("P.\n\n".to_string(), false),
                ("Long rules.".to_string(), true)
            ]
        );
        let r = anthropic(json!({
            "model": "claude", "max_tokens": 10, "system": "Be terse.",
            "messages": [{"role": "user", "content": "hi"}]
        }));
        assert_eq!(run(&*f, r).await[0], msg("system", &["P.\n\nBe terse."]));
    }

    #[test]
    fn config_errors() {
        let cases = [
            (
                json!({"replace": "x", "append": "y"}),
                "models.m.filters[0].replace: cannot be combined with prepend or append",
            ),
            (
                json!({}),
                "models.m.filters[0]: give prepend, append or replace",
            ),
            (
                json!({"prepend": ""}),
                "models.m.filters[0].prepend: must be a non-empty string",
            ),
            (
                json!({"prefix": "x"}),
                "models.m.filters[0].prefix: unknown setting (settings: prepend, append, replace)",
            ),
        ];
        for (mut config, expected) in cases {
            config["type"] = json!("system_prompt");
            assert_eq!(build_error(config), expected);
        }
    }
}
