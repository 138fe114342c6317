//! The names an MCP client sees: one namespace for the tools (and, later,
//! prompts) of every server, `server{separator}tool` (`everything__echo`).
//!
//! Pure functions, no state: the same servers and tools give the same names
//! in every run, so a client's saved tool names (permissions, allow-lists)
//! survive a daemon restart.
//!
//! Invariants of [`assign`]:
//! - a name is at most [`MAX_NAME_CHARS`] characters (many clients refuse
//!   longer tool names); a longer one keeps a readable prefix and ends with
//!   `_` and [`HASH_HEX`] hex digits of a SHA-256 of the pair (see
//!   [`hashed`]), so it is still one function of the pair;
//! - names are unique: pairs whose plain names collide (`a__b` + `c` and
//!   `a` + `b__c`) all get the hashed form, whichever order they come in;
//!   a pair listed twice (a server that lists one tool twice) keeps its
//!   first place and the repeat gets no name.

use std::collections::{HashMap, HashSet};

use sha2::{Digest as _, Sha256};

/// The separator between server and tool when nothing else is configured
/// (what mcp-hub and Claude Code users know).
pub(crate) const DEFAULT_SEPARATOR: &str = "__";

/// Longest name given out, in characters: the tool-name limit of many
/// clients (and of the model APIs behind them).
pub(crate) const MAX_NAME_CHARS: usize = 64;

/// Hex digits of the hash that ends a shortened or disambiguated name.
pub(crate) const HASH_HEX: usize = 8;

/// `server{separator}tool`, shortened to [`MAX_NAME_CHARS`] if longer.
pub(crate) fn plain(server: &str, tool: &str, separator: &str) -> String {
    let full = format!("{server}{separator}{tool}");
    if full.chars().count() <= MAX_NAME_CHARS {
        full
    } else {
        hashed(server, tool, separator)
    }
}

/// The hashed form of `server{separator}tool`: as many of its first
/// characters as fit in [`MAX_NAME_CHARS`] with `_` and the hash after them.
///
/// The hash is of `server`, a NUL byte and `tool` (not of the joined name,
/// which two pairs can share: `a__b` + `c` and `a` + `b__c`); server names
/// have no NUL, so every pair has its own.
pub(crate) fn hashed(server: &str, tool: &str, separator: &str) -> String {
    let full = format!("{server}{separator}{tool}");
    let mut hasher = Sha256::new();
    hasher.update(server.as_bytes());
    hasher.update([0]);
    hasher.update(tool.as_bytes());
    let digest = hasher.finalize();
    let hash: String = digest
        .iter()
        .take(HASH_HEX / 2)
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let prefix: String = full.chars().take(MAX_NAME_CHARS - 1 - HASH_HEX).collect();
    format!("{prefix}_{hash}")
}

/// The names of `pairs` (server, tool), in their order: `None` for a
/// repeated pair (see the module's invariants).
pub(crate) fn assign(pairs: &[(String, String)], separator: &str) -> Vec<Option<String>> {
    let plain_names: Vec<String> = pairs
        .iter()
        .map(|(server, tool)| plain(server, tool, separator))
        .collect();
    // How many distinct pairs want each plain name.
    let mut wanted: HashMap<&str, Vec<(&str, &str)>> = HashMap::new();
    for ((server, tool), name) in pairs.iter().zip(&plain_names) {
        let claimants = wanted.entry(name.as_str()).or_default();
        if !claimants.contains(&(server.as_str(), tool.as_str())) {
            claimants.push((server.as_str(), tool.as_str()));
        }
    }
    let mut given: HashSet<String> = HashSet::new();
    pairs
        .iter()
        .zip(&plain_names)
        .map(|((server, tool), name)| {
            let name = if wanted.get(name.as_str()).is_some_and(|claimants| claimants.len() > 1) {
                hashed(server, tool, separator)
            } else {
                name.clone()
            };
            given.insert(name.clone()).then_some(name)
        })
        .collect()
}

/// Which server a `name` not found in a listing would belong to: the
/// longest of `servers` that `name` starts with, followed by `separator`,
/// and the rest as the tool's name. For a call of a tool whose server is not
/// ready (its tools are not listed, so its names are not known), to say why.
pub(crate) fn split<'a>(name: &'a str, servers: &[String], separator: &str) -> Option<(String, &'a str)> {
    servers
        .iter()
        .filter_map(|server| {
            let tool = name.strip_prefix(server.as_str())?.strip_prefix(separator)?;
            (!tool.is_empty()).then_some((server, tool))
        })
        .max_by_key(|(server, _)| server.len())
        .map(|(server, tool)| (server.clone(), tool))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(server, tool)| ((*server).to_owned(), (*tool).to_owned()))
            .collect()
    }

    #[test]
    fn plain_names_join_server_and_tool() {
        let cases: &[(&str, &str, &str, &str)] = &[
            ("everything", "echo", "__", "everything__echo"),
            ("corral", "list_servers", "__", "corral__list_servers"),
            ("my-server", "get.thing", "__", "my-server__get.thing"),
            ("everything", "echo", ".", "everything.echo"),
            ("everything", "echo", "-", "everything-echo"),
        ];
        for (server, tool, separator, expected) in cases {
            assert_eq!(plain(server, tool, separator), *expected, "{server} {tool} {separator}");
        }
    }

    #[test]
    fn names_up_to_64_characters_are_kept_and_longer_ones_shortened_with_a_hash() {
        // 10 + 2 + 52 = 64: kept as it is.
        let server = "s".repeat(10);
        let at_limit = "t".repeat(52);
        assert_eq!(plain(&server, &at_limit, "__").chars().count(), 64);
        assert_eq!(plain(&server, &at_limit, "__"), format!("{server}__{at_limit}"));

        // One more: shortened to exactly 64, readable prefix, `_`, 8 hex digits.
        let over = "t".repeat(53);
        let short = plain(&server, &over, "__");
        assert_eq!(short.chars().count(), MAX_NAME_CHARS, "{short}");
        let (prefix, hash) = short.rsplit_once('_').expect("a hash suffix");
        assert_eq!(prefix, format!("{server}__{}", "t".repeat(43)));
        assert_eq!(hash.len(), HASH_HEX);
        assert!(
            hash.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{hash}"
        );

        // Very long on both sides: still 64.
        let long = plain(&"a".repeat(200), &"b".repeat(300), "__");
        assert_eq!(long.chars().count(), MAX_NAME_CHARS);
        assert!(long.starts_with(&"a".repeat(55)), "{long}");
    }

    #[test]
    fn shortened_names_are_stable_and_differ_for_different_tools() {
        let server = "a-server-with-a-rather-long-name";
        let tool_a = "a_tool_with_an_even_longer_name_that_goes_on_and_on_1";
        let tool_b = "a_tool_with_an_even_longer_name_that_goes_on_and_on_2";
        let first = plain(server, tool_a, "__");
        assert_eq!(first, plain(server, tool_a, "__"), "the same pair, the same name");
        assert_ne!(first, plain(server, tool_b, "__"), "same prefix, different hash");
        // Pinned: the name is a function of the pair alone, across runs and
        // versions; changing the hash renames every shortened tool.
        // `printf 'x\0y' | sha256sum | cut -c1-8`
        assert_eq!(hashed("x", "y", "__"), "x__y_ce3890a8");
    }

    #[test]
    fn non_ascii_names_are_cut_at_character_boundaries() {
        let tool = "é".repeat(100);
        let short = plain("s", &tool, "__");
        assert_eq!(short.chars().count(), MAX_NAME_CHARS);
        assert!(short.starts_with("s__é"), "{short}");
    }

    #[test]
    fn colliding_plain_names_all_get_hashed_names_whatever_the_order() {
        let forward = assign(&pairs(&[("a__b", "c"), ("a", "b__c"), ("z", "t")]), "__");
        let backward = assign(&pairs(&[("z", "t"), ("a", "b__c"), ("a__b", "c")]), "__");
        let one = forward[0].clone().expect("named");
        let two = forward[1].clone().expect("named");
        assert_ne!(one, two, "unique");
        assert!(
            one.starts_with("a__b__c_") && two.starts_with("a__b__c_"),
            "{one} {two}"
        );
        assert_eq!(forward[2].as_deref(), Some("z__t"), "others keep their plain names");
        assert_eq!(backward[2].as_deref(), Some(one.as_str()), "order does not matter");
        assert_eq!(backward[1].as_deref(), Some(two.as_str()));
    }

    #[test]
    fn a_pair_listed_twice_is_named_once() {
        let names = assign(&pairs(&[("s", "t"), ("s", "u"), ("s", "t")]), "__");
        assert_eq!(names, vec![Some("s__t".to_owned()), Some("s__u".to_owned()), None]);
    }

    #[test]
    fn the_separator_is_a_parameter() {
        let names = assign(&pairs(&[("fs", "read"), ("fs", "write")]), ".");
        assert_eq!(names, vec![Some("fs.read".to_owned()), Some("fs.write".to_owned())]);
    }

    #[test]
    fn split_finds_the_longest_server_prefix() {
        let servers = vec!["a".to_owned(), "a__b".to_owned(), "github".to_owned()];
        assert_eq!(
            split("github__create_issue", &servers, "__"),
            Some(("github".to_owned(), "create_issue"))
        );
        assert_eq!(split("a__b__c", &servers, "__"), Some(("a__b".to_owned(), "c")));
        assert_eq!(split("a__x", &servers, "__"), Some(("a".to_owned(), "x")));
        assert_eq!(split("github__", &servers, "__"), None, "no tool name");
        assert_eq!(split("gitlab__x", &servers, "__"), None);
        assert_eq!(split("github.x", &servers, "__"), None);
        assert_eq!(split("github.x", &servers, "."), Some(("github".to_owned(), "x")));
    }
}
