//! Which MCP era a server speaks, told from how it refused `initialize`, and the start of a
//! session that follows from it: one piece for every transport ([`open`]; streamable HTTP
//! gives it a new transport for each start, stdio the same pipes again, or a relaunched
//! process).
//!
//! MCP 2026-07-28 has no `initialize` (SEP-2575): every request carries its protocol version,
//! the client's capabilities and identity in `_meta` (and, over HTTP, the
//! `MCP-Protocol-Version` header), and a server answers a version it does not serve with an
//! `UnsupportedProtocolVersionError` (-32022) listing the versions it does (`data.supported`).
//! Servers of earlier versions ("legacy") need the `initialize` handshake, and dual-era
//! servers serve both.
//!
//! corrald starts every session with `initialize` offering
//! [`ProtocolVersion::LATEST_WITH_INITIALIZE`] (the newest version that has a handshake),
//! carrying the 2026-07-28 `_meta` too (`McpClientHandler::offering`; over HTTP also the
//! headers, `Observed`), so a server of either era can read it: a legacy or dual-era server
//! answers the handshake, and a server of 2026-07-28 only refuses it. The first message every
//! server receives is `initialize`, as it always was; `server/discover` first, which the spec
//! suggests for stdio, would be news to servers that never saw it. [`after_refused_initialize`]
//! reads a refusal:
//!
//! - it lists a version without `initialize` that corrald speaks → the 2026-07-28 start
//!   (`server/discover` with those versions, then every request with its `_meta`);
//! - it says the version is unsupported (-32022, or a message saying so) → one more
//!   `initialize`, offering the newest listed version corrald speaks, or, when none is listed,
//!   the version before the one offered; a list with no version corrald speaks ends the start,
//!   naming both lists;
//! - any other error (no `initialize` method, missing headers) → one `server/discover`: a
//!   server of 2026-07-28 answers it; a legacy server refuses it too, and then its refusal of
//!   `initialize` is what is reported.
//!
//! At most two starts per attempt, whatever the server answers. The 2026-07-28 start itself
//! retries once at a version the server lists (rmcp's `server/discover` loop).
//!
//! A server's era is a property of the server, which the spec lets a client remember for the
//! server process (stdio) and across restarts of the same configuration: [`open`] says which
//! [`Opening`] worked, and the stdio server task starts the server's next runs with it (a
//! server of 2026-07-28 only then gets `server/discover` first). Opened with
//! `server/discover` and refused as a legacy server would, it falls back to `initialize`
//! once (the remembered era was wrong: the server changed).
//!
//! When the second start cannot even be sent or answered (the transport closed: a stdio
//! server that exits after refusing `initialize`, as rmcp's servers do), [`NotOpened`] names
//! the start to make on a new transport; the stdio task relaunches the server once with it.

use std::future::Future;

use rmcp::model::{ErrorCode, ErrorData, ProtocolVersion};
use rmcp::service::{ClientInitializeError, ClientLifecycleMode};

use crate::mcp::handler::McpClientHandler;
use crate::transport::McpSession;

/// How a session is opened: the first message corrald sends a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Opening {
    /// `initialize` offering this version, with the client's context in its `_meta`.
    Initialize(ProtocolVersion),
    /// MCP 2026-07-28's start: `server/discover` with these versions, most preferred first.
    Discover(Vec<ProtocolVersion>),
}

impl Opening {
    /// What every server gets first, unless it showed before that it wants another:
    /// `initialize` offering the newest version that has one.
    pub(crate) fn handshake() -> Self {
        Self::Initialize(ProtocolVersion::LATEST_WITH_INITIALIZE)
    }

    /// rmcp's lifecycle for this opening.
    fn lifecycle(&self) -> ClientLifecycleMode {
        match self {
            Self::Initialize(_) => ClientLifecycleMode::Initialize,
            Self::Discover(preferred_versions) => ClientLifecycleMode::Discover {
                preferred_versions: preferred_versions.clone(),
            },
        }
    }

    /// The handler of a session opened this way: `initialize` offers its version with the
    /// 2026-07-28 `_meta`; rmcp puts that `_meta` on `server/discover` itself.
    fn handler(&self, handler: McpClientHandler) -> McpClientHandler {
        match self {
            Self::Initialize(version) => handler.offering(version.clone()),
            Self::Discover(_) => handler,
        }
    }

    /// The request this opening sends, for messages.
    pub(crate) fn method(&self) -> &'static str {
        match self {
            Self::Initialize(_) => "initialize",
            Self::Discover(_) => "server/discover",
        }
    }
}

impl std::fmt::Display for Opening {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Initialize(version) => write!(f, "initialize offering {version}"),
            Self::Discover(versions) => {
                let versions: Vec<&str> = versions.iter().map(ProtocolVersion::as_str).collect();
                write!(f, "server/discover for {}", versions.join(", "))
            }
        }
    }
}

/// Why [`open`] opened no session.
#[derive(Debug)]
pub(crate) struct NotOpened {
    /// What failed, as rmcp says it (the transport classifies it).
    pub(crate) error: ClientInitializeError,
    /// The server refused the first start in a way that names a second, which then could not
    /// be sent or was not answered (the transport closed): make this start on a new transport.
    pub(crate) on_new_transport: Option<Opening>,
}

impl NotOpened {
    fn because(error: ClientInitializeError) -> Self {
        Self {
            error,
            on_new_transport: None,
        }
    }
}

/// Whether an error of a start means the transport is gone rather than that the server
/// answered: then the start may be made again on a new transport.
fn transport_gone(error: &ClientInitializeError) -> bool {
    matches!(
        error,
        ClientInitializeError::ConnectionClosed(_) | ClientInitializeError::TransportError { .. }
    )
}

/// Open a session with server `server`: `first`, and when the server refuses it, at most one
/// more start, which [`after_refused_initialize`] chooses (or, after a refused
/// `server/discover`, `initialize`). `start` makes one start: it serves `handler` over a
/// transport with the lifecycle given (a new transport each time over HTTP; the same pipes
/// again over stdio). Returns the session and the opening that worked.
pub(crate) async fn open<F, Fut>(
    server: &str,
    first: Opening,
    handler: McpClientHandler,
    mut start: F,
) -> Result<(McpSession, Opening), NotOpened>
where
    F: FnMut(ClientLifecycleMode, McpClientHandler) -> Fut,
    Fut: Future<Output = Result<McpSession, ClientInitializeError>>,
{
    let refusal = match start(first.lifecycle(), first.handler(handler.clone())).await {
        Ok(session) => return Ok((session, first)),
        Err(ClientInitializeError::JsonRpcError(refusal)) => refusal,
        Err(error) => return Err(NotOpened::because(error)),
    };
    let refused = ClientInitializeError::JsonRpcError(refusal.clone());
    let second = match after_refused(&first, &refusal) {
        NextStart::Initialize(version) => Opening::Initialize(version),
        NextStart::Discover(versions) => Opening::Discover(versions),
        NextStart::NoCommonVersion(server_supported) => {
            return Err(NotOpened::because(ClientInitializeError::NoCompatibleProtocolVersion {
                client_supported: ProtocolVersion::KNOWN_VERSIONS.to_vec(),
                server_supported,
            }));
        }
        NextStart::GiveUp => return Err(NotOpened::because(refused)),
    };
    tracing::info!(
        server,
        refused = first.method(),
        code = refusal.code.0,
        next = %second,
        "the server refused the start; trying the one its answer points to"
    );
    let after_initialize = matches!(first, Opening::Initialize(_));
    match start(second.lifecycle(), second.handler(handler)).await {
        Ok(session) => Ok((session, second)),
        // Not a server of 2026-07-28 either: its refusal of `initialize` says what is wrong.
        Err(ClientInitializeError::JsonRpcError(error))
            if after_initialize && matches!(second, Opening::Discover(_)) && !is_modern_rejection(&error) =>
        {
            Err(NotOpened::because(refused))
        }
        Err(error) if transport_gone(&error) => Err(NotOpened {
            error,
            on_new_transport: Some(second),
        }),
        Err(error) => Err(NotOpened::because(error)),
    }
}

/// What to send after a server refused `initialize`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NextStart {
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

/// What to send after the server refused `first` with `refusal`.
fn after_refused(first: &Opening, refusal: &ErrorData) -> NextStart {
    match first {
        Opening::Initialize(offered) => after_refused_initialize(refusal, offered),
        // rmcp's discover loop already retried a version the server listed: a modern refusal
        // stands; any other says the server is legacy after all (it changed since it was
        // seen to be modern): the handshake.
        Opening::Discover(_) if is_modern_rejection(refusal) => NextStart::GiveUp,
        Opening::Discover(_) => NextStart::Initialize(ProtocolVersion::LATEST_WITH_INITIALIZE),
    }
}

/// What to send after the server refused an `initialize` offering `offered` with `refusal`.
fn after_refused_initialize(refusal: &ErrorData, offered: &ProtocolVersion) -> NextStart {
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
fn is_modern_rejection(error: &ErrorData) -> bool {
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
    fn a_server_remembered_as_modern_that_refuses_server_discover_as_a_legacy_one_gets_the_handshake() {
        let remembered = Opening::Discover(vec![ProtocolVersion::V_2026_07_28]);
        assert_eq!(
            after_refused(&remembered, &refusal(-32601, "Method not found", None)),
            NextStart::Initialize(ProtocolVersion::LATEST_WITH_INITIALIZE)
        );
        assert_eq!(
            after_refused(&remembered, &refusal(-32021, "missing capability", None)),
            NextStart::GiveUp,
            "a modern refusal stands"
        );
        assert_eq!(
            after_refused(
                &Opening::handshake(),
                &refusal(-32601, "Method not found: initialize", None)
            ),
            NextStart::Discover(vec![ProtocolVersion::V_2026_07_28])
        );
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
