//! The W3C trace context (`traceparent`) that carries one request's trace
//! id from the api, through the job's NATS headers, to the worker that runs
//! it: the api's and the worker's log lines for it share a `trace_id`.

use std::fmt;

/// The header, in HTTP requests and in job messages.
pub const HEADER: &str = "traceparent";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(u128);

tokio::task_local! {
    /// The trace of the request being served, for what it publishes.
    pub static CURRENT: TraceId;
}

impl TraceId {
    pub fn random() -> Self {
        TraceId(uuid::Uuid::new_v4().as_u128())
    }

    /// The trace id of a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`),
    /// if it is one: it comes from outside, so anything else is ignored.
    pub fn parse(traceparent: &str) -> Option<Self> {
        let mut parts = traceparent.trim().split('-');
        let (version, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let hex =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if parts.next().is_some() || version != "00" || !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
            return None;
        }
        let id = u128::from_str_radix(trace, 16).ok()?;
        let parent = u64::from_str_radix(parent, 16).ok()?;
        (id != 0 && parent != 0).then_some(TraceId(id))
    }

    /// A `traceparent` for a message sent on this trace (a new parent id).
    pub fn traceparent(&self) -> String {
        let parent = (uuid::Uuid::new_v4().as_u128() as u64).max(1);
        format!("00-{self}-{parent:016x}-01")
    }

    /// The trace of the request this task serves, if any.
    pub fn current() -> Option<Self> {
        CURRENT.try_with(|t| *t).ok()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_well_formed_traceparent_is_taken() {
        let id = TraceId::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(TraceId::parse(&id.traceparent()), Some(id));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
        ] {
            assert_eq!(TraceId::parse(bad), None, "{bad}");
        }
    }
}
