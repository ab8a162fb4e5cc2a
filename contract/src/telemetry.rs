//! Logging for the three binaries: `RUST_LOG` filters (default `info`),
//! output on stderr, colours only on a terminal so log files stay plain.

pub fn init() {
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
