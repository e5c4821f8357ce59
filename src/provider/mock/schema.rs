//! Deterministic instances of JSON Schemas, so the mock can answer `json_schema` response formats
//! and call tools with arguments that fit their parameters (as pydantic models and strict
//! function schemas expect): `$ref`/`$defs`, `anyOf`/`oneOf`/`allOf`, `enum`, `const`, objects,
//! arrays, string formats and numeric bounds.

use serde_json::{json, Map, Value};

/// Nesting beyond this is answered with `null` (recursive schemas, hostile ones).
const MAX_DEPTH: usize = 12;

/// An instance of `schema`; strings mention `hint` (e.g. the prompt) so answers differ by request.
pub fn instance(schema: &Value, hint: &str) -> Value {
    let hint: String = hint
        .split_whitespace()
        .take(6)
        .collect::<Vec<_>>()
        .join(" ");
    generate(schema, schema, &hint, "value", 0)
}

fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let path = reference.strip_prefix('#')?;
    if path.is_empty() {
        return Some(root);
    }
    root.pointer(path)
}

fn generate(schema: &Value, root: &Value, hint: &str, name: &str, depth: usize) -> Value {
    if depth > MAX_DEPTH {
        return Value::Null;
    }
    let Some(s) = schema.as_object() else {
        // `true` or an empty schema: anything goes.
        return json!(format!("mock {name}"));
    };
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        return match resolve(root, r) {
            Some(target) => generate(target, root, hint, name, depth + 1),
            None => Value::Null,
        };
    }
    if let Some(c) = s.get("const") {
        return c.clone();
    }
    if let Some(first) = s
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(options) = s.get(key).and_then(Value::as_array) {
            // The first option that is not `null`, so optional fields get a value.
            let pick = options
                .iter()
                .find(|o| o.get("type").and_then(Value::as_str) != Some("null"))
                .or_else(|| options.first());
            if let Some(o) = pick {
                return generate(o, root, hint, name, depth + 1);
            }
        }
    }
    if let Some(parts) = s.get("allOf").and_then(Value::as_array) {
        let mut merged = Map::new();
        for p in parts {
            if let Value::Object(o) = generate(p, root, hint, name, depth + 1) {
                merged.extend(o);
            }
        }
        return Value::Object(merged);
    }
    let kind = match s.get("type") {
        Some(Value::String(t)) => t.as_str(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("null"),
        _ if s.contains_key("properties") => "object",
        _ if s.contains_key("items") => "array",
        _ => "string",
    };
    match kind {
        "object" => {
            let mut out = Map::new();
            if let Some(props) = s.get("properties").and_then(Value::as_object) {
                for (k, v) in props {
                    out.insert(k.clone(), generate(v, root, hint, k, depth + 1));
                }
            }
            Value::Object(out)
        }
        "array" => {
            let n = s
                .get("minItems")
                .and_then(Value::as_u64)
                .unwrap_or(1)
                .clamp(1, 8);
            let n = s
                .get("maxItems")
                .and_then(Value::as_u64)
                .map_or(n, |max| n.min(max));
            let items = s.get("items").cloned().unwrap_or(json!({}));
            Value::Array(
                (0..n)
                    .map(|_| generate(&items, root, hint, name, depth + 1))
                    .collect(),
            )
        }
        "integer" => {
            let min = bound(s, "minimum", "exclusiveMinimum", 1.0).ceil();
            let max = bound_max(s).floor();
            json!(clamp(1.0_f64.max(min), min, max) as i64)
        }
        "number" => {
            let min = bound(s, "minimum", "exclusiveMinimum", 0.5);
            let max = bound_max(s);
            json!(clamp(1.5_f64.max(min), min, max))
        }
        "boolean" => json!(true),
        "null" => Value::Null,
        _ => json!(string_for(s, hint, name)),
    }
}

fn bound(s: &Map<String, Value>, inclusive: &str, exclusive: &str, step: f64) -> f64 {
    match (
        s.get(inclusive).and_then(Value::as_f64),
        s.get(exclusive).and_then(Value::as_f64),
    ) {
        (Some(m), _) => m,
        (None, Some(m)) => m + step,
        _ => f64::MIN,
    }
}

fn bound_max(s: &Map<String, Value>) -> f64 {
    match (
        s.get("maximum").and_then(Value::as_f64),
        s.get("exclusiveMaximum").and_then(Value::as_f64),
    ) {
        (Some(m), _) => m,
        (None, Some(m)) => m - 1.0,
        _ => f64::MAX,
    }
}

fn clamp(v: f64, min: f64, max: f64) -> f64 {
    if min > max {
        return min;
    }
    v.max(min).min(max)
}

fn string_for(s: &Map<String, Value>, hint: &str, name: &str) -> String {
    let text = match s.get("format").and_then(Value::as_str) {
        Some("date-time") => "2024-01-01T00:00:00Z".to_string(),
        Some("date") => "2024-01-01".to_string(),
        Some("time") => "12:00:00".to_string(),
        Some("email") => "mock@example.com".to_string(),
        Some("uri" | "url") => "https://example.com/mock".to_string(),
        Some("uuid") => "00000000-0000-4000-8000-000000000000".to_string(),
        Some("ipv4") => "192.0.2.1".to_string(),
        _ if hint.is_empty() => format!("mock {name}"),
        _ => format!("mock {name} for: {hint}"),
    };
    let min = s.get("minLength").and_then(Value::as_u64).unwrap_or(0) as usize;
    let max = s
        .get("maxLength")
        .and_then(Value::as_u64)
        .map_or(usize::MAX, |m| m as usize);
    let mut text: String = text.chars().take(max).collect();
    while text.chars().count() < min {
        text.push('x');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pydantic_schema_gets_a_fitting_instance() {
        // What pydantic emits for a model with a nested model, an enum, an optional and a list.
        let schema = json!({
            "$defs": {
                "Unit": {"enum": ["celsius", "fahrenheit"], "type": "string"},
                "City": {"properties": {"name": {"type": "string"}, "population": {"type": "integer", "minimum": 1000}},
                         "required": ["name", "population"], "type": "object", "additionalProperties": false}
            },
            "properties": {
                "city": {"$ref": "#/$defs/City"},
                "unit": {"$ref": "#/$defs/Unit"},
                "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
                "temps": {"items": {"type": "number", "exclusiveMaximum": 1.0}, "type": "array", "minItems": 2},
                "ok": {"type": "boolean"},
                "when": {"type": "string", "format": "date-time"}
            },
            "required": ["city", "unit", "note", "temps", "ok", "when"],
            "type": "object", "additionalProperties": false
        });
        let v = instance(&schema, "What is the weather in Lima today please");
        assert_eq!(v["unit"], "celsius");
        assert_eq!(v["city"]["population"], 1000);
        assert!(v["city"]["name"].as_str().unwrap().contains("Lima"));
        assert!(v["note"].is_string());
        assert_eq!(v["temps"].as_array().unwrap().len(), 2);
        assert!(v["temps"][0].as_f64().unwrap() <= 0.0);
        assert_eq!(v["ok"], true);
        assert_eq!(v["when"], "2024-01-01T00:00:00Z");
        assert_eq!(
            v,
            instance(&schema, "What is the weather in Lima today please")
        );
    }

    #[test]
    fn recursive_and_odd_schemas_terminate() {
        let schema = json!({"$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}}, "$ref": "#/$defs/Node"});
        let v = instance(&schema, "");
        assert!(v.is_object());
        assert_eq!(instance(&json!({"$ref": "#/nowhere"}), ""), Value::Null);
        assert_eq!(instance(&json!({"const": 3}), ""), json!(3));
        assert_eq!(
            instance(&json!({"type": ["null", "integer"]}), ""),
            json!(1)
        );
        assert_eq!(
            instance(&json!({"type": "string", "maxLength": 3}), "long hint"),
            json!("moc")
        );
        assert!(instance(&json!(true), "").is_string());
    }
}
