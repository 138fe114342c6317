//! The JSON-RPC 2.0 envelope: requests, notifications, responses, ids and error objects.
//!
//! The method-specific types (`messages`) say what goes *inside* `params` and `result`; this module
//! says what a message around them looks like, so that a client (or a test) can read and write
//! the wire without a JSON-RPC library. Either side of a Corral connection sends all three kinds:
//! front-ends send requests and notifications to the daemon, and the daemon sends notifications
//! and, for MCP servers' questions, requests of its own (`mcpServer/elicitation/request`…).
//!
//! [`Message::parse`] classifies one frame by its members (`method` + `id` is a request, `method`
//! alone a notification, `result` or `error` a response) and refuses anything else with a reason;
//! [`Message::to_json`] writes one with `"jsonrpc": "2.0"`. Batches (JSON arrays) are not
//! messages here: the daemon never sends them, and a front-end that sends one gets an array of
//! responses, each a [`Message::Response`].

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `jsonrpc` member every message carries.
pub const VERSION: &str = "2.0";

/// A request id: a number or a string (JSON-RPC also allows `null` on error responses, which
/// [`ResponseMessage::id`] models as `None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RequestId {
    /// An integer id.
    Number(i64),
    /// A string id.
    String(String),
}

impl From<i64> for RequestId {
    fn from(id: i64) -> Self {
        Self::Number(id)
    }
}

impl From<String> for RequestId {
    fn from(id: String) -> Self {
        Self::String(id)
    }
}

impl From<&str> for RequestId {
    fn from(id: &str) -> Self {
        Self::String(id.to_owned())
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(id) => write!(f, "{id}"),
            Self::String(id) => write!(f, "{id:?}"),
        }
    }
}

/// The `error` member of a failed response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ErrorObject {
    /// The error code (Corral's are [`crate::ErrorCode`]).
    pub code: i32,
    /// One sentence saying what went wrong.
    pub message: String,
    /// More about the error, when the code defines it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl ErrorObject {
    /// An error with `code` and `message` and no data.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    /// The same error with `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
}

impl fmt::Display for ErrorObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (error {})", self.message, self.code)
    }
}

/// A request: a method call that expects exactly one response with the same id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RequestMessage {
    /// The id the response will carry.
    pub id: RequestId,
    /// The method called.
    pub method: String,
    /// The `params` member, if present.
    pub params: Option<Value>,
}

impl RequestMessage {
    /// A request for `method` with `params`.
    pub fn new(id: impl Into<RequestId>, method: impl Into<String>, params: Option<Value>) -> Self {
        Self {
            id: id.into(),
            method: method.into(),
            params,
        }
    }
}

/// A notification: a method call without an id, never answered.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct NotificationMessage {
    /// The notification's method.
    pub method: String,
    /// The `params` member, if present.
    pub params: Option<Value>,
}

impl NotificationMessage {
    /// A notification of `method` with `params`.
    pub fn new(method: impl Into<String>, params: Option<Value>) -> Self {
        Self {
            method: method.into(),
            params,
        }
    }
}

/// A response: the outcome of the request with the same id.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ResponseMessage {
    /// The request's id; `None` (`null` on the wire) when the request's id could not be read.
    pub id: Option<RequestId>,
    /// The `result`, or the `error`.
    pub outcome: Result<Value, ErrorObject>,
}

impl ResponseMessage {
    /// A successful response to `id`.
    pub fn result(id: RequestId, result: Value) -> Self {
        Self {
            id: Some(id),
            outcome: Ok(result),
        }
    }

    /// A failed response to `id`.
    pub fn error(id: Option<RequestId>, error: ErrorObject) -> Self {
        Self {
            id,
            outcome: Err(error),
        }
    }
}

/// One JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A method call expecting a response.
    Request(RequestMessage),
    /// A method call without a response.
    Notification(NotificationMessage),
    /// The answer to a request.
    Response(ResponseMessage),
}

/// Why a frame is not a JSON-RPC 2.0 message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The frame is not JSON.
    #[error("not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The frame is JSON but not a single JSON-RPC 2.0 message; the text says which member is wrong.
    #[error("not a JSON-RPC 2.0 message: {0}")]
    Invalid(String),
}

impl Message {
    /// Parse one frame.
    pub fn parse(frame: &[u8]) -> Result<Message, EnvelopeError> {
        match serde_json::from_slice::<Value>(frame)? {
            Value::Object(object) => Self::from_object(object),
            Value::Array(_) => Err(EnvelopeError::Invalid(
                "a batch (JSON array), not one message".to_owned(),
            )),
            other => Err(EnvelopeError::Invalid(format!(
                "expected an object, got {}",
                kind(&other)
            ))),
        }
    }

    /// Classify a parsed JSON object.
    pub fn from_object(mut object: Map<String, Value>) -> Result<Message, EnvelopeError> {
        match object.remove("jsonrpc") {
            Some(Value::String(version)) if version == VERSION => {}
            Some(other) => {
                return Err(EnvelopeError::Invalid(format!(
                    "`jsonrpc` must be \"2.0\", got {}",
                    kind(&other)
                )));
            }
            None => return Err(EnvelopeError::Invalid("no `jsonrpc` member".to_owned())),
        }
        let id = object.remove("id");
        let params = object.remove("params");
        if let Some(params) = &params
            && !(params.is_object() || params.is_array())
        {
            return Err(EnvelopeError::Invalid(format!(
                "`params` must be an object or an array, got {}",
                kind(params)
            )));
        }
        match object.remove("method") {
            Some(Value::String(method)) => match id {
                None => Ok(Message::Notification(NotificationMessage { method, params })),
                Some(id) => Ok(Message::Request(RequestMessage {
                    id: parse_id(id)?,
                    method,
                    params,
                })),
            },
            Some(other) => Err(EnvelopeError::Invalid(format!(
                "`method` must be a string, got {}",
                kind(&other)
            ))),
            None => {
                let id = match id {
                    Some(Value::Null) => None,
                    Some(id) => Some(parse_id(id)?),
                    None => return Err(EnvelopeError::Invalid("neither `method` nor `id`".to_owned())),
                };
                let outcome = match (object.remove("result"), object.remove("error")) {
                    (Some(result), None) => Ok(result),
                    (None, Some(error)) => Err(serde_json::from_value::<ErrorObject>(error)
                        .map_err(|error| EnvelopeError::Invalid(format!("malformed `error`: {error}")))?),
                    (Some(_), Some(_)) => {
                        return Err(EnvelopeError::Invalid("both `result` and `error`".to_owned()));
                    }
                    (None, None) => return Err(EnvelopeError::Invalid("neither `result` nor `error`".to_owned())),
                };
                Ok(Message::Response(ResponseMessage { id, outcome }))
            }
        }
    }

    /// The message as one line of compact JSON with `"jsonrpc": "2.0"` (JSON escapes line breaks
    /// inside strings, so the text never contains one).
    pub fn to_json(&self) -> String {
        let mut object = Map::with_capacity(4);
        object.insert("jsonrpc".to_owned(), Value::from(VERSION));
        match self {
            Message::Request(request) => {
                object.insert("id".to_owned(), id_value(&request.id));
                object.insert("method".to_owned(), Value::from(request.method.as_str()));
                if let Some(params) = &request.params {
                    object.insert("params".to_owned(), params.clone());
                }
            }
            Message::Notification(notification) => {
                object.insert("method".to_owned(), Value::from(notification.method.as_str()));
                if let Some(params) = &notification.params {
                    object.insert("params".to_owned(), params.clone());
                }
            }
            Message::Response(response) => {
                object.insert("id".to_owned(), response.id.as_ref().map_or(Value::Null, id_value));
                match &response.outcome {
                    Ok(result) => object.insert("result".to_owned(), result.clone()),
                    Err(error) => object.insert("error".to_owned(), serde_json::to_value(error).unwrap_or(Value::Null)),
                };
            }
        }
        Value::Object(object).to_string()
    }
}

fn parse_id(id: Value) -> Result<RequestId, EnvelopeError> {
    match id {
        Value::String(id) => Ok(RequestId::String(id)),
        Value::Number(number) => number
            .as_i64()
            .map(RequestId::Number)
            .ok_or_else(|| EnvelopeError::Invalid(format!("`id` must be an integer or a string, got {number}"))),
        other => Err(EnvelopeError::Invalid(format!(
            "`id` must be an integer or a string, got {}",
            kind(&other)
        ))),
    }
}

fn id_value(id: &RequestId) -> Value {
    match id {
        RequestId::Number(id) => Value::from(*id),
        RequestId::String(id) => Value::from(id.as_str()),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(value: &Value) -> Result<Message, EnvelopeError> {
        Message::parse(value.to_string().as_bytes())
    }

    #[test]
    fn the_three_kinds_are_told_apart_and_written_back_the_same() {
        let cases = [
            json!({"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}),
            json!({"jsonrpc": "2.0", "id": "a", "method": "daemon/status"}),
            json!({"jsonrpc": "2.0", "method": "mcpServer/log", "params": {"seq": 1}}),
            json!({"jsonrpc": "2.0", "id": 7, "result": {"tools": []}}),
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "bad"}}),
            json!({"jsonrpc": "2.0", "id": 3, "error": {"code": -32001, "message": "x", "data": {"a": 1}}}),
        ];
        for case in cases {
            let message = parse(&case).unwrap_or_else(|error| panic!("{case}: {error}"));
            let written: Value = serde_json::from_str(&message.to_json()).expect("written JSON parses");
            assert_eq!(written, case);
        }
        assert!(matches!(
            parse(&json!({"jsonrpc": "2.0", "id": 1, "method": "m"})),
            Ok(Message::Request(_))
        ));
        assert!(matches!(
            parse(&json!({"jsonrpc": "2.0", "method": "m"})),
            Ok(Message::Notification(_))
        ));
    }

    #[test]
    fn malformed_envelopes_say_which_member_is_wrong() {
        let cases = [
            (json!([]), "batch"),
            (json!(42), "expected an object"),
            (json!({"id": 1, "method": "m"}), "no `jsonrpc`"),
            (json!({"jsonrpc": "1.0", "id": 1, "method": "m"}), "`jsonrpc` must be"),
            (json!({"jsonrpc": "2.0", "id": 1.5, "method": "m"}), "`id` must be"),
            (json!({"jsonrpc": "2.0", "id": [1], "method": "m"}), "`id` must be"),
            (json!({"jsonrpc": "2.0", "id": 1, "method": 3}), "`method` must be"),
            (
                json!({"jsonrpc": "2.0", "id": 1, "method": "m", "params": 3}),
                "`params` must be",
            ),
            (json!({"jsonrpc": "2.0", "id": 1}), "neither `result` nor `error`"),
            (json!({"jsonrpc": "2.0"}), "neither `method` nor `id`"),
            (json!({"jsonrpc": "2.0", "id": 1, "result": 1, "error": {}}), "both"),
            (
                json!({"jsonrpc": "2.0", "id": 1, "error": {"code": "x"}}),
                "malformed `error`",
            ),
        ];
        for (case, expected) in cases {
            match parse(&case) {
                Err(error) => assert!(error.to_string().contains(expected), "{case}: {error}"),
                Ok(message) => panic!("{case} parsed as {message:?}"),
            }
        }
        assert!(matches!(Message::parse(b"{not json"), Err(EnvelopeError::Json(_))));
    }
}
