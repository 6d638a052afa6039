//! Model ids that clients choose and that end up in a vendor's URL or body.
//!
//! A direct route (`PROVIDER/MODEL`) hands the client's `MODEL` to the adapter, and several
//! vendors put the model in the request path (Gemini, Vertex AI, Azure deployments, Bedrock).
//! Unchecked, `azure/..` would reach `/openai/deployments/../chat/completions` and `bedrock/..` a
//! signed `/model/../converse`, both with the provider's credentials; a control character would
//! make the request line invalid, fail the attempt and count against the provider's breaker.
//!
//! So every model id is checked against its vendor's [`ModelIdRule`] before any attempt (a
//! client's mistake is a 400 naming `model`, never a provider failure), and adapters that put it
//! in a URL write it with [`ModelIdRule::segment`]: checked again and percent-encoded as one
//! path segment (RFC 3986), with `.` and `..` refused.

use std::borrow::Cow;
use std::fmt::Write;

use crate::error::GatewayError;

/// Longest model id accepted. Vendors' longest ids (Bedrock inference-profile ARNs) are about
/// 120 bytes.
pub const MAX_MODEL_ID_BYTES: usize = 256;

/// What one vendor accepts as a model id.
#[derive(Debug, Clone, Copy)]
pub struct ModelIdRule {
    /// How errors name the id: "a Gemini model name".
    pub what: &'static str,
    /// Punctuation allowed besides ASCII letters and digits.
    pub punctuation: &'static [u8],
    /// Punctuation written into a URL as it is; the rest of it is percent-encoded. RFC 3986's
    /// unreserved characters (`-`, `.`, `_`, `~`) always are.
    pub literal: &'static [u8],
}

/// Vendors that carry the model in the JSON body only (OpenAI and compatible hosts,
/// Anthropic): any printable ASCII but space. Real ids never hold more (`llama3:8b`,
/// `meta-llama/Llama-3-8B`, `openai/gpt-4o:free`); control characters, spaces and non-ASCII
/// bytes are always a client's mistake.
pub const BODY_ONLY: ModelIdRule = ModelIdRule {
    what: "a model name",
    punctuation: b"!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    literal: b"",
};

impl ModelIdRule {
    /// Whether `model` is an id of this vendor; the error says why not, for a 400 on `model`.
    pub fn check(&self, model: &str) -> Result<(), GatewayError> {
        self.problem(model).map_or(Ok(()), |why| {
            Err(GatewayError::invalid(
                format!("'{}' is not {}: {why}", model.escape_debug(), self.what),
                Some("model"),
            ))
        })
    }

    /// `model` checked and percent-encoded as one path segment; borrowed when nothing needed
    /// encoding (the usual case).
    pub fn segment<'m>(&self, model: &'m str) -> Result<Cow<'m, str>, GatewayError> {
        self.check(model)?;
        let keep = |b: u8| is_unreserved(b) || self.literal.contains(&b);
        if model.bytes().all(keep) {
            return Ok(Cow::Borrowed(model));
        }
        let mut encoded = String::with_capacity(model.len() + 8);
        for b in model.bytes() {
            if keep(b) {
                encoded.push(b as char);
            } else {
                let _ = write!(encoded, "%{b:02X}");
            }
        }
        Ok(Cow::Owned(encoded))
    }

    fn problem(&self, model: &str) -> Option<String> {
        if model.is_empty() {
            return Some("it is empty".into());
        }
        if model.len() > MAX_MODEL_ID_BYTES {
            return Some(format!("it is longer than {MAX_MODEL_ID_BYTES} bytes"));
        }
        if let Some(c) = model
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || self.allows_punctuation(c)))
        {
            return Some(format!("it contains '{}'", c.escape_debug()));
        }
        // With `/` allowed (Bedrock ARNs) each part could be a dot segment once a server decodes
        // `%2F`; without it the whole id is the one part.
        if model.split('/').any(|part| part == "." || part == "..") {
            return Some("'.' and '..' would change the URL's path".into());
        }
        None
    }

    fn allows_punctuation(&self, c: char) -> bool {
        u8::try_from(c).is_ok_and(|b| self.punctuation.contains(&b))
    }
}

/// RFC 3986, section 2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&str] = &[
        "",
        ".",
        "..",
        "a\r\nX",
        "a\nb",
        "tab\there",
        "ctl\u{1}",
        "del\u{7f}",
        "caf\u{e9}",
        "sp ace",
        "nul\0",
    ];

    fn refused(rule: &ModelIdRule, model: &str) -> bool {
        match rule.check(model) {
            Err(e) => {
                assert_eq!(e.status(), 400, "{model:?}");
                assert_eq!(e.param(), Some("model"), "{model:?}");
                true
            }
            Ok(()) => false,
        }
    }

    #[test]
    fn body_only_vendors_take_printable_ascii() {
        for model in HOSTILE {
            assert!(refused(&BODY_ONLY, model), "{model:?} accepted");
        }
        assert!(refused(&BODY_ONLY, &"a".repeat(MAX_MODEL_ID_BYTES + 1)));
        for model in [
            "gpt-4o",
            "llama3:8b",
            "meta-llama/Llama-3-8B",
            "openai/gpt-4o:free",
            "accounts/fireworks/models/llama-v3p1-8b-instruct",
            "claude-sonnet-4-5@20250929",
        ] {
            assert!(BODY_ONLY.check(model).is_ok(), "{model:?} refused");
        }
    }

    #[test]
    fn a_segment_never_leaves_its_place_in_the_path() {
        let rule = ModelIdRule {
            what: "a test id",
            punctuation: b"-._:/@",
            literal: b"@",
        };
        for model in HOSTILE.iter().chain(&["a/../b", "a/./b", "../x", "x/.."]) {
            assert!(rule.segment(model).is_err(), "{model:?} accepted");
        }
        assert_eq!(
            rule.segment("arn:aws:bedrock:us-east-1:1:inference-profile/us.m-v1:0")
                .unwrap(),
            "arn%3Aaws%3Abedrock%3Aus-east-1%3A1%3Ainference-profile%2Fus.m-v1%3A0"
        );
        assert_eq!(rule.segment("claude@2025").unwrap(), "claude@2025");
        assert!(matches!(
            rule.segment("gemini-2.5-flash").unwrap(),
            Cow::Borrowed(_)
        ));
        // A '%' the vendor allows is encoded, so no client text is taken for an escape.
        let percent = ModelIdRule {
            what: "x",
            punctuation: b"%.",
            literal: b"",
        };
        assert_eq!(percent.segment("a%2F..").unwrap(), "a%252F..");
    }
}
