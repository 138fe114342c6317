//! Structured logs on stderr with tracing-subscriber.
//!
//! The filter comes from `CORRAL_LOG`, else `RUST_LOG`, else
//! `info,rmcp=warn,rmcp::transport=off` (rmcp's transport errors quote URLs). The
//! format is human-readable (coloured on a terminal) or one JSON object per
//! line for log collectors.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Install the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let filter = std::env::var("CORRAL_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        // rmcp logs every handshake (with the server's whole instructions) at
        // info. Its transports log errors with the request URL, which may carry
        // a token; corrald reports each of those failures itself, without it.
        .unwrap_or_else(|| EnvFilter::new("info,rmcp=warn,rmcp::transport=off"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().with_current_span(true).init(),
    }
}
