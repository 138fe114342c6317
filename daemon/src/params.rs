//! JSON-RPC params and error objects, shared by the two method tables a
//! connection can have: the front-end API's (`api`) and the MCP bridge's
//! (`bridge`). A leaf: it names no other room.
//!
//! Params that do not parse are `invalidParams` naming the method and the
//! field's path; absent or `null` params mean `{}`.

use corral_protocol::ErrorCode;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde::de::DeserializeOwned;

/// A JSON-RPC error object with one of Corral's codes.
pub(crate) fn error(code: ErrorCode, message: impl Into<String>) -> ErrorObjectOwned {
    ErrorObjectOwned::owned::<()>(code.code(), message, None)
}

/// Parse `params` of `method`; the message names the field that is wrong.
pub(crate) fn parse<T: DeserializeOwned>(params: &Params<'_>, method: &str) -> Result<T, ErrorObjectOwned> {
    let raw = params
        .as_str()
        .map(str::trim)
        .filter(|raw| *raw != "null")
        .unwrap_or("{}");
    // Read plainly first: the path is wanted only for the message of params that do not
    // parse, and tracking it costs on every request.
    if let Ok(parsed) = serde_json::from_str(raw) {
        return Ok(parsed);
    }
    let mut deserializer = serde_json::Deserializer::from_str(raw);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|failure| {
        let path = failure.path().to_string();
        let inner = failure.into_inner();
        let message = if path == "." {
            format!("invalid params for `{method}`: {inner}")
        } else {
            format!("invalid params for `{method}`: field `{path}`: {inner}")
        };
        error(ErrorCode::InvalidParams, message)
    })
}
