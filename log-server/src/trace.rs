//! W3C trace context (`traceparent`, `tracestate`) across the API's edges: a call that arrives with one
//! continues the caller's trace, and a write forwarded to a shard's leader carries the current span's,
//! so a submission is one trace across nodes.
//!
//! The propagator is OpenTelemetry's global one: a no-op until a process that exports traces installs
//! the W3C one, so none of this costs anything when tracing is off.

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Longest `tracestate` taken from a caller (the W3C limit is 32 members of up to 256 bytes each): a
/// caller's state is copied into every span of its trace, which must not let callers grow them.
const MAX_TRACESTATE: usize = 512;

struct Get<'a>(&'a MetadataMap);

impl Extractor for Get<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        let v = self.0.get(key).and_then(|v| v.to_str().ok())?;
        (key != "tracestate" || v.len() <= MAX_TRACESTATE).then_some(v)
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct Set<'a>(&'a mut MetadataMap);

impl Injector for Set<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Makes `span` continue the trace named in a call's `metadata` (gRPC, or HTTP headers through
/// `auth::metadata_of`), if it names one.
pub(crate) fn continue_from(span: &tracing::Span, metadata: &MetadataMap) {
    if metadata.get("traceparent").is_none() {
        return;
    }
    let cx = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Get(metadata)));
    // Refused only for a span that is already closed or not exported: nothing to continue then.
    let _ = span.set_parent(cx);
}

/// Writes the current span's trace context into an outgoing call's `metadata`.
pub(crate) fn inject_current(metadata: &mut MetadataMap) {
    let cx = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut Set(metadata)));
}
