//! JSON-RPC params and error objects, shared by the two method tables a
//! connection can have: the front-end API's (`api`) and the MCP bridge's
//! (`bridge`); and the type of their raw methods ([`RawMethods`]). A leaf: it
//! names no other room.
//!
//! Params that do not parse are `invalidParams` naming the method and the
//! field's path; absent or `null` params mean `{}`.

use std::borrow::Cow;
use std::future::Future;
use std::ops::Range;
use std::pin::Pin;
use std::sync::Arc;

use corral_protocol::ErrorCode;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use crate::FastMap;
use crate::hub::link::Link;

/// A JSON object, as MCP carries arguments and `_meta`.
pub(crate) type JsonObject = serde_json::Map<String, serde_json::Value>;

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

/// Whether a call's `arguments`, as the front-end wrote them, are what the full reading of
/// its params takes too (an object, or absent): the `accept` of [`parse_quickly`] for the
/// `tools/call` of Corral's protocol and of MCP's.
pub(crate) fn arguments_fit(arguments: Option<RawJson<'_>>) -> bool {
    arguments.is_none_or(|arguments| arguments.get().starts_with('{'))
}

/// JSON text as a front-end wrote it (a call's arguments), read as JSON once already: a
/// raw value of serde's, or a part of a request read in its pass ([`CallAt`]). Passed
/// on as it is, not read again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawJson<'a>(&'a str);

impl<'a> RawJson<'a> {
    /// The text.
    pub(crate) fn get(self) -> &'a str {
        self.0
    }
}

impl<'a> From<&'a RawValue> for RawJson<'a> {
    fn from(raw: &'a RawValue) -> Self {
        Self(raw.get())
    }
}

/// Arguments the full reading took, written again as raw JSON for a hot path's callee.
pub(crate) fn raw_arguments(arguments: Option<&JsonObject>) -> Result<Option<Box<RawValue>>, ErrorObjectOwned> {
    arguments
        .map(serde_json::value::to_raw_value)
        .transpose()
        .map_err(|failure| error(ErrorCode::InternalError, failure.to_string()))
}

/// What a raw method's handler returns: the `result` (JSON as a server wrote it), or an error.
pub(crate) type RawFuture = Pin<Box<dyn Future<Output = Result<Box<RawValue>, ErrorObjectOwned>> + Send>>;

/// A raw method's handler: the request's params and the link of the connection
/// that sent it (which knows the connection by the same id as its session).
/// No jsonrpsee `Extensions`: a map allocated, filled and dropped at every call.
pub(crate) type RawCallback = Arc<dyn Fn(RawParams, Arc<Link>) -> RawFuture + Send + Sync>;

/// A raw method's params: the request's text, which the handler's future owns, and
/// where the params are in it. Not a copy of the params per request.
#[derive(Debug)]
pub(crate) struct RawParams {
    text: String,
    /// Where the params are; `None` for a call read in the request's pass ([`CallAt`]),
    /// which does not note it: found again if asked for ([`RawParams::params`]).
    params: Option<Option<Range<usize>>>,
    /// The params read as a call in the request's pass, until the handler takes them.
    call: Option<CallAt>,
}

/// Where a request's params are.
#[derive(Debug)]
pub(crate) enum ParamsAt {
    /// It has none.
    Absent,
    /// In its text, here.
    In(Range<usize>),
    /// Not a part of its text: a copy.
    Copied(String),
}

impl ParamsAt {
    /// Where `params` are in the request `text`: a part of it, as the request's parse
    /// borrows them (addresses compared, no pointer followed), else copied.
    pub(crate) fn find(text: &str, params: Option<&str>) -> Self {
        match params {
            None => Self::Absent,
            Some(params) => range_in(text, params).map_or_else(|| Self::Copied(params.to_owned()), Self::In),
        }
    }
}

/// Where `part` is in `text`, if it is a part of it (as a parse of `text` borrows it):
/// addresses compared, no pointer followed.
fn range_in(text: &str, part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize);
    let range = start..start.wrapping_add(part.len());
    text.get(range.clone())
        .is_some_and(|found| std::ptr::eq(found, part))
        .then_some(range)
}

impl RawParams {
    /// The params of the request `text`, found `at`.
    pub(crate) fn new(text: String, at: ParamsAt) -> Self {
        let (text, params) = match at {
            ParamsAt::Absent => (text, None),
            ParamsAt::In(range) => (text, Some(range)),
            ParamsAt::Copied(params) => {
                let range = 0..params.len();
                (params, Some(range))
            }
        };
        Self {
            text,
            params: Some(params),
            call: None,
        }
    }

    /// The params of the request `text`, read as a call in its pass (`call`: what it
    /// borrowed from `text`, [`CallAt::new`]); `None` when it did not fit there.
    pub(crate) fn call(text: String, call: Option<CallAt>) -> Self {
        Self {
            text,
            params: None,
            call,
        }
    }

    /// The params as the request's pass read them, if it read them as a call ([`CallShape`]);
    /// [`CallAt::view`] shows them.
    pub(crate) fn take_call(&mut self) -> Option<CallAt> {
        self.call.take()
    }

    /// The params, as jsonrpsee's handlers take them.
    pub(crate) fn params(&self) -> Params<'_> {
        let range = match &self.params {
            Some(range) => range.clone(),
            None => find_params(&self.text),
        };
        Params::new(range.and_then(|range| self.text.get(range)))
    }
}

/// Where the params of the request `text` are: the request's pass read them as a call
/// and did not note it. For a call whose view the handler does not take: one with
/// members its quick reading does not know (Corral's `headers`, taken by the full
/// reading) or params it refuses (an error).
fn find_params(text: &str) -> Option<Range<usize>> {
    #[derive(serde::Deserialize)]
    struct Only<'a> {
        #[serde(borrow, default)]
        params: Option<&'a RawValue>,
    }
    // Takes more than the request's pass, which took this text: it reads.
    let only = serde_json::from_str::<Only<'_>>(text);
    debug_assert!(
        only.is_ok(),
        "a request's pass took what `Only` refuses: {:?}",
        only.as_ref().err()
    );
    range_in(text, only.ok()?.params?.get())
}

/// The method whose params the request's pass reads as a [`CallShape`] (`api/dispatch.rs`):
/// `tools/call`, a raw method of both tables (Corral's protocol's and MCP's).
pub(crate) const CALL_METHOD: &str = "tools/call";

/// `tools/call`'s params as the quick readings of both its tables take them (Corral's
/// `server`, `name`, `arguments`, `_meta`; MCP's the same without `server`), read in the
/// request's own pass: its params are not scanned once as a raw value and then again.
/// Members other than these are skipped and noted (`others`): Corral's table then reads
/// the params fully (which takes `headers` and refuses the rest), MCP's ignores them. Anything this does not take (a name that is not a string,
/// a member twice, params that are not an object) fails the request's pass, which reads the
/// request again as before: the params raw, for the handler's own readings.
#[derive(Debug)]
pub(crate) struct CallShape<'a> {
    server: Option<Cow<'a, str>>,
    name: Cow<'a, str>,
    arguments: Option<&'a RawValue>,
    meta: Option<JsonObject>,
    others: bool,
}

impl<'de> serde::Deserialize<'de> for CallShape<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(CallShapeVisitor)
    }
}

struct CallShapeVisitor;

impl<'de> serde::de::Visitor<'de> for CallShapeVisitor {
    type Value = CallShape<'de>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("tools/call params")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        use serde::de::Error as _;
        let (mut server, mut name, mut arguments, mut meta, mut others) = (None, None, None, None, false);
        while let Some(Text(key)) = map.next_key::<Text<'de>>()? {
            match key.as_ref() {
                "server" => once(&mut server, "server", map.next_value::<Text<'de>>()?.0)?,
                "name" => once(&mut name, "name", map.next_value::<Text<'de>>()?.0)?,
                "arguments" => once(&mut arguments, "arguments", map.next_value::<Option<&'de RawValue>>()?)?,
                "_meta" => once(&mut meta, "_meta", map.next_value::<Option<JsonObject>>()?)?,
                _ => {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    others = true;
                }
            }
        }
        Ok(CallShape {
            server,
            name: name.ok_or_else(|| A::Error::missing_field("name"))?,
            arguments: arguments.flatten(),
            meta: meta.flatten(),
            others,
        })
    }
}

/// Set `slot` to `value` unless a member of the same name set it before.
pub(crate) fn once<T, E: serde::de::Error>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(E::duplicate_field(field));
    }
    *slot = Some(value);
    Ok(())
}

/// A string, borrowed from the request unless escaped (as serde's `#[serde(borrow)]` reads a `Cow`).
pub(crate) struct Text<'a>(pub(crate) Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> serde::de::Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(text)))
            }
            fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// A [`CallShape`] as places in the request's text, which the handler's future owns
/// ([`RawParams`]): what it borrowed is a range of the text, what it copied (an escaped
/// string, `_meta`) its own.
#[derive(Debug)]
pub(crate) struct CallAt {
    server: Option<TextAt>,
    name: TextAt,
    arguments: Option<Range<usize>>,
    meta: Option<JsonObject>,
    others: bool,
}

#[derive(Debug)]
enum TextAt {
    In(Range<usize>),
    Owned(String),
}

impl TextAt {
    fn new(text: &str, part: Cow<'_, str>) -> Self {
        match part {
            Cow::Borrowed(part) => range_in(text, part).map_or_else(|| Self::Owned(part.to_owned()), Self::In),
            Cow::Owned(part) => Self::Owned(part),
        }
    }

    fn get(self, text: &str) -> Option<Cow<'_, str>> {
        match self {
            Self::In(range) => text.get(range).map(Cow::Borrowed),
            Self::Owned(part) => Some(Cow::Owned(part)),
        }
    }
}

impl CallAt {
    /// `None` when arguments it read are not a part of `text` (they always are).
    pub(crate) fn new(text: &str, shape: CallShape<'_>) -> Option<Self> {
        let arguments = match shape.arguments {
            Some(arguments) => Some(range_in(text, arguments.get())?),
            None => None,
        };
        Some(Self {
            server: shape.server.map(|server| TextAt::new(text, server)),
            name: TextAt::new(text, shape.name),
            arguments,
            meta: shape.meta,
            others: shape.others,
        })
    }

    /// The call's params in `params`, the request they were read from.
    pub(crate) fn view(self, params: &RawParams) -> Option<CallView<'_>> {
        let text = params.text.as_str();
        let arguments = match self.arguments {
            // Read as a raw value in the pass: JSON.
            Some(range) => Some(RawJson(text.get(range)?)),
            None => None,
        };
        Some(CallView {
            server: match self.server {
                Some(server) => Some(server.get(text)?),
                None => None,
            },
            name: self.name.get(text)?,
            arguments,
            meta: self.meta,
            others: self.others,
        })
    }
}

/// A call's params as the request's pass read them ([`CallShape`]).
#[derive(Debug)]
pub(crate) struct CallView<'a> {
    /// Corral's `server`; MCP's table ignores it, as any other member.
    pub(crate) server: Option<Cow<'a, str>>,
    pub(crate) name: Cow<'a, str>,
    /// As the front-end wrote them; `null` is none.
    pub(crate) arguments: Option<RawJson<'a>>,
    pub(crate) meta: Option<JsonObject>,
    /// Whether the params had members other than these.
    pub(crate) others: bool,
}

/// Methods whose answer is a server's JSON passed through (`tools/call`): the
/// dispatcher writes the `result` into the response as it is. jsonrpsee would
/// serialize it and then parse the whole response again to check it, a second
/// parse of what the server's wire already read once, and two more copies.
/// Looked up before the jsonrpsee table of the same mode.
#[derive(Default)]
pub(crate) struct RawMethods(FastMap<&'static str, RawCallback>);

impl RawMethods {
    /// Add `method`, answered by `handler`.
    pub(crate) fn register(&mut self, method: &'static str, handler: RawCallback) {
        self.0.insert(method, handler);
    }

    /// The handler of `method`, if it is a raw method.
    pub(crate) fn get(&self, method: &str) -> Option<(&'static str, &RawCallback)> {
        self.0
            .get_key_value(method)
            .map(|(method, callback)| (*method, callback))
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

    #[test]
    fn raw_params_are_found_in_their_request_or_copied() {
        let text = r#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"a":[1]}}"#.to_owned();
        // As the request's parse borrows them: a slice of its text.
        let start = text.find(r#"{"a""#).expect("params");
        let at = ParamsAt::find(&text, Some(&text[start..text.len() - 1]));
        assert!(
            matches!(&at, ParamsAt::In(range) if &text[range.clone()] == r#"{"a":[1]}"#),
            "{at:?}"
        );
        assert_eq!(RawParams::new(text.clone(), at).params().as_str(), Some(r#"{"a":[1]}"#));

        // Equal text elsewhere is not a part of the request: copied.
        let elsewhere = r#"{"a":[1]}"#.to_owned();
        let at = ParamsAt::find(&text, Some(&elsewhere));
        assert!(matches!(&at, ParamsAt::Copied(copy) if copy == &elsewhere), "{at:?}");
        assert_eq!(RawParams::new(text.clone(), at).params().as_str(), Some(r#"{"a":[1]}"#));

        let at = ParamsAt::find(&text, None);
        assert!(matches!(at, ParamsAt::Absent));
        assert_eq!(RawParams::new(text, at).params().as_str(), None);
    }
}
