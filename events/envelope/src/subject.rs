//! The subject grammar every jetsaga saga follows: `<context>.<kind>.<name>`.
//!
//! `cmd` subjects carry requests from outside (plain JSON payloads are
//! accepted, so `nats pub` works), `evt` subjects carry facts published by
//! the runtime (always full envelopes), `query` subjects are request/reply
//! and never stored in a stream.

/// The kind part of a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubjectKind {
    /// A request from outside (or from the orchestrator).
    Command,
    /// A fact published by the runtime.
    Event,
    /// Read-only request/reply.
    Query,
}

impl SubjectKind {
    /// The middle token of the subject.
    pub fn token(self) -> &'static str {
        match self {
            Self::Command => "cmd",
            Self::Event => "evt",
            Self::Query => "query",
        }
    }
}

/// Splits a subject into context and kind, if it follows the naming rule.
pub fn parse(subject: &str) -> Option<(&str, SubjectKind)> {
    let mut parts = subject.splitn(3, '.');
    let context = parts.next()?;
    let kind = match parts.next()? {
        "cmd" => SubjectKind::Command,
        "evt" => SubjectKind::Event,
        "query" => SubjectKind::Query,
        _ => return None,
    };
    parts.next()?;
    Some((context, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_context_and_kind() {
        assert_eq!(parse("orders.cmd.create"), Some(("orders", SubjectKind::Command)));
        assert_eq!(parse("trips.evt.requested"), Some(("trips", SubjectKind::Event)));
        assert_eq!(parse("orders.query.get"), Some(("orders", SubjectKind::Query)));
        assert_eq!(parse("orders.other.get"), None);
        assert_eq!(parse("orders.cmd"), None);
    }
}
