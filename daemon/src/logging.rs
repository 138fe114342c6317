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
//!
//! Other targets can still quote an error that quotes a URL (rmcp's `service`
//! logs a failed send with the transport's error, which names the request URL),
//! so every line is also written through [`RedactingStderr`], which cuts each
//! URL in it down to its origin before it reaches stderr.

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

/// `text` with every URL cut down to its origin (`https://host:port/…`): rmcp's OAuth errors
/// quote the URLs they fetched, and a server URL may carry a token in its query, its path or
/// its user info. Said to front-ends and logged only in this form.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let lower = rest.to_ascii_lowercase();
        let next = ["http://", "https://"]
            .iter()
            .filter_map(|scheme| lower.find(scheme).map(|at| (at, scheme.len())))
            .min();
        let Some((at, scheme_len)) = next else {
            out.push_str(rest);
            return out;
        };
        out.push_str(&rest[..at + scheme_len]);
        let url = &rest[at + scheme_len..];
        let end = url
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`' | ')' | ']' | '}' | ','))
            .unwrap_or(url.len());
        let (url, after) = url.split_at(end);
        let authority_end = url.find(['/', '?', '#']).unwrap_or(url.len());
        let authority = &url[..authority_end];
        // User info (`user:password@`) is dropped; the host and port stay, they say where.
        let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
        out.push_str(host);
        if authority_end < url.len() || authority.len() != host.len() {
            out.push_str("/…");
        }
        rest = after;
    }
}

/// A writer that cuts every URL in what it is given down to its origin (a URL's path, query and
/// user info may hold a token) before passing it on. The fmt layer writes each formatted event in
/// one `write`, so a URL is never split across two calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Redacting<W>(pub W);

impl<W: std::io::Write> std::io::Write for Redacting<W> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(bytes);
        self.0.write_all(redact_urls(&text).as_bytes())?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// The log's writer: stderr, redacted.
#[derive(Debug, Clone, Copy, Default)]
pub struct RedactingStderr;

impl<'writer> tracing_subscriber::fmt::MakeWriter<'writer> for RedactingStderr {
    type Writer = Redacting<std::io::Stderr>;

    fn make_writer(&'writer self) -> Self::Writer {
        Redacting(std::io::stderr())
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
                    .with_writer(RedactingStderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(SecretGuard),
            )
            .init(),
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_writer(RedactingStderr)
                    .with_filter(SecretGuard),
            )
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_is_written_with_its_urls_cut_to_their_origin() {
        use std::io::Write as _;
        let mut writer = Redacting(Vec::new());
        writer
            .write_all(
                b"ERROR rmcp::service: fail to response message: error sending request for url \
                         (https://h.example/mcp?api_key=SECRET)\n",
            )
            .expect("write");
        let written = String::from_utf8(writer.0).expect("UTF-8");
        assert!(!written.contains("SECRET"), "{written}");
        assert!(written.contains("(https://h.example/…)"), "{written}");
        assert!(written.ends_with('\n'), "the line stays a line: {written:?}");
    }

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

#[cfg(test)]
mod redact_tests {
    use super::redact_urls;

    #[test]
    fn urls_are_cut_to_their_origin() {
        assert_eq!(
            redact_urls("discovery failed for http://127.0.0.1:9/mcp?api_key=SECRET and more"),
            "discovery failed for http://127.0.0.1:9/… and more"
        );
        assert_eq!(
            redact_urls("see HTTPS://user:pw@example.com:8443/a/TOKEN#x, then (https://h/p?q=1)"),
            "see HTTPS://example.com:8443/…, then (https://h/…)"
        );
        assert_eq!(redact_urls("https://example.com"), "https://example.com");
        assert_eq!(redact_urls("https://u@example.com"), "https://example.com/…");
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(redact_urls("ünïcode http://h/ä?x=1 tail"), "ünïcode http://h/… tail");
    }
}
