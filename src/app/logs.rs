//! Logs of the `zfabric` commands: where they go, how much, in what form.
//!
//! - Filter: `ZFABRIC_LOG`, else `RUST_LOG`, else `warn`, in
//!   `tracing-subscriber`'s `EnvFilter` syntax (`info`,
//!   `zfabric=debug,warn`, …). A filter that does not parse is reported on
//!   stderr and `warn` is used.
//! - Form: `ZFABRIC_LOG_FORMAT=json` writes one JSON object per line (with
//!   the span fields, for log shippers); anything else, or unset, the
//!   human-readable text.
//! - Colour: ANSI colour codes only when stderr is a terminal, so files and
//!   pipes get plain text; `NO_COLOR` turns them off everywhere.
//! - Trace ids: a JSON line written inside one of the library's spans
//!   (a traced call, serve, publish, …) carries that span's `trace_id` and
//!   `span_id` (W3C, lower-case hex) as top-level keys, the ids its trace
//!   back end shows ([`traces`](super::traces)).
//!
//! Guarantees: logs go to stderr, never stdout (stdout carries command
//! output and the `run`/`bench` reports). Does not: rotate or ship logs.

use std::io::IsTerminal;

use tracing::{Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use super::traces;

/// The log settings read from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogSettings {
    /// The filter directives.
    pub(crate) filter: String,
    /// Where the filter came from (for the message when it is bad).
    pub(crate) from: &'static str,
    /// JSON lines instead of text.
    pub(crate) json: bool,
    /// ANSI colours.
    pub(crate) ansi: bool,
}

impl LogSettings {
    /// Reads the settings through `var` (the environment, or a test's map).
    pub(crate) fn read(var: impl Fn(&str) -> Option<String>, terminal: bool) -> Self {
        let (filter, from) = match (var("ZFABRIC_LOG"), var("RUST_LOG")) {
            (Some(f), _) if !f.trim().is_empty() => (f, "ZFABRIC_LOG"),
            (_, Some(f)) if !f.trim().is_empty() => (f, "RUST_LOG"),
            _ => ("warn".to_string(), "the default"),
        };
        let json = var("ZFABRIC_LOG_FORMAT").is_some_and(|f| f.eq_ignore_ascii_case("json"));
        let ansi = terminal && !json && var("NO_COLOR").is_none_or(|v| v.is_empty());
        LogSettings {
            filter,
            from,
            json,
            ansi,
        }
    }
}

/// What `init` set up that must be closed before the process exits.
#[derive(Debug)]
pub(crate) struct Telemetry {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still queued (blocks until the exporter is done
    /// or gives up). Call outside the runtime, before exiting.
    pub(crate) fn shutdown(self) {
        if let Some(p) = self.provider {
            let _ = p.shutdown();
        }
    }
}

/// A boxed layer over the registry.
type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the subscriber for this process, from the environment: logs
/// (as above) and, when an OTLP endpoint is configured, the span export
/// ([`traces`](super::traces)).
pub(crate) fn init() -> Telemetry {
    let s = LogSettings::read(|k| std::env::var(k).ok(), std::io::stderr().is_terminal());
    let filter = match tracing_subscriber::EnvFilter::try_new(&s.filter) {
        Ok(f) => f,
        Err(e) => {
            eprintln!(
                "zfabric: the log filter from {} ({:?}) does not parse ({e}); using warn",
                s.from, s.filter
            );
            tracing_subscriber::EnvFilter::new("warn")
        }
    };
    let library_spans = || Targets::new().with_target(zfabric::trace::TARGET, Level::INFO);
    let mut layers: Vec<Boxed> = Vec::new();
    let t = traces::TraceSettings::read(|k| std::env::var(k).ok());
    let provider = if t.export {
        match traces::provider(&t) {
            Ok(p) => {
                let otel = tracing_opentelemetry::layer()
                    .with_tracer(traces::tracer(&p))
                    .with_filter(library_spans());
                layers.push(Box::new(otel));
                zfabric::trace::set_sampling(true);
                Some(p)
            }
            Err(e) => {
                eprintln!("zfabric: traces are not exported: {e}");
                None
            }
        }
    } else {
        None
    };
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(s.ansi);
    if s.json {
        // The ids of the library span a log line is written in.
        layers.push(Box::new(traces::SpanIds.with_filter(library_spans())));
        let json = fmt
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .map_event_format(|f| WithIds(f.json().with_current_span(true).with_span_list(false)));
        layers.push(Box::new(json.with_filter(filter)));
    } else {
        layers.push(Box::new(fmt.with_filter(filter)));
    }
    tracing_subscriber::registry().with(layers).init();
    Telemetry { provider }
}

/// A JSON event format that adds the `trace_id` and `span_id` of the
/// library span the event happens in, as top-level keys.
struct WithIds<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let Some((trace, span)) = traces::current_ids() else {
            return self.0.format_event(ctx, writer, event);
        };
        let mut line = String::new();
        self.0.format_event(ctx, Writer::new(&mut line), event)?;
        writer.write_str(&with_ids(line, trace, span))
    }
}

/// `line` (one JSON object and a newline) with `trace_id` and `span_id`
/// added to the object.
fn with_ids(mut line: String, trace: u128, span: u64) -> String {
    if let Some(end) = line.rfind('}') {
        let sep = if line[..end].trim_end().ends_with('{') {
            ""
        } else {
            ","
        };
        line.insert_str(
            end,
            &format!("{sep}\"trace_id\":\"{trace:032x}\",\"span_id\":\"{span:016x}\""),
        );
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn read(vars: &[(&str, &str)], terminal: bool) -> LogSettings {
        let m: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        LogSettings::read(|k| m.get(k).cloned(), terminal)
    }

    #[test]
    fn zfabric_log_wins_then_rust_log_then_warn() {
        assert_eq!(read(&[], true).filter, "warn");
        assert_eq!(read(&[("RUST_LOG", "info")], true).filter, "info");
        let s = read(&[("RUST_LOG", "info"), ("ZFABRIC_LOG", "debug")], true);
        assert_eq!((s.filter.as_str(), s.from), ("debug", "ZFABRIC_LOG"));
        assert_eq!(read(&[("ZFABRIC_LOG", " ")], true).filter, "warn");
    }

    #[test]
    fn ids_join_the_json_object() {
        let line = "{\"level\":\"WARN\",\"fields\":{\"message\":\"x\"}}\n".to_string();
        let out = with_ids(line, 0x4bf92f3577b34da6a3ce929d0e0e4736, 0xb7ad6b7169203331);
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(v["span_id"], "b7ad6b7169203331");
        assert_eq!(v["fields"]["message"], "x");
        assert!(out.ends_with('\n'));
        let empty: serde_json::Value =
            serde_json::from_str(with_ids("{}".into(), 1, 2).trim()).unwrap();
        assert_eq!(empty["span_id"], "0000000000000002");
    }

    #[test]
    fn a_json_log_line_inside_a_traced_span_carries_its_ids() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let w = buf.clone();
        let json = tracing_subscriber::fmt::layer()
            .with_writer(move || w.clone())
            .with_ansi(false)
            .json()
            .map_event_format(|f| WithIds(f.json()));
        let library = || Targets::new().with_target(zfabric::trace::TARGET, Level::INFO);
        let subscriber = tracing_subscriber::registry()
            .with(traces::SpanIds.with_filter(library()))
            .with(json.with_filter(tracing_subscriber::EnvFilter::new("warn")));
        tracing::subscriber::with_default(subscriber, || {
            // A span shaped as the library makes them, at INFO (below the
            // log filter: the ids still reach the line).
            let span = tracing::info_span!(
                target: "zfabric::trace",
                "serve",
                trace_id = %"4bf92f3577b34da6a3ce929d0e0e4736",
                span_id = %"00f067aa0ba902b7"
            );
            span.in_scope(|| tracing::warn!("inside"));
            tracing::warn!("outside");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert_eq!(lines[0]["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(lines[0]["span_id"], "00f067aa0ba902b7");
        assert!(lines[1].get("trace_id").is_none());
    }

    #[test]
    fn colour_only_on_a_terminal_and_never_in_json_or_with_no_color() {
        assert!(read(&[], true).ansi);
        assert!(!read(&[], false).ansi, "a file or pipe gets no ANSI codes");
        assert!(!read(&[("NO_COLOR", "1")], true).ansi);
        let j = read(&[("ZFABRIC_LOG_FORMAT", "JSON")], true);
        assert!(j.json && !j.ansi);
        assert!(!read(&[("ZFABRIC_LOG_FORMAT", "text")], false).json);
    }
}
