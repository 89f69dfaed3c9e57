//! The JSON Canonicalization Scheme (RFC 8785) for the documents this crate writes: object members
//! sorted by their UTF-16 code units, no white space, strings escaped as ECMAScript does.

use serde_json::Value;

/// The canonical form of `value`.
///
/// Numbers are written as `serde_json` writes them, which is the ECMAScript form for integers; the
/// Sigstore documents canonicalized here carry 64-bit integers as strings and no fractions.
pub fn canonical(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write(value, &mut out);
    out
}

fn write(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => write_string(s, out),
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

/// serde_json escapes exactly what RFC 8785 §3.2.2.2 asks: `"`, `\`, the short forms `\b \f \n \r \t`,
/// other control characters as `\u00xx` in lower case, and nothing else.
fn write_string(s: &str, out: &mut Vec<u8>) {
    out.extend_from_slice(Value::String(s.to_owned()).to_string().as_bytes());
}
