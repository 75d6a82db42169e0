//! The W3C trace context (`traceparent`, `tracestate`): parsing, formatting
//! and fresh ids. No I/O, no runtime.

use std::fmt;
use std::sync::Arc;

use rand::RngExt;

/// Where a message stands in a distributed trace: the trace it belongs to,
/// the span that sent it, and the W3C flags and vendor state.
///
/// Travels in the envelope header as the W3C `traceparent`
/// (`00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`) and, when there
/// is one, `tracestate`. Cloning shares the header strings (no
/// allocation).
#[derive(Clone)]
pub struct TraceContext {
    trace_id: u128,
    /// 0: a trace started here ([`TraceContext::new_trace`]) with no span
    /// yet; the first operation in it becomes its root span.
    span_id: u64,
    flags: u8,
    /// `traceparent` as it travels (formatted once, or as received).
    header: Option<Arc<str>>,
    state: Option<Arc<str>>,
}

/// The `sampled` bit of the W3C trace flags.
const SAMPLED: u8 = 0x01;

impl TraceContext {
    /// A new trace: a fresh random trace id, sampled, with no span yet. Run
    /// work in it with [`with_context`](super::with_context): the first
    /// call, publish or send made there is the trace's root.
    pub fn new_trace() -> Self {
        TraceContext {
            trace_id: random_trace_id(),
            span_id: 0,
            flags: SAMPLED,
            header: None,
            state: None,
        }
    }

    /// The context of span `span_id` in trace `trace_id` (both non-zero),
    /// with `flags` and the vendor `tracestate`, if any. Formats the
    /// `traceparent` once.
    pub(crate) fn of_span(
        trace_id: u128,
        span_id: u64,
        flags: u8,
        state: Option<Arc<str>>,
    ) -> Self {
        let header = Some(Arc::from(format_traceparent(trace_id, span_id, flags)));
        TraceContext {
            trace_id,
            span_id,
            flags,
            header,
            state,
        }
    }

    /// Parses a W3C `traceparent` value (and the `tracestate` that goes
    /// with it). `None` when it is not a valid one: a trace context that
    /// does not parse is ignored, as the W3C recommendation says, and the
    /// message is treated as untraced.
    ///
    /// Accepts version `00` exactly (55 characters) and later versions by
    /// their first four fields (a longer value with `-` after the flags);
    /// refuses version `ff`, upper-case hex, and all-zero ids.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<Self> {
        let (trace_id, span_id, flags) = parse_traceparent(traceparent)?;
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
            header: Some(Arc::from(traceparent)),
            state: tracestate.and_then(clean_state).map(Arc::from),
        })
    }

    /// The context a received header carries, sharing its strings.
    pub(crate) fn from_fields(
        traceparent: &Arc<str>,
        tracestate: Option<&Arc<str>>,
    ) -> Option<Self> {
        let (trace_id, span_id, flags) = parse_traceparent(traceparent)?;
        Some(TraceContext {
            trace_id,
            span_id,
            flags,
            header: Some(traceparent.clone()),
            state: tracestate.filter(|s| clean_state(s).is_some()).cloned(),
        })
    }

    /// The 128-bit trace id (print it as `{:032x}`, as trace back ends
    /// show it).
    pub fn trace_id(&self) -> u128 {
        self.trace_id
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    /// The id of the span this context names; `None` for a trace started
    /// here that has no span yet.
    pub fn span_id(&self) -> Option<u64> {
        (self.span_id != 0).then_some(self.span_id)
    }

    /// Whether the trace is sampled (the W3C `sampled` flag).
    pub fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// The W3C trace flags.
    pub fn flags(&self) -> u8 {
        self.flags
    }

    /// The vendor `tracestate`, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.state.as_deref()
    }

    /// The `traceparent` value naming this context (`None` for a trace
    /// with no span yet).
    pub fn traceparent(&self) -> Option<&str> {
        self.header.as_deref()
    }

    pub(crate) fn header(&self) -> Option<&Arc<str>> {
        self.header.as_ref()
    }

    pub(crate) fn state(&self) -> Option<&Arc<str>> {
        self.state.as_ref()
    }

    /// A child of this context: the same trace, flags and state, span
    /// `span_id`.
    pub(crate) fn child(&self, span_id: u64) -> Self {
        Self::of_span(self.trace_id, span_id, self.flags, self.state.clone())
    }

    /// What a message sent in this context carries when this process
    /// records no span for it: the context itself, or, for a trace
    /// started here with no span yet, a first span id (so that the
    /// receiver has a parent to name).
    pub(crate) fn passed_on(&self) -> Self {
        if self.span_id != 0 {
            self.clone()
        } else {
            self.child(random_span_id())
        }
    }
}

impl PartialEq for TraceContext {
    fn eq(&self, other: &Self) -> bool {
        (self.trace_id, self.span_id, self.flags, self.tracestate())
            == (
                other.trace_id,
                other.span_id,
                other.flags,
                other.tracestate(),
            )
    }
}

impl Eq for TraceContext {}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceContext")
            .field("trace_id", &format_args!("{:032x}", self.trace_id))
            .field("span_id", &format_args!("{:016x}", self.span_id))
            .field("flags", &format_args!("{:02x}", self.flags))
            .field("tracestate", &self.state)
            .finish()
    }
}

/// `00-<trace>-<span>-<flags>`.
pub(crate) fn format_traceparent(trace_id: u128, span_id: u64, flags: u8) -> String {
    format!("00-{trace_id:032x}-{span_id:016x}-{flags:02x}")
}

fn parse_traceparent(s: &str) -> Option<(u128, u64, u8)> {
    let b = s.as_bytes();
    if b.len() < 55 {
        return None;
    }
    let version = hex(&b[0..2])? as u8;
    if version == 0xff || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    // Version 00 is exactly 55 characters; a later version may append
    // fields after another '-'.
    if (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = hex(&b[3..35])?;
    let span_id = hex(&b[36..52])? as u64;
    let flags = hex(&b[53..55])? as u8;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some((trace_id, span_id, flags))
}

/// Lower-case hex digits only (at most 32 of them).
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, d| {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | v as u128)
    })
}

/// Longest `tracestate` passed on (the W3C limit is 32 members; 512
/// characters is what the recommendation says a platform must propagate).
const MAX_TRACESTATE: usize = 512;

/// A `tracestate` worth passing on: printable ASCII, within the limit,
/// not empty.
fn clean_state(s: &str) -> Option<&str> {
    let t = s.trim();
    let printable = t.bytes().all(|c| (0x20..0x7f).contains(&c));
    (!t.is_empty() && t.len() <= MAX_TRACESTATE && printable).then_some(t)
}

/// A fresh non-zero trace id from the thread's CSPRNG (`rand`'s
/// `ThreadRng`, seeded from the operating system).
pub(crate) fn random_trace_id() -> u128 {
    loop {
        let v: u128 = rand::rng().random();
        if v != 0 {
            return v;
        }
    }
}

/// A fresh non-zero span id.
pub(crate) fn random_span_id() -> u64 {
    loop {
        let v: u64 = rand::rng().random();
        if v != 0 {
            return v;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_parses_and_formats_back() {
        let c = TraceContext::parse(EXAMPLE, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(c.trace_id(), 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(c.span_id(), Some(0x00f067aa0ba902b7));
        assert!(c.sampled());
        assert_eq!(c.tracestate(), Some("congo=t61rcWkgMzE"));
        assert_eq!(c.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            format_traceparent(c.trace_id(), 0x00f067aa0ba902b7, 1),
            EXAMPLE
        );
        assert_eq!(c.traceparent(), Some(EXAMPLE));
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // all-zero trace id, all-zero span id
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // upper case, wrong separators, version ff, junk after version 00
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
        ];
        for b in bad {
            assert!(TraceContext::parse(b, None).is_none(), "{b:?} accepted");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        let c = TraceContext::parse(v, None).unwrap();
        assert_eq!(c.span_id(), Some(0x00f067aa0ba902b7));
        assert!(!c.sampled());
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00x";
        assert!(TraceContext::parse(glued, None).is_none());
    }

    #[test]
    fn tracestate_is_kept_only_when_printable_and_bounded() {
        assert_eq!(
            TraceContext::parse(EXAMPLE, Some("")).unwrap().tracestate(),
            None
        );
        assert_eq!(
            TraceContext::parse(EXAMPLE, Some("a=\u{7}"))
                .unwrap()
                .tracestate(),
            None
        );
        let long = "a=".to_string() + &"x".repeat(600);
        assert_eq!(
            TraceContext::parse(EXAMPLE, Some(&long))
                .unwrap()
                .tracestate(),
            None
        );
    }

    #[test]
    fn generated_contexts_are_valid_and_distinct() {
        let t = TraceContext::new_trace();
        assert_eq!(t.span_id(), None);
        assert!(t.traceparent().is_none());
        let a = t.passed_on();
        let b = t.passed_on();
        assert_ne!(a.span_id(), b.span_id());
        for c in [&a, &b] {
            let back = TraceContext::parse(c.traceparent().unwrap(), None).unwrap();
            assert_eq!(&back, c);
            assert_eq!(back.trace_id(), t.trace_id());
        }
        // A context with a span passes itself on unchanged.
        assert_eq!(a.passed_on(), a);
        let child = a.child(7);
        assert_eq!(
            (child.trace_id(), child.span_id(), child.flags()),
            (a.trace_id(), Some(7), a.flags())
        );
        assert_ne!(TraceContext::new_trace().trace_id(), t.trace_id());
    }
}
