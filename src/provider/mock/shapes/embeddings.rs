//! The mock's embeddings: deterministic vectors per input, as a list (floats or base64).

use serde_json::{json, Map, Value};

use super::*;

/// The inputs of an embeddings request as text (token arrays as their numbers).
pub fn embedding_inputs(input: &Value) -> Result<Vec<String>, String> {
    let as_text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Array(tokens) if tokens.iter().all(Value::is_u64) => Some(
                tokens
                    .iter()
                    .map(|t| t.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            _ => None,
        }
    };
    let inputs = match input {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_u64) => {
            vec![as_text(input).unwrap_or_default()]
        }
        Value::Array(items) => items
            .iter()
            .map(as_text)
            .collect::<Option<Vec<_>>>()
            .ok_or("'input' must be a string, an array of strings or of token arrays")?,
        _ => return Err("'input' must be a string, an array of strings or of token arrays".into()),
    };
    if inputs.is_empty() {
        return Err("'input' must not be empty".into());
    }
    Ok(inputs)
}

/// A deterministic unit vector for `text`.
pub fn embedding(text: &str, dimensions: usize) -> Vec<f32> {
    let raw: Vec<f64> = (0..dimensions)
        .map(|d| {
            let h = fnv1a(format!("{d}:{text}").as_bytes());
            (h % 2001) as f64 / 1000.0 - 1.0
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-9);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// An embeddings `list` object; `base64` encodes each vector as little-endian f32 bytes, as
/// OpenAI's `encoding_format: base64` does.
pub fn embeddings_list(inputs: &[String], model: &str, dimensions: usize, base64: bool) -> Value {
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = embedding(text, dimensions);
            let encoded = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({ "object": "embedding", "index": i, "embedding": encoded })
        })
        .collect();
    let tokens: u64 = inputs.iter().map(|t| tokens::count_tokens(t)).sum();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens }
    })
}

/// The `dimensions` and `encoding_format` of an embeddings request.
pub fn embedding_options(v: &Map<String, Value>) -> Result<(usize, bool), String> {
    let dimensions = match v.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(d) => d
            .as_u64()
            .filter(|d| (1..=MAX_DIMENSIONS as u64).contains(d))
            .ok_or(format!(
                "'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}"
            ))? as usize,
    };
    let base64 = match v.get("encoding_format").and_then(Value::as_str) {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(format!(
                "'encoding_format' must be float or base64, got {other:?}"
            ))
        }
    };
    Ok((dimensions, base64))
}
