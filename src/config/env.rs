//! `${VAR}` and `${VAR:-default}` substitution, applied to the raw YAML text before parsing.
//!
//! Substituting in the text (rather than in parsed values) lets a variable stand anywhere a
//! scalar can, including inside URLs. A `$` not followed by `{` is left alone, and `$${` escapes a
//! literal `${`.

use std::collections::BTreeSet;

/// Variables that were referenced without a default and are not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissingVars(pub BTreeSet<String>);

/// Expands every `${NAME}` / `${NAME:-default}` in `text` using `lookup`.
///
/// Collects all missing variables before failing, so one `switchyard check` names every one.
pub fn expand(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, MissingVars> {
    let mut out = String::with_capacity(text.len());
    let mut missing = BTreeSet::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(escaped) = after.strip_prefix("${") {
            out.push_str("${");
            rest = escaped;
            continue;
        }
        let Some(body_start) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body_start.find('}') else {
            // An unterminated reference is kept verbatim; YAML parsing or validation reports it.
            out.push('$');
            rest = after;
            continue;
        };
        let body = &body_start[..end];
        let (name, default) = match body.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (body, None),
        };
        match (lookup(name), default) {
            // An empty variable counts as unset when a default is given, as in POSIX shells.
            (Some(value), Some(default)) if value.is_empty() => out.push_str(default),
            (Some(value), _) => out.push_str(&value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => {
                missing.insert(name.to_string());
            }
        }
        rest = &body_start[end + 1..];
    }
    out.push_str(rest);
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(MissingVars(missing))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "KEY" => Some("sk-123".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn substitutes_set_variables_and_defaults() {
        let text = "a: ${KEY}\nb: ${UNSET:-fallback}\nc: ${EMPTY:-d}\nd: x${KEY}y";
        assert_eq!(
            expand(text, env).unwrap(),
            "a: sk-123\nb: fallback\nc: d\nd: xsk-123y"
        );
    }

    #[test]
    fn empty_default_is_allowed() {
        assert_eq!(expand("k: ${UNSET:-}", env).unwrap(), "k: ");
    }

    #[test]
    fn reports_every_missing_variable() {
        let err = expand("${A} ${B} ${KEY} ${A}", env).unwrap_err();
        assert_eq!(err.0.into_iter().collect::<Vec<_>>(), vec!["A", "B"]);
    }

    #[test]
    fn leaves_plain_dollars_and_escapes() {
        assert_eq!(
            expand("price: $5, lit: $${KEY}, open: ${", env).unwrap(),
            "price: $5, lit: ${KEY}, open: ${"
        );
    }
}
