//! JSON Schema (OpenAI tools, `response_format`) → Gemini's OpenAPI-subset `Schema`
//! (docs/translation.md §3.6): `$ref`s inlined within a byte budget, `null` unions as `nullable`,
//! `const` as `enum`, unsupported keywords and formats removed, recursive or dangling references refused.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

use super::*;

/// Keywords of Gemini's OpenAPI-subset `Schema` that pass through unchanged.
const SCHEMA_KEEP: [&str; 12] = [
    "description",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minLength",
    "maxLength",
    "pattern",
    "minimum",
    "maximum",
    "propertyOrdering",
    "nullable",
];

/// Reduces a JSON Schema to what Gemini accepts (docs/translation.md §3.6), inlining local `$ref`s.
/// `param` names
/// the request field the schema came from, for the 400 when it cannot be expressed.
pub fn sanitize_schema(schema: &Value, param: &'static str) -> Result<Value, GatewayError> {
    let mut sanitizer = Sanitizer {
        defs: ["$defs", "definitions"]
            .iter()
            .find_map(|k| schema.get(k).and_then(Value::as_object)),
        expanding: Vec::new(),
        inlined: HashMap::new(),
        inlined_bytes: 0,
        param,
    };
    sanitizer.node(schema)
}

struct Sanitizer<'a> {
    defs: Option<&'a Map<String, Value>>,
    /// The `$ref`s being inlined, outermost first: meeting one again means recursion.
    expanding: Vec<&'a str>,
    /// Each definition sanitised once, with its size in bytes.
    inlined: HashMap<&'a str, (Value, usize)>,
    /// Bytes inlined so far, counting every use of a definition.
    inlined_bytes: usize,
    param: &'static str,
}

impl<'a> Sanitizer<'a> {
    fn node(&mut self, node: &'a Value) -> Result<Value, GatewayError> {
        let Value::Object(obj) = node else {
            return Ok(node.clone());
        };
        // Schemas this node takes keywords from: its `$ref`, its `allOf` members and a lone
        // non-null `anyOf` branch. Its own keywords (a description at the point of use, say)
        // win over theirs.
        let mut inherited = Vec::new();
        if let Some(reference) = obj.get("$ref").and_then(Value::as_str) {
            inherited.push(self.reference(reference)?);
        }
        for member in obj
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            inherited.push(self.node(member)?);
        }
        let mut own = Map::new();
        let mut nullable = obj.get("nullable").and_then(Value::as_bool) == Some(true);
        let branches = obj
            .get("anyOf")
            .or_else(|| obj.get("oneOf"))
            .and_then(Value::as_array);
        if let Some(branches) = branches {
            let is_null = |b: &Value| b.get("type").and_then(Value::as_str) == Some("null");
            let real: Vec<&Value> = branches.iter().filter(|b| !is_null(b)).collect();
            nullable |= real.len() < branches.len();
            match real.as_slice() {
                [] => {}
                [only] => inherited.push(self.node(only)?),
                many => {
                    let mut sanitized = Vec::with_capacity(many.len());
                    for branch in many {
                        sanitized.push(self.node(branch)?);
                    }
                    own.insert("anyOf".into(), Value::Array(sanitized));
                }
            }
        }

        match obj.get("type") {
            Some(Value::String(t)) if t == "null" => nullable = true,
            Some(Value::String(t)) => {
                own.insert("type".into(), json!(t.to_ascii_uppercase()));
            }
            Some(Value::Array(types)) => {
                let real: Vec<String> = types
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|t| *t != "null")
                    .map(str::to_ascii_uppercase)
                    .collect();
                nullable |= real.len() < types.len();
                match real.as_slice() {
                    [] => {}
                    [only] => {
                        own.insert("type".into(), json!(only));
                    }
                    // With properties or items, those say which of the types is meant.
                    _ if obj.contains_key("properties") => {
                        own.insert("type".into(), json!("OBJECT"));
                    }
                    _ if obj.contains_key("items") => {
                        own.insert("type".into(), json!("ARRAY"));
                    }
                    // Scalars of several types: a union keeps them all.
                    many => {
                        let any: Vec<Value> = many.iter().map(|t| json!({"type": t})).collect();
                        own.insert("anyOf".into(), Value::Array(any));
                    }
                }
            }
            _ => {}
        }
        for key in SCHEMA_KEEP {
            if let Some(v) = obj.get(key) {
                own.insert(key.into(), v.clone());
            }
        }
        if let Some(Value::Object(props)) = obj.get("properties") {
            let mut sanitized = Map::with_capacity(props.len());
            for (name, schema) in props {
                sanitized.insert(name.clone(), self.node(schema)?);
            }
            own.insert("properties".into(), Value::Object(sanitized));
        }
        if let Some(required) = obj.get("required") {
            own.insert("required".into(), required.clone());
        }
        if let Some(items) = obj.get("items").filter(|i| i.is_object()) {
            let items = self.node(items)?;
            own.insert("items".into(), items);
        }
        if let Some(values) = obj.get("enum") {
            own.insert("enum".into(), values.clone());
        }
        if let Some(value) = obj.get("const") {
            own.insert("enum".into(), json!([value]));
        }
        if let Some(format) = obj.get("format") {
            own.insert("format".into(), format.clone());
        }
        if nullable {
            own.insert("nullable".into(), json!(true));
        }
        for schema in inherited {
            merge_into(&mut own, schema);
        }
        Ok(Value::Object(fit_gemini_rules(own)))
    }

    fn reference(&mut self, reference: &'a str) -> Result<Value, GatewayError> {
        let name = reference
            .strip_prefix("#/$defs/")
            .or_else(|| reference.strip_prefix("#/definitions/"));
        let Some((name, target)) = name.and_then(|n| Some((n, self.defs?.get(n)?))) else {
            return Err(invalid(
                format!("schema $ref '{reference}' does not name an entry of the schema's $defs"),
                self.param,
            ));
        };
        if let Some(size) = self.inlined.get(name).map(|(_, size)| *size) {
            self.charge(size)?;
            if let Some((schema, _)) = self.inlined.get(name) {
                return Ok(schema.clone());
            }
        }
        if self.expanding.contains(&name) {
            return Err(invalid(
                format!("recursive schema $ref '{reference}' cannot be expressed in Gemini's schema subset"),
                self.param,
            ));
        }
        self.expanding.push(name);
        let result = self.node(target);
        self.expanding.pop();
        let schema = result?;
        let size = schema.to_string().len();
        self.charge(size)?;
        self.inlined.insert(name, (schema.clone(), size));
        Ok(schema)
    }

    fn charge(&mut self, bytes: usize) -> Result<(), GatewayError> {
        self.inlined_bytes += bytes;
        if self.inlined_bytes > MAX_INLINED_BYTES {
            return Err(invalid(
                format!("schema is too large for provider kind gemini once its $refs are inlined (over {MAX_INLINED_BYTES} bytes)"),
                self.param,
            ));
        }
        Ok(())
    }
}

/// Adds `from`'s keywords to `into` (which keeps its own); properties and required lists of
/// both are combined, as `allOf` means all of them hold.
fn merge_into(into: &mut Map<String, Value>, from: Value) {
    let Value::Object(from) = from else { return };
    for (key, value) in from {
        match (into.get_mut(&key), value) {
            (Some(Value::Object(mine)), Value::Object(theirs)) if key == "properties" => {
                for (k, v) in theirs {
                    mine.entry(k).or_insert(v);
                }
            }
            (Some(Value::Array(mine)), Value::Array(theirs)) if key == "required" => {
                for v in theirs {
                    if !mine.contains(&v) {
                        mine.push(v);
                    }
                }
            }
            (Some(_), _) => {}
            (None, value) => {
                into.insert(key, value);
            }
        }
    }
}

/// Gemini's checks beyond keyword names, each one a 400 seen in the wild: `properties` and
/// `required` only on OBJECT, required names must exist, `enum` only of strings on STRING,
/// `format` only the few it knows per type.
fn fit_gemini_rules(mut node: Map<String, Value>) -> Map<String, Value> {
    if !node.contains_key("type") && !node.contains_key("anyOf") {
        let inferred = if node.contains_key("properties") {
            Some("OBJECT")
        } else if node.contains_key("items") {
            Some("ARRAY")
        } else if node.contains_key("enum") {
            Some("STRING")
        } else {
            None
        };
        if let Some(t) = inferred {
            node.insert("type".into(), json!(t));
        }
    }
    let kind = node.get("type").and_then(Value::as_str).map(str::to_string);
    let kind = kind.as_deref();
    if kind != Some("OBJECT") {
        node.remove("properties");
        node.remove("required");
        node.remove("propertyOrdering");
    }
    if kind != Some("ARRAY") {
        node.remove("items");
    }
    let known: Vec<String> = match node.get("properties") {
        Some(Value::Object(props)) => props.keys().cloned().collect(),
        _ => Vec::new(),
    };
    if let Some(Value::Array(required)) = node.get_mut("required") {
        required.retain(|r| r.as_str().is_some_and(|r| known.iter().any(|k| k == r)));
    }
    if node
        .get("required")
        .and_then(Value::as_array)
        .is_some_and(Vec::is_empty)
    {
        node.remove("required");
    }
    let strings_only = node
        .get("enum")
        .and_then(Value::as_array)
        .is_some_and(|values| !values.is_empty() && values.iter().all(Value::is_string));
    if kind != Some("STRING") || !strings_only {
        // A number enum cannot become strings without changing the arguments' types.
        node.remove("enum");
    }
    let format_ok = matches!(
        (kind, node.get("format").and_then(Value::as_str)),
        (Some("STRING"), Some("enum" | "date-time"))
            | (Some("INTEGER"), Some("int32" | "int64"))
            | (Some("NUMBER"), Some("float" | "double"))
    );
    if !format_ok {
        node.remove("format");
    }
    node
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn case20_schemas_are_reduced_to_the_gemini_subset() {
        let schema = json!({"$schema": "x", "type": "object", "additionalProperties": false, "title": "T",
            "properties": {
                "a": {"type": ["string", "null"], "examples": ["x"], "default": "d"},
                "b": {"const": "fixed"},
                "c": {"type": "array", "items": {"$ref": "#/$defs/item"}},
                "d": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "e": {"anyOf": [{"$ref": "#/$defs/item"}, {"type": "null"}], "description": "maybe"},
                "f": {"type": "object", "propertyNames": {"pattern": "^x"}, "patternProperties": {"^x": {}},
                      "properties": {"g": {"type": "string", "format": "email"}}},
                "h": {"type": "string", "format": "date-time", "enum": ["2020-01-01T00:00:00Z"]},
                "i": {"type": "integer", "enum": [1, 2], "format": "int64"},
                "j": {"type": ["integer", "string"]}
            },
            "required": ["a", "missing"],
            "$defs": {"item": {"type": "object", "title": "Item", "properties": {"n": {"type": "number", "default": 1}}}}});
        assert_eq!(
            sanitize_schema(&schema, "tools").unwrap(),
            json!({"type": "OBJECT", "required": ["a"], "properties": {
                "a": {"type": "STRING", "nullable": true},
                "b": {"type": "STRING", "enum": ["fixed"]},
                "c": {"type": "ARRAY", "items": {"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}}},
                "d": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]},
                "e": {"type": "OBJECT", "description": "maybe", "nullable": true,
                      "properties": {"n": {"type": "NUMBER"}}},
                "f": {"type": "OBJECT", "properties": {"g": {"type": "STRING"}}},
                "h": {"type": "STRING", "format": "date-time", "enum": ["2020-01-01T00:00:00Z"]},
                "i": {"type": "INTEGER", "format": "int64"},
                "j": {"anyOf": [{"type": "INTEGER"}, {"type": "STRING"}]}
            }})
        );
    }

    #[test]
    fn case20_ref_siblings_all_of_and_missing_types() {
        let schema = json!({
            "definitions": {"Base": {"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}},
            "properties": {
                "x": {"$ref": "#/definitions/Base", "description": "the x"},
                "y": {"allOf": [{"$ref": "#/definitions/Base"},
                                {"properties": {"n": {"type": "integer"}}, "required": ["n"]}]},
                "z": {"enum": ["p", "q"]},
                "w": {"items": {"type": "string"}},
                "s": {"type": "string", "properties": {"bogus": {}}, "required": ["bogus"], "items": {}},
                "k": {"type": "boolean", "const": true}
            }
        });
        assert_eq!(
            sanitize_schema(&schema, "tools").unwrap(),
            json!({"type": "OBJECT", "properties": {
                "x": {"type": "OBJECT", "description": "the x", "required": ["id"],
                      "properties": {"id": {"type": "STRING"}}},
                "y": {"type": "OBJECT", "required": ["id", "n"],
                      "properties": {"id": {"type": "STRING"}, "n": {"type": "INTEGER"}}},
                "z": {"type": "STRING", "enum": ["p", "q"]},
                "w": {"type": "ARRAY", "items": {"type": "STRING"}},
                "s": {"type": "STRING"},
                "k": {"type": "BOOLEAN"}
            }})
        );
    }

    #[test]
    fn case20_recursive_dangling_and_exploding_refs_are_refused() {
        let recursive = json!({"$defs": {"n": {"type": "object", "properties": {"next": {"$ref": "#/$defs/n"}}}}, "$ref": "#/$defs/n"});
        let err = sanitize_schema(&recursive, "response_format").unwrap_err();
        assert_eq!((err.status(), err.param()), (400, Some("response_format")));
        assert!(err.to_string().contains("recursive"), "{err}");

        let dangling = json!({"type": "object", "properties": {"a": {"$ref": "#/$defs/nope"}}});
        assert_eq!(
            sanitize_schema(&dangling, "tools").unwrap_err().param(),
            Some("tools")
        );

        // Eight defs each using the next one eight times: 8^8 nodes if inlined.
        let mut defs = Map::new();
        for level in 0..8 {
            let mut props = Map::new();
            for p in 0..8 {
                let target = if level == 7 {
                    json!({"type": "string"})
                } else {
                    json!({ "$ref": format!("#/$defs/d{}", level + 1) })
                };
                props.insert(format!("p{p}"), target);
            }
            defs.insert(
                format!("d{level}"),
                json!({"type": "object", "properties": props}),
            );
        }
        let bomb = json!({"$defs": defs, "$ref": "#/$defs/d0"});
        let started = std::time::Instant::now();
        let err = sanitize_schema(&bomb, "tools").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));

        // One big definition used many times costs its size each time.
        let big: Vec<String> = (0..2000).map(|i| format!("{i:0>100}")).collect();
        let uses = |n: usize| {
            let props: Map<String, Value> = (0..n)
                .map(|i| (format!("p{i}"), json!({"$ref": "#/$defs/big"})))
                .collect();
            json!({"type": "object", "properties": props,
                   "$defs": {"big": {"type": "string", "enum": big}}})
        };
        assert!(sanitize_schema(&uses(3), "tools").is_ok());
        let err = sanitize_schema(&uses(20), "tools").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    #[test]
    fn case20_tools_and_response_format_use_the_sanitised_schema() {
        let body = body_with(
            hello(),
            json!({"tools": [
                    {"type": "function", "function": {"name": "noargs"}},
                    {"type": "function", "function": {"name": "empty", "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}},
                    {"type": "function", "function": {"name": "q", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}],
                   "tool_choice": {"type": "function", "function": {"name": "q"}},
                   "response_format": {"type": "json_schema", "json_schema": {"name": "o", "strict": true,
                       "schema": {"type": "object", "additionalProperties": false, "properties": {"v": {"type": "integer"}}, "required": ["v"]}}}}),
        )
        .unwrap();
        assert_eq!(
            body["tools"],
            json!([{"functionDeclarations": [{"name": "noargs"}, {"name": "empty"},
                {"name": "q", "parameters": {"type": "OBJECT", "properties": {"q": {"type": "STRING"}}}}]}])
        );
        assert_eq!(
            body["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["q"]}})
        );
        assert_eq!(
            body["generationConfig"],
            json!({"responseMimeType": "application/json", "responseSchema":
                {"type": "OBJECT", "properties": {"v": {"type": "INTEGER"}}, "required": ["v"]}})
        );
        let err =
            body_with(hello(), json!({"tools": [{"type": "web_search_preview"}]})).unwrap_err();
        assert_eq!(err.param(), Some("tools"));
    }
}
