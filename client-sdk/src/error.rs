//! What can go wrong talking to the daemon, as one enum callers can branch on.

use std::path::PathBuf;
use std::time::Duration;

use corral_protocol::ErrorCode;
use corral_protocol::error::VersionMismatchData;
use corral_protocol::jsonrpc::ErrorObject;

/// An error from [`Client`](crate::Client).
///
/// Each variant's `Display` is one line that includes the underlying cause, so
/// the inner errors are fields rather than `source()`: printing the error
/// (alone or in an `anyhow` chain) never repeats the cause.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// Nothing listens at the socket: the file is missing or the connection was refused.
    #[error(
        "corrald is not running at {}: start it with `corrald` or `systemctl --user start corral`",
        socket.display()
    )]
    DaemonNotRunning {
        /// The socket the client tried.
        socket: PathBuf,
    },
    /// The socket is not to be trusted: its directory is not private to you,
    /// or another user's process serves it. Nothing was sent on it; `reason`
    /// says which (branch on it), and the message names the path and the owner.
    #[cfg(unix)]
    #[error("refusing to talk to corrald at {}: {reason}", socket.display())]
    UntrustedSocket {
        /// The socket the client was about to use.
        socket: PathBuf,
        /// What is wrong with it.
        reason: corral_protocol::paths::UntrustedSocket,
    },
    /// Connecting to the socket failed for another reason (permissions, timeout…).
    #[error("cannot connect to corrald at {}: {error}", socket.display())]
    Connect {
        /// The socket the client tried.
        socket: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// The connection closed (the daemon exited or hung up) before an answer arrived.
    #[error("the connection to corrald closed")]
    Disconnected,
    /// The daemon did not answer in time.
    #[error("corrald did not answer `{method}` within {}", format_timeout(*timeout))]
    Timeout {
        /// The method that got no answer.
        method: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The daemon answered with a JSON-RPC error.
    #[error("`{method}` failed: {message} (error {code})")]
    Rpc {
        /// The method that failed.
        method: String,
        /// The JSON-RPC error code; see [`ClientError::error_code`].
        code: i32,
        /// The daemon's message.
        message: String,
        /// The error's `data` member, if any.
        data: Option<serde_json::Value>,
    },
    /// The daemon does not serve this client's protocol version; the advice says which side to upgrade.
    #[error("{}", .0.advice())]
    VersionMismatch(VersionMismatchData),
    /// A result or notification from the daemon does not have the expected shape.
    #[error("cannot decode `{method}` from corrald: {error}")]
    Decode {
        /// The method whose result (or the notification) did not parse.
        method: String,
        /// What did not match.
        error: serde_json::Error,
    },
    /// The request's params could not be serialized.
    #[error("cannot encode the params of `{method}`: {error}")]
    Encode {
        /// The method being called.
        method: String,
        /// What failed.
        error: serde_json::Error,
    },
    /// The client failed in a way none of the above describes (a bug here or in the daemon).
    #[error("`{method}` failed inside the client: {message}")]
    Internal {
        /// The method being called.
        method: String,
        /// What the JSON-RPC client reported.
        message: String,
    },
}

impl ClientError {
    /// The protocol error code of an [`ClientError::Rpc`] error, if it is one Corral defines.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Rpc { code, .. } => ErrorCode::from_code(*code),
            Self::VersionMismatch(_) => Some(ErrorCode::ProtocolVersionMismatch),
            _ => None,
        }
    }

    /// The daemon's JSON-RPC error answering `method`.
    pub(crate) fn from_error_object(method: &str, error: ErrorObject) -> Self {
        let version_mismatch = (error.code == ErrorCode::ProtocolVersionMismatch.code())
            .then(|| error.data.clone())
            .flatten()
            .and_then(|data| serde_json::from_value::<VersionMismatchData>(data).ok());
        match version_mismatch {
            Some(mismatch) => Self::VersionMismatch(mismatch),
            None => Self::Rpc {
                method: method.to_owned(),
                code: error.code,
                message: error.message,
                data: error.data,
            },
        }
    }
}

/// `30 s`, `1.5 s`, `200 ms`.
fn format_timeout(timeout: Duration) -> String {
    if timeout.subsec_millis() == 0 && timeout.as_secs() > 0 {
        format!("{} s", timeout.as_secs())
    } else if timeout.as_secs() == 0 {
        format!("{} ms", timeout.as_millis())
    } else {
        format!("{:.1} s", timeout.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call_error(code: i32, message: &str, data: Option<serde_json::Value>) -> ErrorObject {
        let error = ErrorObject::new(code, message);
        match data {
            Some(data) => error.with_data(data),
            None => error,
        }
    }

    #[test]
    fn version_mismatch_data_becomes_its_own_variant() {
        let data = VersionMismatchData::new(2, 1, 1);
        let wire = serde_json::to_value(&data).expect("serialize");
        let error = ClientError::from_error_object("initialize", call_error(-32004, "mismatch", Some(wire)));
        match &error {
            ClientError::VersionMismatch(got) => assert_eq!(got, &data),
            other => panic!("expected VersionMismatch, got {other:?}"),
        }
        assert_eq!(error.to_string(), data.advice());
        assert!(error.to_string().contains("upgrade corrald"));
        assert_eq!(error.error_code(), Some(ErrorCode::ProtocolVersionMismatch));
    }

    #[test]
    fn version_mismatch_without_usable_data_stays_an_rpc_error() {
        let error = ClientError::from_error_object(
            "initialize",
            call_error(-32004, "mismatch", Some(serde_json::json!({"requested": "two"}))),
        );
        assert!(matches!(error, ClientError::Rpc { code: -32004, .. }), "{error:?}");
        assert_eq!(error.error_code(), Some(ErrorCode::ProtocolVersionMismatch));
    }

    #[test]
    fn rpc_errors_keep_code_message_and_data() {
        let error = ClientError::from_error_object(
            "mcpServer/get",
            call_error(
                -32001,
                "no MCP server named `nope`",
                Some(serde_json::json!({"name": "nope"})),
            ),
        );
        match &error {
            ClientError::Rpc {
                method,
                code,
                message,
                data,
            } => {
                assert_eq!(method, "mcpServer/get");
                assert_eq!(*code, -32001);
                assert_eq!(message, "no MCP server named `nope`");
                assert_eq!(data, &Some(serde_json::json!({"name": "nope"})));
            }
            other => panic!("expected Rpc, got {other:?}"),
        }
        assert_eq!(error.error_code(), Some(ErrorCode::ServerNotFound));
        assert_eq!(
            error.to_string(),
            "`mcpServer/get` failed: no MCP server named `nope` (error -32001)"
        );
    }

    #[test]
    fn unknown_codes_have_no_error_code() {
        let error = ClientError::from_error_object("x", call_error(-1, "custom", None));
        assert!(matches!(
            error,
            ClientError::Rpc {
                code: -1,
                data: None,
                ..
            }
        ));
        assert_eq!(error.error_code(), None);
    }

    #[test]
    fn timeouts_name_the_method() {
        let timeout = ClientError::Timeout {
            method: "daemon/status".to_owned(),
            timeout: Duration::from_secs(30),
        };
        assert_eq!(
            timeout.to_string(),
            "corrald did not answer `daemon/status` within 30 s"
        );
    }

    #[test]
    fn daemon_not_running_is_one_line_naming_socket_and_remedy() {
        let error = ClientError::DaemonNotRunning {
            socket: PathBuf::from("/run/user/1000/corral/corral.sock"),
        };
        let text = error.to_string();
        assert!(!text.contains('\n'));
        assert_eq!(
            text,
            "corrald is not running at /run/user/1000/corral/corral.sock: \
             start it with `corrald` or `systemctl --user start corral`"
        );
    }

    #[test]
    fn timeouts_are_formatted_readably() {
        assert_eq!(format_timeout(Duration::from_secs(30)), "30 s");
        assert_eq!(format_timeout(Duration::from_millis(200)), "200 ms");
        assert_eq!(format_timeout(Duration::from_millis(1500)), "1.5 s");
    }
}
