//! JSON-RPC error codes the daemon answers with, and what each means.
//!
//! The standard JSON-RPC 2.0 codes keep their meaning. Corral's own codes sit
//! in the range JSON-RPC reserves for implementations (-32000 to -32099), and
//! `-32800` is LSP's `RequestCancelled` so that editor libraries recognise it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Every error code the daemon sends, with its number on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// -32700: the message is not valid JSON. `id` is `null` in the answer.
    ParseError,
    /// -32600: valid JSON but not a JSON-RPC 2.0 request (wrong `jsonrpc`, bad `id`, no `method`…).
    InvalidRequest,
    /// -32601: no method of that name.
    MethodNotFound,
    /// -32602: the params do not match the method's schema; the message names the field.
    InvalidParams,
    /// -32603: a bug or unexpected failure inside the daemon; the message says what failed.
    InternalError,
    /// -32001: no MCP server of that name.
    ServerNotFound,
    /// -32002: a method other than `initialize` was called before `initialize`.
    NotInitialized,
    /// -32003: `initialize` was called twice on one connection.
    AlreadyInitialized,
    /// -32004: the client's `protocolVersion` is not supported; `data` says which side to upgrade.
    ProtocolVersionMismatch,
    /// -32005: a message is larger than the limit: a request (the daemon closes the connection after
    /// answering) or the answer to it (that request fails, the connection stays).
    MessageTooLarge,
    /// -32006: the daemon is shutting down and takes no new work.
    ShuttingDown,
    /// -32007: a server of that name already exists.
    ServerExists,
    /// -32008: the caller may not do that to this server (e.g. remove a config server).
    NotPermitted,
    /// -32009: the server is not ready; `data` has its `status` and `failureReason`.
    ServerNotReady,
    /// -32010: the server has no such tool, or the config disables it.
    ToolNotAvailable,
    /// -32011: the server did not answer within `tool_timeout_sec`.
    RequestTimeout,
    /// -32012: the MCP server answered with a JSON-RPC error; `data` has it (`code`, `message`, `data`).
    ServerError,
    /// -32013: the server has too many control commands waiting; retry shortly.
    ServerBusy,
    /// -32014: this connection has too many requests running and waiting; retry once some are answered.
    TooManyRequests,
    /// -32015: a skill file the server served does not match the skill's entry (size, digest,
    /// frontmatter, or a file the entry does not list); its content was not used.
    SkillVerificationFailed,
    /// -32800: the request was cancelled (LSP `RequestCancelled`).
    RequestCancelled,
}

impl ErrorCode {
    /// All codes, for documentation and tests.
    pub const ALL: [ErrorCode; 21] = [
        Self::ParseError,
        Self::InvalidRequest,
        Self::MethodNotFound,
        Self::InvalidParams,
        Self::InternalError,
        Self::ServerNotFound,
        Self::NotInitialized,
        Self::AlreadyInitialized,
        Self::ProtocolVersionMismatch,
        Self::MessageTooLarge,
        Self::ShuttingDown,
        Self::ServerExists,
        Self::NotPermitted,
        Self::ServerNotReady,
        Self::ToolNotAvailable,
        Self::RequestTimeout,
        Self::ServerError,
        Self::ServerBusy,
        Self::TooManyRequests,
        Self::SkillVerificationFailed,
        Self::RequestCancelled,
    ];

    /// The number on the wire.
    pub const fn code(self) -> i32 {
        match self {
            Self::ParseError => -32700,
            Self::InvalidRequest => -32600,
            Self::MethodNotFound => -32601,
            Self::InvalidParams => -32602,
            Self::InternalError => -32603,
            Self::ServerNotFound => -32001,
            Self::NotInitialized => -32002,
            Self::AlreadyInitialized => -32003,
            Self::ProtocolVersionMismatch => -32004,
            Self::MessageTooLarge => -32005,
            Self::ShuttingDown => -32006,
            Self::ServerExists => -32007,
            Self::NotPermitted => -32008,
            Self::ServerNotReady => -32009,
            Self::ToolNotAvailable => -32010,
            Self::RequestTimeout => -32011,
            Self::ServerError => -32012,
            Self::ServerBusy => -32013,
            Self::TooManyRequests => -32014,
            Self::SkillVerificationFailed => -32015,
            Self::RequestCancelled => -32800,
        }
    }

    /// The code for a number, if it is one of ours.
    pub fn from_code(code: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// What the code means, one sentence (used in the generated schema and docs).
    pub const fn description(self) -> &'static str {
        match self {
            Self::ParseError => "the message is not valid JSON; `id` is null in the answer",
            Self::InvalidRequest => {
                "valid JSON but not a JSON-RPC 2.0 request (wrong `jsonrpc`, bad `id`, no `method`)"
            }
            Self::MethodNotFound => "no method of that name",
            Self::InvalidParams => "the params do not match the method's schema; the message names the field",
            Self::InternalError => "an unexpected failure inside the daemon; the message says what failed",
            Self::ServerNotFound => "no MCP server of that name",
            Self::NotInitialized => "a method other than `initialize` was called before `initialize`",
            Self::AlreadyInitialized => "`initialize` was called twice on one connection",
            Self::ProtocolVersionMismatch => {
                "the client's `protocolVersion` is not served; `data` says which side to upgrade"
            }
            Self::MessageTooLarge => {
                "a message is larger than the limit: a request (the daemon closes the connection after \
                 answering) or the answer to it (that request fails, the connection stays)"
            }
            Self::ShuttingDown => "the daemon is shutting down and takes no new work",
            Self::ServerExists => "a server of that name already exists",
            Self::NotPermitted => "the caller may not do that to this server (e.g. remove a config server)",
            Self::ServerNotReady => "the server is not ready; `data` has its `status` and `failureReason`",
            Self::ToolNotAvailable => "the server has no such tool, or the config disables it",
            Self::RequestTimeout => "the server did not answer within `tool_timeout_sec`",
            Self::ServerError => "the MCP server answered with an error; `data` has its `code`, `message` and `data`",
            Self::ServerBusy => "the server has too many control commands waiting; retry shortly",
            Self::TooManyRequests => {
                "this connection has too many requests running and waiting; nothing was done: retry once some \
                 are answered"
            }
            Self::SkillVerificationFailed => {
                "a skill file the server served does not match the skill's entry (size, digest, frontmatter, or a \
                 file the entry does not list); its content was not used: list the skills again"
            }
            Self::RequestCancelled => "the request was cancelled (LSP `RequestCancelled`)",
        }
    }

    /// A short name, e.g. `serverNotFound`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::ParseError => "parseError",
            Self::InvalidRequest => "invalidRequest",
            Self::MethodNotFound => "methodNotFound",
            Self::InvalidParams => "invalidParams",
            Self::InternalError => "internalError",
            Self::ServerNotFound => "serverNotFound",
            Self::NotInitialized => "notInitialized",
            Self::AlreadyInitialized => "alreadyInitialized",
            Self::ProtocolVersionMismatch => "protocolVersionMismatch",
            Self::MessageTooLarge => "messageTooLarge",
            Self::ShuttingDown => "shuttingDown",
            Self::ServerExists => "serverExists",
            Self::NotPermitted => "notPermitted",
            Self::ServerNotReady => "serverNotReady",
            Self::ToolNotAvailable => "toolNotAvailable",
            Self::RequestTimeout => "requestTimeout",
            Self::ServerError => "serverError",
            Self::ServerBusy => "serverBusy",
            Self::TooManyRequests => "tooManyRequests",
            Self::SkillVerificationFailed => "skillVerificationFailed",
            Self::RequestCancelled => "requestCancelled",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name(), self.code())
    }
}

/// `data` of a [`ErrorCode::ProtocolVersionMismatch`] error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct VersionMismatchData {
    /// The version the client asked for.
    pub requested: u32,
    /// Oldest version the daemon serves.
    pub min_supported: u32,
    /// Newest version the daemon serves.
    pub max_supported: u32,
    /// Which side is too old.
    pub upgrade: UpgradeSide,
}

impl VersionMismatchData {
    /// Mismatch data for a requested version against a supported range.
    pub fn new(requested: u32, min_supported: u32, max_supported: u32) -> Self {
        let upgrade = if requested < min_supported {
            UpgradeSide::Client
        } else {
            UpgradeSide::Daemon
        };
        Self {
            requested,
            min_supported,
            max_supported,
            upgrade,
        }
    }

    /// A sentence telling the user what to do.
    pub fn advice(&self) -> String {
        match self.upgrade {
            UpgradeSide::Client => format!(
                "the client speaks protocol version {} but corrald needs {}..={}: upgrade the client",
                self.requested, self.min_supported, self.max_supported
            ),
            UpgradeSide::Daemon => format!(
                "the client speaks protocol version {} but corrald only serves {}..={}: upgrade corrald and restart it",
                self.requested, self.min_supported, self.max_supported
            ),
        }
    }
}

/// The side of a connection that must be upgraded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum UpgradeSide {
    /// The front-end is older than the daemon supports.
    Client,
    /// The daemon is older than the front-end.
    Daemon,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_and_round_trip() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(code.code()), Some(code));
        }
        let mut numbers: Vec<i32> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), ErrorCode::ALL.len());
    }

    #[test]
    fn version_mismatch_names_the_side_to_upgrade() {
        let old_client = VersionMismatchData::new(0, 1, 2);
        assert_eq!(old_client.upgrade, UpgradeSide::Client);
        assert!(old_client.advice().contains("upgrade the client"));
        let old_daemon = VersionMismatchData::new(3, 1, 2);
        assert_eq!(old_daemon.upgrade, UpgradeSide::Daemon);
        assert!(old_daemon.advice().contains("upgrade corrald"));
    }
}
