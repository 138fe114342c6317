//! Structured logs on stderr with tracing-subscriber.
//!
//! The filter comes from `CORRAL_LOG`, else `RUST_LOG`, else
//! `info,rmcp=warn,rmcp::transport=off`. The format is human-readable (coloured
//! on a terminal) or one JSON object per line for log collectors.
//!
//! Whatever the filter says, events of the targets in [`SECRET_BEARING_TARGETS`]
//! are never written: rmcp's transports quote request URLs (a server's URL may
//! carry an API key in its query) in errors and debug lines, its `auth` module
//! logs the OAuth authorization code at debug, and reqwest's own log lines
//! quote URLs. A user's `CORRAL_LOG=trace` must not turn a log file into a
//! credential store. corrald reports each of those failures itself, worded
//! without the URL (`http.rs`). The guard is a per-layer filter on the one
//! writing layer, outside the user's filter, so no directive reaches past it;
//! it also sees `log` records (reqwest logs through `log`) by their real target.

use std::io::IsTerminal as _;

use tracing::subscriber::Interest;
use tracing::{Event, Metadata};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter, Layer as _, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Targets (and their submodules) whose events may quote a URL, a token or an authorization code.
pub const SECRET_BEARING_TARGETS: &[&str] = &["rmcp::transport", "reqwest", "oauth2"];

/// Whether events of `target` are never written.
pub fn is_secret_bearing(target: &str) -> bool {
    SECRET_BEARING_TARGETS.iter().any(|prefix| {
        target
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// The filter no user directive overrides: drops every event and span of a secret-bearing target.
#[derive(Debug, Clone, Copy, Default)]
pub struct SecretGuard;

impl<S> Filter<S> for SecretGuard {
    fn enabled(&self, metadata: &Metadata<'_>, _context: &Context<'_, S>) -> bool {
        !is_secret_bearing(metadata.target())
    }

    fn callsite_enabled(&self, metadata: &'static Metadata<'static>) -> Interest {
        // `log` records share one callsite per level (target "log"): decided per event below.
        if is_secret_bearing(metadata.target()) {
            Interest::never()
        } else {
            Interest::always()
        }
    }

    fn event_enabled(&self, event: &Event<'_>, _context: &Context<'_, S>) -> bool {
        // A `log` record's real target is in its fields.
        event
            .normalized_metadata()
            .is_none_or(|metadata| !is_secret_bearing(metadata.target()))
    }
}

/// The user's filter: `CORRAL_LOG`, else `RUST_LOG`, else the default.
fn user_filter() -> EnvFilter {
    std::env::var("CORRAL_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|spec| EnvFilter::try_new(spec).ok())
        // rmcp logs every handshake (with the server's whole instructions) at
        // info; its transports are dropped by `SecretGuard` anyway.
        .unwrap_or_else(|| EnvFilter::new("info,rmcp=warn,rmcp::transport=off"))
}

/// Install the global subscriber. Call once, before anything logs.
pub fn init(format: LogFormat) {
    let registry = tracing_subscriber::registry().with(user_filter());
    match format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(SecretGuard),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(std::io::stderr)
                    .with_filter(SecretGuard),
            )
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_bearing_targets_match_whole_path_segments() {
        for target in [
            "rmcp::transport",
            "rmcp::transport::auth",
            "rmcp::transport::worker",
            "reqwest",
            "reqwest::connect",
            "oauth2",
        ] {
            assert!(is_secret_bearing(target), "{target}");
        }
        for target in [
            "rmcp",
            "rmcp::service",
            "rmcp::transporter",
            "reqwestish",
            "corrald::oauth",
            "log",
        ] {
            assert!(!is_secret_bearing(target), "{target}");
        }
    }
}
