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
//!
//! Guarantees: logs go to stderr, never stdout (stdout carries command
//! output and the `run`/`bench` reports). Does not: rotate or ship logs.

use std::io::IsTerminal;

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

/// Installs the subscriber for this process, from the environment.
pub(crate) fn init() {
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
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(s.ansi);
    if s.json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
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
    fn colour_only_on_a_terminal_and_never_in_json_or_with_no_color() {
        assert!(read(&[], true).ansi);
        assert!(!read(&[], false).ansi, "a file or pipe gets no ANSI codes");
        assert!(!read(&[("NO_COLOR", "1")], true).ansi);
        let j = read(&[("ZFABRIC_LOG_FORMAT", "JSON")], true);
        assert!(j.json && !j.ansi);
        assert!(!read(&[("ZFABRIC_LOG_FORMAT", "text")], false).json);
    }
}
