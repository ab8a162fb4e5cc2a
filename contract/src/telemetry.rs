//! Logging for the three binaries: `RUST_LOG` filters (default `info`),
//! output on stderr; `log.format` chooses readable lines (colours only on a
//! terminal, so log files stay plain) or one JSON object a line, with the
//! fields of every span the event is in (the job and server ids).

use tracing_subscriber::EnvFilter;

use crate::settings::LogFormat;

pub fn init(format: LogFormat) {
    use std::io::IsTerminal as _;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(false).with_span_list(true).init(),
    }
}

/// The target of [`step!`] spans.
pub const STEP_TARGET: &str = "vsfleet::step";

/// A timed step of a request or a job (`step!("lock")`): a debug span
/// under the target `vsfleet::step`, so it costs nothing unless that target
/// is enabled. The benchmark times create and start by these spans
/// (`bench/src/steps.rs`); `RUST_LOG=vsfleet::step=debug` shows them in a
/// service's log.
#[macro_export]
macro_rules! step {
    ($name:literal) => {
        ::tracing::debug_span!(target: "vsfleet::step", $name)
    };
}
