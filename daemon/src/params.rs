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

/// Parse `params` of `method` into `Quick` if it reads them (and `accept` takes what it
/// read), else as `Full`, whose errors front-ends see. `Quick` is a borrowed reading of
/// the same params for a hot path (arguments left as raw JSON, say): it must take a
/// subset of what `Full` takes, so that what is accepted and what is refused, and how,
/// stay `Full`'s.
pub(crate) fn parse_quickly<'p, Quick, Full>(
    params: &'p Params<'_>,
    method: &str,
    accept: impl FnOnce(&Quick) -> bool,
) -> Result<Result<Quick, Full>, ErrorObjectOwned>
where
    Quick: serde::Deserialize<'p>,
    Full: DeserializeOwned,
{
    let raw = params
        .as_str()
        .map(str::trim)
        .filter(|raw| *raw != "null")
        .unwrap_or("{}");
    match serde_json::from_str::<Quick>(raw) {
        Ok(quick) if accept(&quick) => Ok(Ok(quick)),
        _ => parse(params, method).map(Err),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::value::RawValue;

    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Full {
        #[allow(dead_code, reason = "read to be refused or not, as the full form")]
        arguments: Option<serde_json::Map<String, serde_json::Value>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Quick<'a> {
        #[serde(borrow)]
        arguments: Option<&'a RawValue>,
    }

    fn quickly(params: &str) -> Result<Result<String, ()>, String> {
        let params = Params::new(Some(params));
        parse_quickly::<Quick<'_>, Full>(&params, "m", |quick| {
            quick.arguments.is_none_or(|raw| raw.get().starts_with('{'))
        })
        .map(|parsed| {
            parsed
                .map(|quick| format!("{:?}", quick.arguments.map(RawValue::get)))
                .map_err(drop)
        })
        .map_err(|error| error.message().to_owned())
    }

    fn fully(params: &str) -> String {
        parse::<Full>(&Params::new(Some(params)), "m")
            .map(|_| "ok".to_owned())
            .unwrap_or_else(|error| error.message().to_owned())
    }

    #[test]
    fn a_quick_reading_is_taken_as_written_and_what_it_refuses_is_refused_as_the_full_form_refuses_it() {
        assert_eq!(
            quickly(r#"{"arguments": {"b": 1, "a": 2}}"#),
            Ok(Ok(r#"Some("{\"b\": 1, \"a\": 2}")"#.to_owned()))
        );
        assert_eq!(quickly(r#"{"arguments": null}"#), Ok(Ok("None".to_owned())));
        for refused in [
            r#"{"arguments": 5}"#,
            r#"{"arguments": [1]}"#,
            r#"{"other": 1}"#,
            r#"[1]"#,
        ] {
            assert_eq!(quickly(refused), Err(fully(refused)), "{refused}");
            assert!(
                fully(refused).starts_with("invalid params for `m`"),
                "{}",
                fully(refused)
            );
        }
    }
}
