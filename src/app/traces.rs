//! Traces of the `zfabric` commands: the library's spans exported over
//! OTLP, and the ids logs carry.
//!
//! - Export: on when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, off otherwise. OTLP over
//!   HTTP with protobuf bodies (`<endpoint>/v1/traces`), batched (the
//!   standard `OTEL_BSP_*` variables tune the batches); the service is
//!   `OTEL_SERVICE_NAME` (`OTEL_RESOURCE_ATTRIBUTES` adds to the
//!   resource), `zfabric` when unset. Export turns the library's sampling
//!   on ([`zfabric::trace::set_sampling`]): calls made outside any trace
//!   start one.
//! - Bridge: the library makes `tracing` spans with W3C ids of its own
//!   (the ids its messages carry). `tracing-opentelemetry` turns them into
//!   OpenTelemetry spans; [`Bridge`] makes those spans keep the library's
//!   trace id, span id and parent, so that the spans of every process of a
//!   call join into one trace.
//! - Log ids: [`SpanIds`] keeps the ids of the library span being run on
//!   each thread, which JSON log lines carry as `trace_id` and `span_id`.
//!
//! Guarantees: only the library's operation spans (target
//! `zfabric::trace`) are exported; the export never writes to stdout or
//! stderr; spans still queued when the command ends are flushed before it
//! exits. Does not: export metrics or logs over OTLP, or retry a
//! receiver that is down beyond the exporter's own attempts (those spans
//! are lost).

use std::cell::{Cell, RefCell};
use std::fmt;

use opentelemetry::trace::{
    SpanBuilder, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer,
    TracerProvider,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracer, SdkTracerProvider};
use tracing::span;
use tracing::Subscriber;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// The export settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TraceSettings {
    /// Whether an OTLP endpoint is configured.
    pub(crate) export: bool,
    /// `OTEL_SERVICE_NAME`, if set.
    pub(crate) service: Option<String>,
}

impl TraceSettings {
    /// Reads the settings through `var` (the environment, or a test's map).
    pub(crate) fn read(var: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| var(k).is_some_and(|v| !v.trim().is_empty());
        TraceSettings {
            export: set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            service: var("OTEL_SERVICE_NAME").filter(|v| !v.trim().is_empty()),
        }
    }
}

/// Builds the exporting tracer provider, or says why it cannot.
pub(crate) fn provider(s: &TraceSettings) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .build()
        .map_err(|e| e.to_string())?;
    let mut resource = opentelemetry_sdk::Resource::builder();
    if s.service.is_none() {
        resource = resource.with_service_name("zfabric");
    }
    let resource = resource
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(LibraryIds::default())
        .with_resource(resource)
        .build())
}

/// The tracer `tracing-opentelemetry` builds spans with.
pub(crate) fn tracer(provider: &SdkTracerProvider) -> Bridge {
    Bridge(provider.tracer("zfabric"))
}

thread_local! {
    /// The ids the span being built on this thread must get.
    static NEXT: Cell<Option<(u128, u64)>> = const { Cell::new(None) };
    /// The library spans entered on this thread, innermost last.
    static ENTERED: RefCell<Vec<(u128, u64)>> = const { RefCell::new(Vec::new()) };
}

/// The SDK's id generator, handing out the library's ids for the span
/// [`Bridge`] is building and random ones otherwise.
#[derive(Debug, Default)]
struct LibraryIds(RandomIdGenerator);

impl IdGenerator for LibraryIds {
    fn new_trace_id(&self) -> TraceId {
        match NEXT.with(Cell::get) {
            Some((t, _)) => TraceId::from(t),
            None => self.0.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match NEXT.with(Cell::get) {
            Some((_, s)) => SpanId::from(s),
            None => self.0.new_span_id(),
        }
    }
}

/// A span's W3C ids as the library recorded them in its fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct LibraryIdsOf {
    trace: Option<u128>,
    span: Option<u64>,
    parent: Option<u64>,
    state: Option<String>,
}

impl LibraryIdsOf {
    fn take(&mut self, key: &str, value: &str) -> bool {
        match key {
            "trace_id" => self.trace = u128::from_str_radix(value, 16).ok().filter(|v| *v != 0),
            "span_id" => self.span = u64::from_str_radix(value, 16).ok().filter(|v| *v != 0),
            "parent_span_id" => {
                self.parent = u64::from_str_radix(value, 16).ok().filter(|v| *v != 0)
            }
            "tracestate" => self.state = Some(value.to_owned()),
            _ => return false,
        }
        true
    }
}

/// The tracer handed to `tracing-opentelemetry`: an SDK tracer that builds
/// each library span with the library's trace id, span id and parent
/// (read from, and removed from, the span's attributes). Other spans are
/// built as the SDK would.
#[derive(Debug, Clone)]
pub(crate) struct Bridge(SdkTracer);

impl Tracer for Bridge {
    type Span = opentelemetry_sdk::trace::Span;

    fn build_with_context(&self, mut builder: SpanBuilder, parent_cx: &Context) -> Self::Span {
        let mut ids = LibraryIdsOf::default();
        if let Some(attrs) = &mut builder.attributes {
            attrs.retain(|kv| match &kv.value {
                Value::String(v) => !ids.take(kv.key.as_str(), v.as_str()),
                _ => true,
            });
        }
        let (Some(trace), Some(span)) = (ids.trace, ids.span) else {
            return self.0.build_with_context(builder, parent_cx);
        };
        let parent = match ids.parent {
            Some(p) => {
                let state = ids
                    .state
                    .as_deref()
                    .and_then(|s| s.parse::<TraceState>().ok())
                    .unwrap_or_default();
                Context::new().with_remote_span_context(SpanContext::new(
                    TraceId::from(trace),
                    SpanId::from(p),
                    TraceFlags::SAMPLED,
                    true,
                    state,
                ))
            }
            None => Context::new(),
        };
        NEXT.with(|n| n.set(Some((trace, span))));
        let built = self.0.build_with_context(builder, &parent);
        NEXT.with(|n| n.set(None));
        built
    }
}

/// Collects the library's id fields of a span.
struct IdVisitor<'a>(&'a mut LibraryIdsOf);

impl tracing::field::Visit for IdVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.take(field.name(), value);
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        if matches!(field.name(), "trace_id" | "span_id") {
            self.0.take(field.name(), &format!("{value:?}"));
        }
    }
}

/// The ids of a library span, kept in its extensions.
#[derive(Debug, Clone, Copy)]
struct Ids(u128, u64);

/// A layer that keeps, per thread, the ids of the library span being run
/// there ([`current_ids`]).
#[derive(Debug, Default)]
pub(crate) struct SpanIds;

impl<S> Layer<S> for SpanIds
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: LayerContext<'_, S>) {
        let mut ids = LibraryIdsOf::default();
        attrs.record(&mut IdVisitor(&mut ids));
        if let (Some(t), Some(s), Some(span)) = (ids.trace, ids.span, ctx.span(id)) {
            span.extensions_mut().insert(Ids(t, s));
        }
    }

    fn on_enter(&self, id: &span::Id, ctx: LayerContext<'_, S>) {
        if let Some(Ids(t, s)) = ctx
            .span(id)
            .and_then(|s| s.extensions().get::<Ids>().copied())
        {
            ENTERED.with(|e| e.borrow_mut().push((t, s)));
        }
    }

    fn on_exit(&self, id: &span::Id, ctx: LayerContext<'_, S>) {
        if ctx
            .span(id)
            .is_some_and(|s| s.extensions().get::<Ids>().is_some())
        {
            ENTERED.with(|e| e.borrow_mut().pop());
        }
    }
}

/// The trace and span id of the library span this thread runs in, if any.
pub(crate) fn current_ids() -> Option<(u128, u64)> {
    ENTERED.with(|e| e.borrow().last().copied())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn export_is_on_only_with_an_endpoint() {
        let read = |vars: &[(&str, &str)]| {
            let m: HashMap<String, String> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            TraceSettings::read(|k| m.get(k).cloned())
        };
        assert!(!read(&[]).export);
        assert!(!read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).export);
        assert!(read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).export);
        assert!(read(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://x/v1/traces")]).export);
        let s = read(&[("OTEL_SERVICE_NAME", "pricing")]);
        assert_eq!(s.service.as_deref(), Some("pricing"));
    }

    #[test]
    fn the_bridge_builds_library_spans_with_the_library_ids() {
        use opentelemetry::trace::Span as _;
        let provider = SdkTracerProvider::builder()
            .with_id_generator(LibraryIds::default())
            .build();
        let bridge = tracer(&provider);
        let builder = SpanBuilder::from_name("call pricing").with_attributes(vec![
            KeyValue::new("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736"),
            KeyValue::new("span_id", "00f067aa0ba902b7"),
            KeyValue::new("parent_span_id", "b7ad6b7169203331"),
            KeyValue::new("messaging.system", "zeromq"),
        ]);
        let span = bridge.build_with_context(builder, &Context::new());
        let sc = span.span_context();
        assert_eq!(
            sc.trace_id(),
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736u128)
        );
        assert_eq!(sc.span_id(), SpanId::from(0x00f067aa0ba902b7u64));
        // Without library ids, the SDK's own.
        let other = bridge.build_with_context(SpanBuilder::from_name("x"), &Context::new());
        assert_ne!(
            other.span_context().span_id(),
            SpanId::from(0x00f067aa0ba902b7u64)
        );
        assert!(other.span_context().is_valid());
        assert!(NEXT.with(Cell::get).is_none());
    }
}
