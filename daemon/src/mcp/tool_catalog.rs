//! A ready server's tools, one value per listing ([`ToolCatalog`]): what `tools/list`
//! serves and what `tools/call` checks, built once where a listing completes (the server
//! task, at ready and after each `notifications/tools/list_changed`).
//!
//! Each tool is held twice over, joined once at build time: rmcp's typed `Tool` (its name
//! and schemas, for the daemon's checks) and its JSON as the server wrote it, which is what
//! front-ends get (rmcp's model drops or reshapes a few fields: a tool's `execution`,
//! `annotations.priority` as `f32`). The server's bytes come from the session's
//! [`WireTee`](super::wire_tee::WireTee) when the transport has one (stdio); otherwise
//! (streamable HTTP, in-process) the typed tool is serialized, once.
//!
//! The config's tool filters (`enabled_tools`, `disabled_tools`, as a [`ToolFilter`]) are
//! applied at build time: a catalog holds only the tools a front-end may list and call,
//! and keeps the filter only to say why a tool it does not hold cannot be called.
//!
//! Invariants: a catalog never changes once built (the task replaces the whole
//! `Arc<ToolCatalog>`, so a listing is one consistent snapshot); its tools are in the
//! server's order; the JSON of a tool the server wrote is kept byte for byte.

use std::borrow::Cow;
use std::collections::HashMap;

use corral_protocol::config::ServerConfig;
use rmcp::model::Tool;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::route::RouteError;

/// The config's `enabled_tools` / `disabled_tools` of one server.
#[derive(Debug, Clone, Default)]
pub(crate) struct ToolFilter {
    /// Only these, if set.
    enabled: Option<Vec<String>>,
    /// Never these (wins over `enabled`).
    disabled: Vec<String>,
}

impl ToolFilter {
    /// The filter of `config`.
    pub(crate) fn of(config: &ServerConfig) -> Self {
        Self {
            enabled: config.enabled_tools.clone(),
            disabled: config.disabled_tools.clone(),
        }
    }

    /// Whether `tool` may be listed and called.
    pub(crate) fn allows(&self, tool: &str) -> bool {
        let enabled = self
            .enabled
            .as_ref()
            .is_none_or(|enabled| enabled.iter().any(|name| name == tool));
        enabled && !self.disabled.iter().any(|name| name == tool)
    }
}

/// The tools of one listing of one server session that the config lets through.
#[derive(Debug)]
pub(crate) struct ToolCatalog {
    /// In the server's order.
    tools: Vec<CatalogTool>,
    /// What left tools out, to tell a disabled tool from an unknown one.
    filter: ToolFilter,
}

/// One tool of a catalog.
#[derive(Debug)]
struct CatalogTool {
    /// rmcp's typed tool.
    typed: Tool,
    /// What front-ends get.
    json: ToolJson,
    /// Its `execution.taskSupport` as the server wrote it (rmcp's model has no
    /// `execution`), read once here rather than at each call.
    task_support: Option<String>,
}

/// The JSON of a tool as front-ends get it.
#[derive(Debug)]
enum ToolJson {
    /// As the server wrote it.
    Wire(Box<RawValue>),
    /// rmcp's typed tool, serialized (the server's bytes were not seen).
    Typed(Box<RawValue>),
    /// The typed tool could not be serialized: serde's words (a listing then fails, as
    /// it would for any answer corrald cannot serialize).
    Unserializable(String),
}

/// A tool's name, as a tool object carries it.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// A tool's `execution.taskSupport`, from its JSON as the server wrote it.
fn task_support_of(tool: &RawValue) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Execution {
        task_support: Option<String>,
    }
    #[derive(Deserialize)]
    struct WithExecution {
        execution: Option<Execution>,
    }
    serde_json::from_str::<WithExecution>(tool.get())
        .ok()?
        .execution?
        .task_support
}

impl ToolCatalog {
    /// The catalog of one listing: `listed` is rmcp's typed listing, `wire` the same
    /// listing's tools as the server wrote them, if the transport saw them. A typed tool
    /// is joined with the wire tool at its position when both listings name the same tools
    /// in the same order (they are the same bytes), else with the wire tool of its name;
    /// failing both, it is serialized. Tools `filter` leaves out are dropped here.
    pub(crate) fn build(filter: ToolFilter, listed: Vec<Tool>, wire: Option<Vec<Box<RawValue>>>) -> Self {
        let wire = wire.unwrap_or_default();
        let wire_names: Vec<Option<String>> = wire
            .iter()
            .map(|tool| {
                serde_json::from_str::<Named<'_>>(tool.get())
                    .ok()
                    .map(|named| named.name.into_owned())
            })
            .collect();
        let aligned = wire.len() == listed.len()
            && listed
                .iter()
                .zip(&wire_names)
                .all(|(typed, name)| name.as_deref() == Some(typed.name.as_ref()));
        let mut wire: Vec<Option<Box<RawValue>>> = wire.into_iter().map(Some).collect();
        // Not aligned (the wire listing is not this one, or one of them lost a tool): by name,
        // the last wire tool of a name winning.
        let by_name: HashMap<&str, usize> = if aligned {
            HashMap::new()
        } else {
            wire_names
                .iter()
                .enumerate()
                .filter_map(|(index, name)| Some((name.as_deref()?, index)))
                .collect()
        };
        let tools = listed
            .into_iter()
            .enumerate()
            .filter(|(_, typed)| filter.allows(&typed.name))
            .map(|(position, typed)| {
                let seen = if aligned {
                    wire.get_mut(position).and_then(Option::take)
                } else {
                    by_name
                        .get(typed.name.as_ref())
                        .and_then(|&index| wire.get(index))
                        .and_then(|tool| tool.as_ref().map(|tool| tool.to_owned()))
                };
                let json = match seen {
                    Some(raw) => ToolJson::Wire(raw),
                    None => match serde_json::value::to_raw_value(&typed) {
                        Ok(raw) => ToolJson::Typed(raw),
                        Err(error) => ToolJson::Unserializable(error.to_string()),
                    },
                };
                let task_support = match &json {
                    ToolJson::Wire(raw) => task_support_of(raw),
                    ToolJson::Typed(_) | ToolJson::Unserializable(_) => None,
                };
                CatalogTool {
                    typed,
                    json,
                    task_support,
                }
            })
            .collect();
        Self { tools, filter }
    }

    /// How many tools front-ends see.
    pub(crate) fn len(&self) -> usize {
        self.tools.len()
    }

    /// Whether tool `name` may be called: the config lets it through and the server listed it.
    pub(crate) fn check(&self, name: &str) -> Result<(), RouteError> {
        if !self.filter.allows(name) {
            return Err(RouteError::ToolDisabled { tool: name.to_owned() });
        }
        if !self.tools.iter().any(|tool| tool.typed.name == name) {
            return Err(RouteError::UnknownTool { tool: name.to_owned() });
        }
        Ok(())
    }

    /// Tool `name`'s `execution.taskSupport` (MCP 2025-11-25: whether it may, or must, be
    /// called as a task), when the server's own JSON of it was seen (rmcp's model has no
    /// `execution`).
    pub(crate) fn task_support(&self, name: &str) -> Option<&str> {
        let tool = self.tools.iter().find(|tool| tool.typed.name == name)?;
        tool.task_support.as_deref()
    }

    /// Whether the config's filters let tool `name` through (listed or not).
    pub(crate) fn check_allowed(&self, name: &str) -> Result<(), RouteError> {
        if self.filter.allows(name) {
            Ok(())
        } else {
            Err(RouteError::ToolDisabled { tool: name.to_owned() })
        }
    }

    /// The tools, in the server's order, as front-ends get them.
    pub(crate) fn listing(&self) -> Result<Vec<serde_json::Value>, RouteError> {
        self.tools
            .iter()
            .map(|tool| match &tool.json {
                ToolJson::Wire(raw) | ToolJson::Typed(raw) => {
                    serde_json::from_str(raw.get()).map_err(|error| error.to_string())
                }
                ToolJson::Unserializable(why) => Err(why.clone()),
            })
            .map(|json| json.map_err(|why| RouteError::Unserializable { what: "a tool", why }))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(toml: &str) -> ToolFilter {
        let text = format!("[servers.s]\ncommand = \"x\"\n{toml}");
        let config = corral_protocol::config::parse(&text, std::path::Path::new("t.toml")).expect("valid");
        ToolFilter::of(&config.servers["s"])
    }

    /// A listing as a server wrote it: rmcp's typed tools and the wire tools.
    fn listing(tools: &[&str]) -> (Vec<Tool>, Vec<Box<RawValue>>) {
        let typed = tools
            .iter()
            .map(|tool| serde_json::from_str(tool).expect("a tool rmcp reads"))
            .collect();
        let wire = tools
            .iter()
            .map(|tool| RawValue::from_string((*tool).to_owned()).expect("JSON"))
            .collect();
        (typed, wire)
    }

    fn names(catalog: &ToolCatalog) -> Vec<String> {
        let listing = catalog.listing().expect("serializable");
        listing
            .iter()
            .map(|tool| tool["name"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// The JSON front-ends get for each tool, as text, and whether it is the server's.
    fn json(catalog: &ToolCatalog) -> Vec<(bool, &str)> {
        catalog
            .tools
            .iter()
            .map(|tool| match &tool.json {
                ToolJson::Wire(raw) => (true, raw.get()),
                ToolJson::Typed(raw) => (false, raw.get()),
                ToolJson::Unserializable(why) => panic!("unserializable: {why}"),
            })
            .collect()
    }

    const A: &str = r#"{"name":"a","inputSchema":{"type":"object"},"execution":{"taskSupport":"forbidden"}}"#;
    const B: &str =
        r#"{ "name": "b", "inputSchema": {"type": "object", "z": 1, "a": 2}, "annotations": {"priority": 0.7} }"#;
    const C: &str = r#"{"name":"c","inputSchema":{"type":"object"}}"#;

    #[test]
    fn tool_filters_apply_enabled_then_disabled() {
        let filter = filter("enabled_tools = [\"a\", \"b\"]\ndisabled_tools = [\"b\"]\n");
        assert!(filter.allows("a"));
        assert!(!filter.allows("b"), "disabled wins");
        assert!(!filter.allows("c"), "not in enabled_tools");
        assert!(ToolFilter::default().allows("anything"), "no filter: everything");
    }

    #[test]
    fn filters_are_applied_when_the_catalog_is_built() {
        let (typed, wire) = listing(&[A, B, C]);
        let catalog = ToolCatalog::build(filter("disabled_tools = [\"b\"]\n"), typed, Some(wire));
        assert_eq!(names(&catalog), ["a", "c"]);
        assert_eq!(catalog.len(), 2);
        assert!(catalog.check("a").is_ok());
        assert!(matches!(catalog.check("b"), Err(RouteError::ToolDisabled { tool }) if tool == "b"));
        assert!(matches!(catalog.check("d"), Err(RouteError::UnknownTool { tool }) if tool == "d"));

        let (typed, wire) = listing(&[A, B, C]);
        let only_c = ToolCatalog::build(filter("enabled_tools = [\"c\", \"d\"]\n"), typed, Some(wire));
        assert_eq!(names(&only_c), ["c"]);
        assert!(
            matches!(only_c.check("a"), Err(RouteError::ToolDisabled { .. })),
            "not enabled: disabled, though listed"
        );
        assert!(
            matches!(only_c.check("d"), Err(RouteError::UnknownTool { .. })),
            "enabled but not listed: unknown"
        );
    }

    #[test]
    fn the_servers_json_is_kept_byte_for_byte_in_the_servers_order() {
        let (typed, wire) = listing(&[C, A, B]);
        let catalog = ToolCatalog::build(ToolFilter::default(), typed, Some(wire));
        assert_eq!(json(&catalog), [(true, C), (true, A), (true, B)]);
        let listing = catalog.listing().expect("serializable");
        assert_eq!(
            listing[1]["execution"]["taskSupport"], "forbidden",
            "what rmcp's model drops reaches front-ends"
        );
        assert_eq!(listing[2]["annotations"]["priority"], 0.7, "not rmcp's f32");
    }

    #[test]
    fn without_the_servers_bytes_the_typed_tool_is_served() {
        let (typed, _) = listing(&[A, C]);
        let expected: Vec<String> = typed
            .iter()
            .map(|tool| serde_json::to_string(tool).expect("serializable"))
            .collect();
        let catalog = ToolCatalog::build(ToolFilter::default(), typed, None);
        assert_eq!(
            json(&catalog),
            [(false, expected[0].as_str()), (false, expected[1].as_str())]
        );
        assert!(
            catalog.listing().expect("serializable")[0].get("execution").is_none(),
            "rmcp's model has no `execution`"
        );
    }

    #[test]
    fn a_wire_listing_that_is_not_this_one_is_joined_by_name_and_the_rest_is_typed() {
        // The wire listing lost `a` and has a tool rmcp's listing does not.
        let (typed, _) = listing(&[A, B, C]);
        let (_, wire) = listing(&[C, r#"{"name":"x","inputSchema":{}}"#, B]);
        let catalog = ToolCatalog::build(ToolFilter::default(), typed, Some(wire));
        assert_eq!(
            names(&catalog),
            ["a", "b", "c"],
            "rmcp's listing decides what is listed, and the order"
        );
        let json = json(&catalog);
        assert!(!json[0].0, "no wire tool named `a`: typed");
        assert_eq!(json[1], (true, B));
        assert_eq!(json[2], (true, C));
    }

    #[test]
    fn tools_of_the_same_name_keep_their_own_json_when_the_listings_align() {
        let first = r#"{"name":"twin","inputSchema":{},"description":"first"}"#;
        let second = r#"{"name":"twin","inputSchema":{},"description":"second"}"#;
        let (typed, wire) = listing(&[first, second]);
        let catalog = ToolCatalog::build(ToolFilter::default(), typed, Some(wire));
        assert_eq!(json(&catalog), [(true, first), (true, second)]);
    }

    #[test]
    fn a_tools_task_support_is_read_from_the_servers_json_only() {
        let (typed, wire) = listing(&[
            r#"{"name":"long","inputSchema":{"type":"object"},"execution":{"taskSupport":"required"}}"#,
            r#"{"name":"short","inputSchema":{"type":"object"}}"#,
        ]);
        let catalog = ToolCatalog::build(ToolFilter::default(), typed.clone(), Some(wire));
        assert_eq!(catalog.task_support("long"), Some("required"));
        assert_eq!(catalog.task_support("short"), None);
        assert_eq!(catalog.task_support("absent"), None);
        let typed_only = ToolCatalog::build(ToolFilter::default(), typed, None);
        assert_eq!(typed_only.task_support("long"), None, "rmcp's model has no execution");
    }

    #[test]
    fn a_name_with_escapes_is_still_matched() {
        let escaped = r#"{"name":"caf\u00e9","inputSchema":{}}"#;
        let (typed, wire) = listing(&[escaped]);
        let catalog = ToolCatalog::build(ToolFilter::default(), typed, Some(wire));
        assert_eq!(json(&catalog), [(true, escaped)]);
        assert!(catalog.check("café").is_ok());
    }
}
