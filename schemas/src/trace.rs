//! W3C Trace Context (`traceparent`), and the names under which trace and
//! causality travel: in event metadata and in NATS headers.
//!
//! A trace id names one end-to-end flow (an HTTP request and everything it
//! causes downstream); a span id names one step of it. Each step keeps the
//! trace id and makes its own span id, so the `traceparent` it passes on
//! names it as the parent of the next step.

use std::fmt;
use std::str::FromStr;

/// NATS header carrying the W3C `traceparent` of the step that wrote the event.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// NATS header carrying the correlation id (the originating request's id).
pub const CORRELATION_HEADER: &str = "Agora-Correlation-Id";
/// NATS header carrying the causation id (the message that caused the event).
pub const CAUSATION_HEADER: &str = "Agora-Causation-Id";

/// A `traceparent` of version 00: `00-<trace id>-<parent span id>-<flags>`,
/// ids in lowercase hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub flags: u8,
}

/// Why a `traceparent` value was refused; the caller then starts a new trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidTraceParent {
    /// Not four dash-separated fields of 2, 32, 16 and 2 lowercase hex digits.
    Shape,
    /// Version `ff` is forbidden by the specification.
    Version,
    /// An all-zero trace id or span id.
    ZeroId,
}

impl fmt::Display for InvalidTraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Shape => "not of the form 00-<32 hex>-<16 hex>-<2 hex>",
            Self::Version => "version ff is invalid",
            Self::ZeroId => "an all-zero trace id or span id is invalid",
        })
    }
}

impl std::error::Error for InvalidTraceParent {}

/// The `sampled` flag: we record every trace we start.
const SAMPLED: u8 = 0x01;

impl TraceParent {
    /// A new trace with a random trace id and span id, sampled.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero_u128(),
            span_id: nonzero_u64(),
            flags: SAMPLED,
        }
    }

    /// The next step of the same trace: same trace id and flags, a new span id.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero_u64(),
            ..*self
        }
    }

    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }

    pub fn span_id_hex(&self) -> String {
        format!("{:016x}", self.span_id)
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.span_id, self.flags
        )
    }
}

impl FromStr for TraceParent {
    type Err = InvalidTraceParent;

    /// Parses version 00 exactly. A higher version is read by its first four
    /// fields, as the specification asks, so a newer caller still joins.
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let value = value.trim();
        let mut parts = value.split('-');
        let (Some(version), Some(trace), Some(span), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(InvalidTraceParent::Shape);
        };
        let rest = parts.next();
        let hex = |s: &str, len: usize| {
            s.len() == len
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if !(hex(version, 2) && hex(trace, 32) && hex(span, 16) && hex(flags, 2)) {
            return Err(InvalidTraceParent::Shape);
        }
        if version == "ff" {
            return Err(InvalidTraceParent::Version);
        }
        if version == "00" && rest.is_some() {
            return Err(InvalidTraceParent::Shape);
        }
        let parse = |s: &str| u128::from_str_radix(s, 16).map_err(|_| InvalidTraceParent::Shape);
        let trace_id = parse(trace)?;
        let span_id = parse(span)? as u64;
        if trace_id == 0 || span_id == 0 {
            return Err(InvalidTraceParent::ZeroId);
        }
        Ok(Self {
            trace_id,
            span_id,
            flags: parse(flags)? as u8,
        })
    }
}

/// Opens a step of a trace for an exporter (OpenTelemetry): given the span
/// that carries the step and the step's parent, it links the span to the
/// parent and answers the step's own `traceparent` with the exporter's span
/// id, so what we pass on names a span the exporter knows. `None` when it
/// cannot (the span is disabled).
pub type StepHook = fn(&tracing::Span, Option<TraceParent>) -> Option<TraceParent>;

static STEP_HOOK: std::sync::OnceLock<StepHook> = std::sync::OnceLock::new();

/// Installs the process's [`StepHook`]; only the first call counts.
pub fn set_step_hook(hook: StepHook) {
    let _ = STEP_HOOK.set(hook);
}

/// The `traceparent` of a new step under `parent` (a new trace without one),
/// carried by `span`. Ids are made here unless an exporter's hook is
/// installed, in which case the exporter's span ids are used.
pub fn step(span: &tracing::Span, parent: Option<TraceParent>) -> TraceParent {
    STEP_HOOK
        .get()
        .and_then(|hook| hook(span, parent))
        .unwrap_or_else(|| parent.map_or_else(TraceParent::new_root, |parent| parent.child()))
}

// UUID v4 draws from the thread's RNG; 122 random bits are plenty for an id
// that only has to be unique, and it spares a dependency on `rand`.
fn nonzero_u128() -> u128 {
    loop {
        let id = uuid::Uuid::new_v4().as_u128();
        if id != 0 {
            return id;
        }
    }
}

fn nonzero_u64() -> u64 {
    loop {
        let id = uuid::Uuid::new_v4().as_u64_pair().1;
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let parsed: TraceParent = VALID.parse().expect("valid");
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(parsed.flags, 1);
        assert_eq!(parsed.to_string(), VALID);
    }

    #[test]
    fn invalid_values_are_refused_with_their_reason() {
        let cases = [
            ("", InvalidTraceParent::Shape),
            ("garbage", InvalidTraceParent::Shape),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
                InvalidTraceParent::Shape,
            ),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                InvalidTraceParent::Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
                InvalidTraceParent::Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",
                InvalidTraceParent::Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
                InvalidTraceParent::Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                InvalidTraceParent::Shape,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
                InvalidTraceParent::Shape,
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                InvalidTraceParent::Version,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                InvalidTraceParent::ZeroId,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                InvalidTraceParent::ZeroId,
            ),
        ];
        for (value, reason) in cases {
            assert_eq!(value.parse::<TraceParent>(), Err(reason), "{value:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_by_its_first_fields() {
        let parsed: TraceParent =
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-ever"
                .parse()
                .expect("forward compatible");
        assert_eq!(parsed.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parsed.to_string(), VALID, "passed on as version 00");
    }

    #[test]
    fn a_valid_parent_is_continued_and_anything_else_starts_a_trace() {
        let parent: TraceParent = VALID.parse().expect("valid");
        let from_header =
            |value: Option<&str>| step(&tracing::Span::none(), value.and_then(|v| v.parse().ok()));
        let continued = from_header(Some(VALID));
        assert_eq!(continued.trace_id, parent.trace_id);
        assert_ne!(continued.span_id, parent.span_id);
        assert_eq!(continued.flags, parent.flags);

        for given in [
            None,
            Some("nope"),
            Some("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        ] {
            let started = from_header(given);
            assert_ne!(started.trace_id, parent.trace_id);
            let reparsed: TraceParent = started
                .to_string()
                .parse()
                .expect("a generated value parses");
            assert_eq!(reparsed, started);
        }
    }

    #[test]
    fn generated_ids_are_distinct_and_never_zero() {
        let a = TraceParent::new_root();
        let b = TraceParent::new_root();
        assert_ne!(a.trace_id, b.trace_id);
        assert!(a.trace_id != 0 && a.span_id != 0);
        assert_eq!(a.child().trace_id, a.trace_id);
    }
}
