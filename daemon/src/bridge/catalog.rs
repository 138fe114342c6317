//! MCP prompts and resources for an MCP client: `prompts/list`,
//! `prompts/get`, `resources/list`, `resources/templates/list` and
//! `resources/read`, over every ready server the client sees.
//!
//! - Prompts share one namespace per client, named like tools
//!   (`server__prompt`, [`super::names`]); `prompts/get` finds the server by
//!   the name, as `tools/call` does.
//! - Resources keep their URIs: a URI is the server's, and clients (and
//!   models) read meaning into it (`file:///…`). When two servers list the
//!   same URI (or the same URI template), the one first in the order of
//!   their names in corrald (`corral list`) keeps it and every other one's
//!   is listed as `corral://SERVER/URI` (SERVER: the name the client knows
//!   it by), which reads from that server (a URI already listed is never
//!   taken over: a server's own URI that is another's prefixed one is
//!   prefixed in turn). The same rule every run: with the same servers
//!   ready, a client's saved URIs stay good.
//! - `resources/read` of a URI finds its server by, in this order: the
//!   `corral://SERVER/` form; the client's latest resource listing (listed
//!   again if the URI is not in it); the first listed template it matches
//!   (each `{…}` expression of a template matches any text); and, when only
//!   one server the client sees offers resources, that server. Otherwise it
//!   is MCP's "resource not found" (-32002), naming the URI.
//! - One page each: the bridge fetches every page of every server
//!   (`mcp::forward::list_each`, each server within its `tool_timeout_sec`)
//!   and gives no cursor; a server whose listing fails is left out and
//!   logged. Items pass through as the server wrote them, but for a
//!   prompt's name or a colliding URI.
//! - Subscriptions (`resources/subscribe`) are not offered to MCP clients
//!   yet (the capability says so).

use std::collections::HashMap;
use std::sync::Arc;

use corral_protocol::ErrorCode;
use jsonrpsee::RpcModule;
use jsonrpsee::core::RegisterMethodError;
use jsonrpsee::types::{ErrorObjectOwned, Params};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::tools::{name_items, one_page, visible_ready};
use super::{Bridge, Client, error, keep, latest, link, parse};
use crate::hub::link::Link;
use crate::mcp::forward::{self, JsonObject, ListKind};
use crate::mcp::route::{CallTarget, NotAvailable};

/// MCP's error code for a resource no server has.
const RESOURCE_NOT_FOUND: i32 = -32002;

/// The scheme of a URI that names its server: `corral://SERVER/URI`.
const SERVER_URI_PREFIX: &str = "corral://";

/// What the client's latest resource listings map back to servers.
#[derive(Debug, Default)]
pub(crate) struct Resources {
    /// A listed URI to (registry name, the server's own URI).
    uris: HashMap<String, (String, String)>,
    /// Listed templates, in order: (registry name, the server's own template).
    templates: Vec<(String, String)>,
}

/// `prompts/get`'s params.
#[derive(Debug, serde::Deserialize)]
struct GetPromptParams {
    name: String,
    #[serde(default)]
    arguments: Option<JsonObject>,
}

/// `resources/read`'s params.
#[derive(Debug, serde::Deserialize)]
struct ReadParams {
    uri: String,
}

/// Register the prompt and resource methods.
pub(crate) fn register(module: &mut RpcModule<Bridge>) -> Result<(), RegisterMethodError> {
    module.register_async_method("prompts/list", |params, bridge, extensions| async move {
        let client = bridge.client(&extensions)?;
        one_page(&params, "prompts/list")?;
        Ok::<_, ErrorObjectOwned>(json!({ "prompts": list_prompts(&bridge, &client).await? }))
    })?;
    module.register_async_method("prompts/get", |params, bridge, extensions| async move {
        let link = link(&extensions)?;
        let client = bridge.client(&extensions)?;
        get_prompt(&bridge, &client, &params, &link).await
    })?;
    module.register_async_method("resources/list", |params, bridge, extensions| async move {
        let client = bridge.client(&extensions)?;
        one_page(&params, "resources/list")?;
        Ok::<_, ErrorObjectOwned>(json!({ "resources": list_resources(&bridge, &client).await? }))
    })?;
    module.register_async_method("resources/templates/list", |params, bridge, extensions| async move {
        let client = bridge.client(&extensions)?;
        one_page(&params, "resources/templates/list")?;
        Ok::<_, ErrorObjectOwned>(json!({ "resourceTemplates": list_templates(&bridge, &client).await? }))
    })?;
    module.register_async_method("resources/read", |params, bridge, extensions| async move {
        let link = link(&extensions)?;
        let client = bridge.client(&extensions)?;
        read_resource(&bridge, &client, &params, &link).await
    })?;
    Ok(())
}

/// `kind` of every ready server the client sees: (shown name, registry
/// name, items), in name order; failures logged and left out.
async fn fetch(
    bridge: &Bridge,
    client: &Client,
    kind: ListKind,
) -> Result<Vec<(String, String, Vec<Value>)>, ErrorObjectOwned> {
    let visible = visible_ready(bridge, client).await?;
    let mut shown: HashMap<String, String> = HashMap::new();
    let mut targets = Vec::with_capacity(visible.len());
    for (name, target) in visible {
        shown.insert(target.config.name.clone(), name);
        targets.push(target);
    }
    let mut fetched = Vec::new();
    for (target, items) in forward::list_each(kind, targets).await {
        let server = target.config.name.clone();
        match items {
            Ok(items) => {
                let name = shown.remove(&server).unwrap_or_else(|| server.clone());
                fetched.push((name, server, items));
            }
            Err(failure) => tracing::warn!(
                server,
                "left out of an MCP client's listing: {}",
                failure.describe(&server, kind)
            ),
        }
    }
    Ok(fetched)
}

/// Every prompt the client sees, named; keeps the names for `prompts/get`.
async fn list_prompts(bridge: &Bridge, client: &Client) -> Result<Vec<Value>, ErrorObjectOwned> {
    let fetched = fetch(bridge, client, ListKind::Prompts).await?;
    let (listing, named) = name_items(fetched, &client.view.separator);
    keep(&client.prompts, listing);
    Ok(named)
}

/// `prompts/get`: the prompt of the server that owns the name.
async fn get_prompt(
    bridge: &Bridge,
    client: &Client,
    params: &Params<'_>,
    link: &Arc<Link>,
) -> Result<Box<RawValue>, ErrorObjectOwned> {
    let GetPromptParams { name, arguments } = parse(params, "prompts/get")?;
    let mut found = latest(&client.prompts).get(&name).cloned();
    if found.is_none() {
        list_prompts(bridge, client).await?;
        found = latest(&client.prompts).get(&name).cloned();
    }
    let Some((server, prompt)) = found else {
        return Err(error(
            ErrorCode::InvalidParams,
            format!(
                "unknown prompt `{name}`: no ready server corral runs has a prompt of that name; list the prompts again"
            ),
        ));
    };
    let target = ready(bridge, &server).await?;
    let what = format!("`prompts/get` of `{prompt}`");
    let get = forward::get_prompt(&target, prompt.clone(), arguments, link);
    within_timeout(bridge, link, &target, &what, get).await
}

/// Every resource the client sees; keeps where each URI comes from.
async fn list_resources(bridge: &Bridge, client: &Client) -> Result<Vec<Value>, ErrorObjectOwned> {
    let fetched = fetch(bridge, client, ListKind::Resources).await?;
    let (uris, listed) = unique(fetched, "uri");
    let templates = latest(&client.resources).templates.clone();
    keep(&client.resources, Resources { uris, templates });
    Ok(listed)
}

/// Every resource template the client sees; keeps them for `resources/read`.
async fn list_templates(bridge: &Bridge, client: &Client) -> Result<Vec<Value>, ErrorObjectOwned> {
    let fetched = fetch(bridge, client, ListKind::ResourceTemplates).await?;
    let (by_template, listed) = unique(fetched, "uriTemplate");
    let mut templates: Vec<(String, String)> = Vec::with_capacity(listed.len());
    for template in &listed {
        if let Some(found) = template
            .get("uriTemplate")
            .and_then(Value::as_str)
            .and_then(|listed| by_template.get(listed))
        {
            templates.push(found.clone());
        }
    }
    let uris = latest(&client.resources).uris.clone();
    keep(&client.resources, Resources { uris, templates });
    Ok(listed)
}

/// Items whose `key` (a URI or template) is unique across servers: the
/// first server keeps each, later ones get `corral://SERVER/…`. Returns
/// what each listed value maps to (registry name, the server's own value)
/// and the items as listed.
fn unique(fetched: Vec<(String, String, Vec<Value>)>, key: &str) -> (HashMap<String, (String, String)>, Vec<Value>) {
    let mut map: HashMap<String, (String, String)> = HashMap::new();
    let mut listed = Vec::new();
    for (shown, server, items) in fetched {
        for mut item in items {
            let Some(own) = item.get(key).and_then(Value::as_str).map(str::to_owned) else {
                continue;
            };
            let given = if map.contains_key(&own) {
                format!("{SERVER_URI_PREFIX}{shown}/{own}")
            } else {
                own.clone()
            };
            // Taken even so (a server that lists a URI twice): never take it over.
            if map.contains_key(&given) {
                tracing::debug!(server, uri = %own, "a resource whose URI is taken is left out");
                continue;
            }
            if given != own {
                item[key] = Value::String(given.clone());
            }
            map.insert(given, (server.clone(), own));
            listed.push(item);
        }
    }
    (map, listed)
}

/// Whether `uri` is one `template` expands to: every literal part of the
/// template in order, each `{…}` expression standing for any text.
fn matches_template(template: &str, uri: &str) -> bool {
    let mut literals = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        literals.push(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => rest = &rest[open + close + 1..],
            // Not a template after all: compare it as text.
            None => return template == uri,
        }
    }
    literals.push(rest);
    let (first, tail) = literals.split_first().expect("at least one literal");
    let Some(mut remaining) = uri.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = tail.split_last() else {
        return remaining.is_empty();
    };
    for literal in middle {
        match remaining.find(literal) {
            Some(at) => remaining = &remaining[at + literal.len()..],
            None => return false,
        }
    }
    remaining.ends_with(last)
}

/// `resources/read`: the resource of the server the URI belongs to (see the module doc).
async fn read_resource(
    bridge: &Bridge,
    client: &Client,
    params: &Params<'_>,
    link: &Arc<Link>,
) -> Result<Box<RawValue>, ErrorObjectOwned> {
    let ReadParams { uri } = parse(params, "resources/read")?;
    let (server, own) = locate(bridge, client, &uri).await?;
    let target = ready(bridge, &server).await?;
    let what = format!("`resources/read` of `{own}`");
    let read = forward::read_resource(&target, own.clone(), link);
    within_timeout(bridge, link, &target, &what, read).await
}

/// The server (registry name) of `uri`, and the URI it knows it by.
async fn locate(bridge: &Bridge, client: &Client, uri: &str) -> Result<(String, String), ErrorObjectOwned> {
    if let Some((shown, own)) = uri
        .strip_prefix(SERVER_URI_PREFIX)
        .and_then(|rest| rest.split_once('/'))
    {
        let whose = bridge.supervisor.targets(None)?.unwrap_or_default().whose;
        if let Some(server) = client.view.registry_name(shown, &whose) {
            return Ok((server, own.to_owned()));
        }
    }
    let known = |resources: &Resources| resources.uris.get(uri).cloned();
    if let Some(found) = known(&latest(&client.resources)) {
        return Ok(found);
    }
    list_resources(bridge, client).await?;
    if let Some(found) = known(&latest(&client.resources)) {
        return Ok(found);
    }
    if latest(&client.resources).templates.is_empty() {
        list_templates(bridge, client).await?;
    }
    let by_template = latest(&client.resources)
        .templates
        .iter()
        .find(|(_, template)| matches_template(template, uri))
        .map(|(server, _)| (server.clone(), uri.to_owned()));
    if let Some(found) = by_template {
        return Ok(found);
    }
    let offering: Vec<String> = visible_ready(bridge, client)
        .await?
        .into_iter()
        .filter(|(_, target)| ListKind::Resources.offered_by(target))
        .map(|(_, target)| target.config.name.clone())
        .collect();
    match offering.as_slice() {
        [only] => Ok((only.clone(), uri.to_owned())),
        _ => Err(ErrorObjectOwned::owned(
            RESOURCE_NOT_FOUND,
            format!(
                "Resource not found: no ready server corral runs lists `{uri}` or a template it matches; list the resources again"
            ),
            Some(json!({ "uri": uri })),
        )),
    }
}

/// The call target of `server`, or an error saying why it cannot take a request.
async fn ready(bridge: &Bridge, server: &str) -> Result<CallTarget, ErrorObjectOwned> {
    match bridge.supervisor.call_target(server)? {
        Ok(target) => Ok(target),
        Err(not_available @ NotAvailable::NotReady { .. }) => Err(error(
            ErrorCode::ServerNotReady,
            super::tools::advice(server, &not_available),
        )),
        Err(NotAvailable::NotFound) => Err(error(
            ErrorCode::InvalidParams,
            format!("MCP server `{server}` is no longer configured in corral; list again"),
        )),
    }
}

/// `request` to `target` as a call of the client on `link` (what the server asks meanwhile
/// goes to it), within its `tool_timeout_sec` of active time (the clock stops while the
/// client's user answers an elicitation), its failure worded.
async fn within_timeout(
    bridge: &Bridge,
    link: &Arc<Link>,
    target: &CallTarget,
    what: &str,
    request: impl Future<Output = Result<Box<RawValue>, crate::mcp::route::RouteError>>,
) -> Result<Box<RawValue>, ErrorObjectOwned> {
    let server = &target.config.name;
    let timeout = target.config.tool_timeout;
    let frontends = &bridge.hub.routes;
    match frontends
        .call_started(server, link.id)
        .within(timeout, std::pin::pin!(request))
        .await
    {
        Some(Ok(answer)) => Ok(answer),
        // The server's own refusal, as it gave it (a direct client would see the same).
        Some(Err(crate::mcp::route::RouteError::Answered { code, message, data })) => {
            Err(ErrorObjectOwned::owned(code, message, data))
        }
        Some(Err(failure)) => Err(error(ErrorCode::ServerError, failure.describe(server, what))),
        None => Err(error(
            ErrorCode::RequestTimeout,
            format!(
                "MCP server `{server}` did not answer {what} within {}s (its tool_timeout_sec); the request was cancelled",
                timeout.as_secs_f64()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_matches_what_it_expands_to() {
        assert!(matches_template(
            "test://static/resource/{id}",
            "test://static/resource/12"
        ));
        assert!(matches_template("file:///{+path}", "file:///home/u/a.txt"));
        assert!(matches_template(
            "db://{table}/rows/{id}{?fields}",
            "db://users/rows/3?fields=a,b"
        ));
        assert!(
            matches_template("db://{table}/rows/{id}", "db://users/rows/"),
            "an empty expansion"
        );
        assert!(!matches_template(
            "test://static/resource/{id}",
            "test://dynamic/resource/12"
        ));
        assert!(!matches_template("db://{table}/rows/{id}", "db://users/cols/3"));
        assert!(!matches_template("a://{x}.json", "a://y.txt"));
        assert!(matches_template("plain://uri", "plain://uri"));
        assert!(!matches_template("plain://uri", "plain://uri/more"));
        assert!(!matches_template("broken://{x", "broken://y"));
    }

    #[test]
    fn a_uri_two_servers_list_is_kept_by_the_first_and_prefixed_for_the_others() {
        let fetched = vec![
            (
                "a".to_owned(),
                "a".to_owned(),
                vec![
                    json!({ "uri": "file:///x", "name": "x" }),
                    json!({ "uri": "file:///y" }),
                ],
            ),
            (
                "mine".to_owned(),
                "mine-c3".to_owned(),
                vec![json!({ "uri": "file:///x", "name": "x" }), json!({ "no": "uri" })],
            ),
        ];
        let (map, listed) = unique(fetched, "uri");
        let uris: Vec<&str> = listed.iter().map(|item| item["uri"].as_str().expect("uri")).collect();
        assert_eq!(uris, ["file:///x", "file:///y", "corral://mine/file:///x"]);
        assert_eq!(map["file:///x"], ("a".to_owned(), "file:///x".to_owned()));
        assert_eq!(
            map["corral://mine/file:///x"],
            ("mine-c3".to_owned(), "file:///x".to_owned())
        );
        assert_eq!(listed[2]["name"], "x", "everything else as the server wrote it");

        let sneaky = vec![
            ("a".to_owned(), "a".to_owned(), vec![json!({ "uri": "file:///x" })]),
            ("b".to_owned(), "b".to_owned(), vec![json!({ "uri": "file:///x" })]),
            (
                "c".to_owned(),
                "c".to_owned(),
                vec![json!({ "uri": "corral://b/file:///x" })],
            ),
        ];
        let (map, listed) = unique(sneaky, "uri");
        assert_eq!(map["corral://b/file:///x"].0, "b", "never taken over");
        assert_eq!(
            listed[2]["uri"], "corral://c/corral://b/file:///x",
            "c's own URI is b's prefixed one: c's is prefixed in turn"
        );
        assert_eq!(
            map["corral://c/corral://b/file:///x"],
            ("c".to_owned(), "corral://b/file:///x".to_owned())
        );
    }
}
