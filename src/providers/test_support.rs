//! Helpers the adapters' unit tests share: driving a stream decoder in pieces and blanking
//! the parts of an answer that are generated fresh each time.

use serde_json::Value;

use super::{client_stream, ProviderAdapter, StreamFailure, StreamSettings};
use crate::accounting::Usage;
use crate::dialect::Dialect;

pub(crate) fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

/// Feeds `input` to the adapter's decoder for an OpenAI client `piece` bytes at a time, as
/// the network would. Returns the outcome, the client's bytes (through `normalise` when the
/// stream ended) and the usage counted.
pub(crate) fn stream_as_openai(
    adapter: &dyn ProviderAdapter,
    input: &str,
    include_usage: bool,
    piece: usize,
    normalise: fn(&str) -> String,
) -> (Result<(), StreamFailure>, String, Option<Usage>) {
    let mut decoder = client_stream(
        adapter,
        Dialect::OpenAi,
        StreamSettings {
            include_usage,
            price: None,
        },
    );
    let mut out = Vec::new();
    for c in input.as_bytes().chunks(piece) {
        if let Err(e) = decoder.push(c, &mut out) {
            return (Err(e), String::from_utf8(out).unwrap(), decoder.usage());
        }
    }
    let r = decoder.finish(&mut out);
    (
        r,
        normalise(&String::from_utf8(out).unwrap()),
        decoder.usage(),
    )
}

/// After each `marker`, replaces the run of characters matching `keep` by `fill` (once,
/// when `collapse`, else once per character).
pub(crate) fn blank_after(
    text: &str,
    marker: &str,
    keep: impl Fn(char) -> bool,
    fill: char,
    collapse: bool,
) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(pos) = rest.find(marker) {
        out.push_str(&rest[..pos + marker.len()]);
        rest = &rest[pos + marker.len()..];
        let run = rest.chars().take_while(|c| keep(*c)).count();
        if collapse {
            out.push(fill);
        } else {
            out.extend(std::iter::repeat_n(fill, run));
        }
        rest = &rest[run..];
    }
    out.push_str(rest);
    out
}

/// `created` is the wall clock: blanked to `0`.
pub(crate) fn blank_created(text: &str) -> String {
    blank_after(text, "\"created\":", |c| c.is_ascii_digit(), '0', true)
}
