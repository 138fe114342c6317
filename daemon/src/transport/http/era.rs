//! Which MCP era a streamable-HTTP server speaks, told from how it refused
//! `initialize`, and what to send next (pure; `connect` sends it).
//!
//! MCP 2026-07-28 has no `initialize` (SEP-2575): every request carries its
//! protocol version in `_meta` and in the `MCP-Protocol-Version` header, and a
//! server answers a version it does not serve with an
//! `UnsupportedProtocolVersionError` (-32022) listing the versions it does
//! (`data.supported`). Servers of earlier versions ("legacy") need the
//! `initialize` handshake, and dual-era servers serve both.
//!
//! corrald starts every session with `initialize` offering
//! [`ProtocolVersion::LATEST_WITH_INITIALIZE`], carrying the 2026-07-28
//! headers and `_meta` too (`McpClientHandler::offering`, `Observed`), so a
//! server of either era can read it: a legacy or dual-era server answers the
//! handshake (the session keeps everything corrald drives today: the session's
//! event stream, server requests, logging), and a server of 2026-07-28 only
//! refuses it. [`after_refused_initialize`] reads the refusal:
//!
//! - it lists a version without `initialize` that corrald speaks → the
//!   2026-07-28 start (`server/discover` with those versions, then every
//!   request with its `_meta`);
//! - it says the version is unsupported (-32022, or a message saying so) →
//!   one more `initialize`, offering the newest listed version corrald
//!   speaks, or, when none is listed, the version before the one offered; a
//!   list with no version corrald speaks ends the start, naming both lists;
//! - any other error (no `initialize` method, missing headers) → one
//!   `server/discover`: a server of 2026-07-28 answers it; a legacy server
//!   refuses it too, and then its refusal of `initialize` is what is reported.
//!
//! At most two starts per attempt, whatever the server answers. The
//! 2026-07-28 start itself retries once at a version the server lists (rmcp's
//! `server/discover` loop).

use rmcp::model::{ErrorCode, ErrorData, ProtocolVersion};

/// What to send after a server refused `initialize`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NextStart {
    /// `initialize` once more, offering this version.
    Initialize(ProtocolVersion),
    /// The 2026-07-28 start: `server/discover` with these versions, most preferred first.
    Discover(Vec<ProtocolVersion>),
    /// None: the server and corrald share no version; the versions it listed.
    NoCommonVersion(Vec<ProtocolVersion>),
    /// None: the refusal stands.
    GiveUp,
}

/// The versions corrald speaks without `initialize`, newest first.
fn modern_versions() -> impl Iterator<Item = &'static ProtocolVersion> {
    ProtocolVersion::KNOWN_VERSIONS
        .iter()
        .rev()
        .filter(|version| !version.has_initialize())
}

/// What to send after the server refused an `initialize` offering `offered` with `refusal`.
pub(super) fn after_refused_initialize(refusal: &ErrorData, offered: &ProtocolVersion) -> NextStart {
    let supported: Option<Vec<ProtocolVersion>> = refusal
        .data
        .as_ref()
        .and_then(|data| data.get("supported"))
        .and_then(|list| serde_json::from_value(list.clone()).ok());
    let listed = |version: &ProtocolVersion| supported.as_ref().is_some_and(|list| list.contains(version));
    let modern: Vec<ProtocolVersion> = modern_versions().filter(|version| listed(version)).cloned().collect();
    if !modern.is_empty() {
        return NextStart::Discover(modern);
    }
    if !is_unsupported_version(refusal) {
        return NextStart::Discover(modern_versions().cloned().collect());
    }
    let older = match &supported {
        Some(list) if !list.is_empty() => ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .rev()
            .find(|version| version.has_initialize() && *version != offered && list.contains(version)),
        // No list: the version before the one offered.
        _ => ProtocolVersion::KNOWN_VERSIONS
            .iter()
            .rev()
            .find(|version| version.as_str() < offered.as_str()),
    };
    match (older, supported) {
        (Some(version), _) => NextStart::Initialize(version.clone()),
        (None, Some(list)) if !list.is_empty() => NextStart::NoCommonVersion(list),
        (None, _) => NextStart::GiveUp,
    }
}

/// Whether a refusal says the protocol version is not supported: the 2026-07-28 code, or
/// the words servers of earlier versions use.
fn is_unsupported_version(refusal: &ErrorData) -> bool {
    refusal.code == ErrorCode::UNSUPPORTED_PROTOCOL_VERSION
        || refusal
            .message
            .to_ascii_lowercase()
            .contains("unsupported protocol version")
}

/// Whether an error to `server/discover` comes from a server of 2026-07-28 (which rejected
/// the request) rather than from a legacy server (which does not know the method).
pub(super) fn is_modern_rejection(error: &ErrorData) -> bool {
    [
        ErrorCode::UNSUPPORTED_PROTOCOL_VERSION,
        ErrorCode::MISSING_REQUIRED_CLIENT_CAPABILITY,
        ErrorCode::HEADER_MISMATCH,
    ]
    .contains(&error.code)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn refusal(code: i32, message: &str, data: Option<serde_json::Value>) -> ErrorData {
        ErrorData::new(ErrorCode(code), message.to_owned(), data)
    }

    fn offered() -> ProtocolVersion {
        ProtocolVersion::LATEST_WITH_INITIALIZE
    }

    #[test]
    fn a_server_listing_2026_07_28_is_started_without_initialize() {
        let error = refusal(
            -32022,
            "Unsupported protocol version",
            Some(json!({ "supported": ["2026-07-28"], "requested": "2025-11-25" })),
        );
        assert_eq!(
            after_refused_initialize(&error, &offered()),
            NextStart::Discover(vec![ProtocolVersion::V_2026_07_28])
        );
    }

    #[test]
    fn an_unsupported_version_is_retried_once_with_the_newest_listed_one() {
        let error = refusal(
            -32022,
            "Unsupported protocol version",
            Some(json!({ "supported": ["2024-11-05", "2025-06-18", "1999-01-01"] })),
        );
        assert_eq!(
            after_refused_initialize(&error, &offered()),
            NextStart::Initialize(ProtocolVersion::V_2025_06_18)
        );
    }

    #[test]
    fn without_a_list_the_previous_version_is_offered() {
        // A server of an earlier version, in its own words and code.
        let error = refusal(-32602, "Unsupported protocol version: 2025-11-25", None);
        assert_eq!(
            after_refused_initialize(&error, &offered()),
            NextStart::Initialize(ProtocolVersion::V_2025_06_18)
        );
        let error = refusal(-32022, "Unsupported protocol version", Some(json!({ "supported": [] })));
        assert_eq!(
            after_refused_initialize(&error, &ProtocolVersion::V_2025_06_18),
            NextStart::Initialize(ProtocolVersion::V_2025_03_26)
        );
    }

    #[test]
    fn a_list_without_a_common_version_ends_the_start_naming_it() {
        let error = refusal(
            -32022,
            "Unsupported protocol version",
            Some(json!({ "supported": ["2099-01-01"] })),
        );
        assert_eq!(
            after_refused_initialize(&error, &offered()),
            NextStart::NoCommonVersion(vec![
                serde_json::from_value(json!("2099-01-01")).expect("a version string")
            ])
        );
        let oldest = ProtocolVersion::KNOWN_VERSIONS[0].clone();
        let error = refusal(-32022, "Unsupported protocol version", None);
        assert_eq!(after_refused_initialize(&error, &oldest), NextStart::GiveUp);
    }

    #[test]
    fn any_other_refusal_is_asked_whether_it_is_a_2026_07_28_server() {
        for error in [
            refusal(-32601, "Method not found: initialize", None),
            refusal(-32020, "Missing MCP-Protocol-Version header", None),
            refusal(-32603, "internal error", None),
        ] {
            assert_eq!(
                after_refused_initialize(&error, &offered()),
                NextStart::Discover(vec![ProtocolVersion::V_2026_07_28]),
                "{error:?}"
            );
        }
    }

    #[test]
    fn only_the_2026_07_28_codes_are_modern_rejections_of_server_discover() {
        assert!(is_modern_rejection(&refusal(
            -32022,
            "Unsupported protocol version",
            None
        )));
        assert!(is_modern_rejection(&refusal(-32020, "header mismatch", None)));
        assert!(!is_modern_rejection(&refusal(-32601, "Method not found", None)));
        assert!(!is_modern_rejection(&refusal(
            -32600,
            "Bad Request: No valid session ID provided",
            None
        )));
    }
}
