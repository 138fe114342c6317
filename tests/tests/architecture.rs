//! Architecture invariants of the workspace, checked with cargo itself:
//! `corral-protocol` has no async runtime and no MCP SDK, and nothing depends
//! on the daemon. And, by reading `daemon/src` (the rust-analyzer tidy
//! style), the rules of corrald's rooms: which room may speak MCP, no new
//! process-wide mutable statics, and no new cycle between rooms.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use corral_tests::{run_command, workspace_root};
use serde_json::Value;

/// The cargo running these tests (`$CARGO`), else the one that built them.
fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    command
}

/// The crates `package` pulls in through normal (not dev or build) edges, one `name version` a line.
fn normal_tree(package: &str) -> Vec<String> {
    let mut tree = cargo();
    tree.args([
        "tree",
        "-e",
        "normal",
        "-p",
        package,
        "--prefix",
        "none",
        "--locked",
        "--offline",
    ]);
    let output = run_command(&mut tree, Duration::from_secs(60));
    assert!(output.status.success(), "cargo tree failed: {}", output.stderr);
    let lines: Vec<String> = output.stdout.lines().map(str::to_owned).collect();
    assert!(
        lines
            .first()
            .is_some_and(|first| first.starts_with(&format!("{package} "))),
        "cargo tree printed {package}'s tree:\n{}",
        output.stdout
    );
    lines
}

fn assert_not_in_tree(package: &str, forbidden: &[&str]) {
    let lines = normal_tree(package);
    for name in forbidden {
        let offending: Vec<&String> = lines
            .iter()
            .filter(|line| line.starts_with(&format!("{name} ")))
            .collect();
        assert!(
            offending.is_empty(),
            "{package} must not depend on {name} (normal edges): {offending:?}"
        );
    }
}

#[test]
fn the_protocol_crate_has_no_tokio_and_no_rmcp() {
    assert_not_in_tree("corral-protocol", &["tokio", "rmcp"]);
}

/// The CLI is its own crate so that a Rust front-end on the SDK compiles none of what only the
/// command line needs, and the SDK speaks JSON-RPC with the protocol crate's envelope, not a library.
#[test]
fn the_client_sdk_has_no_cli_dependencies_and_no_json_rpc_library() {
    assert_not_in_tree("corral-client", &["clap", "anyhow", "which", "jsonrpsee", "rmcp"]);
}

#[test]
fn no_workspace_package_depends_on_the_daemon() {
    let mut metadata = cargo();
    metadata.args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--locked",
        "--offline",
    ]);
    let output = run_command(&mut metadata, Duration::from_secs(60));
    assert!(output.status.success(), "cargo metadata failed: {}", output.stderr);
    let metadata: Value = serde_json::from_str(&output.stdout).expect("cargo metadata prints JSON");
    let packages = metadata["packages"].as_array().expect("packages");
    let names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
    assert!(
        names.contains(&"corrald"),
        "the daemon is a workspace member: {names:?}"
    );
    assert!(names.contains(&"corral-protocol"), "{names:?}");
    for package in packages {
        let name = package["name"].as_str().unwrap_or("?");
        let dependencies = package["dependencies"].as_array().expect("dependencies");
        for dependency in dependencies {
            assert_ne!(
                dependency["name"], "corrald",
                "{name} depends on corrald ({} dependency); front-ends and tests must use the protocol or the client SDK",
                dependency["kind"]
            );
        }
    }
}

/// Every `.rs` file under `daemon/src`, as (path relative to `daemon/src`
/// with `/` separators, text), sorted by path.
fn daemon_sources() -> Vec<(String, String)> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<(String, String)>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|error| panic!("cannot read {}: {error}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(&path, base, out);
            } else if path.extension().is_some_and(|extension| extension == "rs") {
                let relative = path.strip_prefix(base).expect("below daemon/src");
                let relative = relative
                    .components()
                    .map(|component| component.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
                out.push((relative, text));
            }
        }
    }
    let base = workspace_root().join("daemon").join("src");
    let mut sources = Vec::new();
    walk(&base, &base, &mut sources);
    sources.sort();
    assert!(
        sources.iter().any(|(path, _)| path == "lib.rs"),
        "found the daemon's sources in {}",
        base.display()
    );
    sources
}

/// The lines of a file that are code: comments (plain and doc) left out, so
/// a comment naming a module is not a dependency on it.
fn code_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(index, line)| (index + 1, line))
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
}

/// The room a file belongs to: its top-level folder, or its top-level
/// module file without `.rs`. `lib.rs` (the module map) and `main.rs` are no
/// room; `boot.rs`, which names every room it wires, is one like the others.
fn room_of(path: &str) -> Option<&str> {
    match path.split_once('/') {
        Some((folder, _)) => Some(folder),
        None if path == "lib.rs" || path == "main.rs" => None,
        None => path.strip_suffix(".rs"),
    }
}

/// Rooms that speak protocol only and never touch the MCP SDK: the front-end
/// API sends a request for a server through `mcp::forward` and gets plain
/// data back; the hub is the way out to front-ends.
const ROOMS_WITHOUT_RMCP: &[&str] = &["api", "hub"];

#[test]
fn rooms_that_speak_protocol_only_never_use_rmcp() {
    let mut offending = Vec::new();
    for (path, text) in daemon_sources() {
        if !room_of(&path).is_some_and(|room| ROOMS_WITHOUT_RMCP.contains(&room)) {
            continue;
        }
        for (number, line) in code_lines(&text) {
            if line.contains("rmcp::") || line.contains("use rmcp") {
                offending.push(format!("daemon/src/{path}:{number}: {}", line.trim()));
            }
        }
    }
    assert!(
        offending.is_empty(),
        "the rooms {ROOMS_WITHOUT_RMCP:?} speak protocol types only; requests to servers go through mcp::forward, rmcp stays in mcp/ and the rooms that run sessions:\n{}",
        offending.join("\n")
    );
}

/// The rooms `api/` never names: a server's task, how it is reached and its
/// processes are behind the supervisor's handle and `mcp::{route, forward}`.
const ROOMS_API_NEVER_NAMES: &[&str] = &["server", "transport", "process"];

/// Edges from `api/` to [`ROOMS_API_NEVER_NAMES`] that are still there, each
/// with the reason and what removes it. The list only shrinks: a new edge
/// fails the test, and so does an entry whose edge is gone. Empty since
/// `daemon/status` reads the children record's error from a `watch` receiver
/// handed over at boot (#14): api never names server, transport or process.
const ALLOWED_API_EDGES: &[(&str, &str)] = &[];

/// The rooms a line of code names as `crate::room` or in `crate::{room, …}`
/// (a group broken over several lines is read from its first line only).
fn named_rooms(line: &str) -> Vec<String> {
    let identifier = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut names = Vec::new();
    for (start, _) in line.match_indices("crate::") {
        let rest = &line[start + "crate::".len()..];
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or(group);
                names.extend(group.split(',').map(identifier));
            }
            None => names.push(identifier(rest)),
        }
    }
    names.retain(|name| !name.is_empty());
    names
}

#[test]
fn the_api_never_names_server_transport_or_process() {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, text) in daemon_sources() {
        if room_of(&path) != Some("api") {
            continue;
        }
        for (number, line) in code_lines(&text) {
            for room in named_rooms(line) {
                if ROOMS_API_NEVER_NAMES.contains(&room.as_str()) {
                    found
                        .entry(room)
                        .or_default()
                        .push(format!("daemon/src/{path}:{number}: {}", line.trim()));
                }
            }
        }
    }
    let allowed: BTreeSet<&str> = ALLOWED_API_EDGES.iter().map(|(room, _)| *room).collect();
    let new: Vec<&str> = found
        .iter()
        .filter(|(room, _)| !allowed.contains(room.as_str()))
        .flat_map(|(_, places)| places.iter().map(String::as_str))
        .collect();
    assert!(
        new.is_empty(),
        "api/ reaches servers through the supervisor's handle and mcp::{{route, forward}}, never {ROOMS_API_NEVER_NAMES:?}:\n{}",
        new.join("\n")
    );
    let gone: Vec<&&str> = allowed.iter().filter(|room| !found.contains_key(**room)).collect();
    assert!(
        gone.is_empty(),
        "api/ no longer names these rooms: remove them from ALLOWED_API_EDGES: {gone:?}"
    );
}

#[test]
fn named_rooms_reads_paths_and_groups() {
    assert_eq!(named_rooms("use crate::server::tool_allowed;"), ["server"]);
    assert_eq!(
        named_rooms("use crate::{hub::Hub, process};  let x = crate::transport::http::f();"),
        ["hub", "process", "transport"]
    );
    assert!(named_rooms("let crate_name = 1;").is_empty());
}

/// Types that make a `static` mutable without `static mut`.
const INTERIOR_MUTABILITY: &[&str] = &[
    "Atomic", "Mutex", "RwLock", "OnceLock", "LazyLock", "OnceCell", "Cell<", "Lazy<", "Condvar",
];

#[test]
fn no_new_static_with_interior_mutability_in_the_daemon() {
    let mut found = BTreeSet::new();
    for (path, text) in daemon_sources() {
        let lines: Vec<(usize, &str)> = code_lines(&text).collect();
        for (position, (_, line)) in lines.iter().enumerate() {
            let trimmed = line.trim_start();
            let declaration = ["static ", "pub static ", "pub(crate) static ", "pub(super) static "]
                .iter()
                .find_map(|prefix| trimmed.strip_prefix(prefix));
            let Some(declaration) = declaration else { continue };
            // The type runs to the `=`, which may be on a later line.
            let mut statement = declaration.to_owned();
            for (_, next) in lines.iter().skip(position + 1) {
                if statement.contains('=') {
                    break;
                }
                statement.push_str(next.trim());
            }
            let name = statement
                .trim_start_matches("mut ")
                .split(|c: char| c == ':' || c.is_whitespace())
                .next()
                .unwrap_or("?")
                .to_owned();
            let mutable = statement.starts_with("mut ")
                || INTERIOR_MUTABILITY
                    .iter()
                    .any(|kind| statement.split('=').next().unwrap_or("").contains(kind));
            if mutable {
                found.insert((path.clone(), name));
            }
        }
    }
    // None at all (#14 step 3 removed the last ones).
    assert!(
        found.is_empty(),
        "process-wide mutable state belongs to one owner with a handle passed from boot, not a static: {found:?}"
    );
}

/// Cycles between rooms that are still there, each with the step of #14
/// that breaks it. Written as the rooms of one strongly connected component.
/// The list only shrinks: a new cycle fails the test, and so does an entry
/// that is no longer a cycle. Empty since the built-in server is injected at
/// boot (step 4): the rooms form a DAG.
const KNOWN_ROOM_CYCLES: &[(&[&str], &str)] = &[];

/// The built-in server is injected at boot: the supervisor and the server
/// task know it only as a `transport::in_process::InProcessServer`, so only
/// boot (`boot.rs`) names `builtin`.
#[test]
fn only_boot_names_the_built_in_server() {
    let mut offending = Vec::new();
    for (path, text) in daemon_sources() {
        if ["boot.rs", "builtin.rs"].contains(&path.as_str()) {
            continue;
        }
        for (number, line) in code_lines(&text) {
            if line.contains("crate::builtin") {
                offending.push(format!("daemon/src/{path}:{number}: {}", line.trim()));
            }
        }
    }
    assert!(
        offending.is_empty(),
        "only boot knows the built-in server; everyone else takes an InProcessServer:\n{}",
        offending.join("\n")
    );
}

/// `room → rooms it names as crate::room` in code (not comments).
fn room_dependencies() -> BTreeMap<String, BTreeSet<String>> {
    let sources = daemon_sources();
    let rooms: BTreeSet<String> = sources
        .iter()
        .filter_map(|(path, _)| room_of(path))
        .map(str::to_owned)
        .collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> =
        rooms.iter().map(|room| (room.clone(), BTreeSet::new())).collect();
    for (path, text) in &sources {
        let Some(room) = room_of(path) else { continue };
        for (_, line) in code_lines(text) {
            for target in named_rooms(line) {
                if target != room && rooms.contains(&target) {
                    edges.get_mut(room).expect("every room has an entry").insert(target);
                }
            }
        }
    }
    edges
}

/// The strongly connected components with more than one room (Tarjan).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> BTreeSet<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: BTreeSet<Vec<String>>,
    }
    fn visit<'a>(state: &mut State<'a>, node: &'a str) {
        let number = state.index.len();
        state.index.insert(node, number);
        state.low.insert(node, number);
        state.stack.push(node);
        state.on_stack.insert(node);
        let edges = state.edges;
        for next in &edges[node] {
            let next = next.as_str();
            if !state.index.contains_key(next) {
                visit(state, next);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            loop {
                let member = state.stack.pop().expect("the node is on the stack");
                state.on_stack.remove(member);
                component.push(member.to_owned());
                if member == node {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                state.found.insert(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: BTreeSet::new(),
    };
    for node in edges.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.found
}

#[test]
fn the_rooms_of_the_daemon_form_no_new_cycle() {
    let edges = room_dependencies();
    for room in ["api", "auth", "config", "hub", "mcp", "process", "service", "transport"] {
        assert!(
            edges.contains_key(room),
            "daemon/src has the room {room}: {:?}",
            edges.keys()
        );
    }
    let found = cycles(&edges);
    let known: BTreeSet<Vec<String>> = KNOWN_ROOM_CYCLES
        .iter()
        .map(|(rooms, _)| rooms.iter().map(|room| (*room).to_owned()).collect())
        .collect();
    let new: Vec<_> = found.difference(&known).collect();
    assert!(
        new.is_empty(),
        "rooms that depend on each other (each room may depend only on rooms below it): {new:?}\ndependencies: {edges:#?}"
    );
    let gone: Vec<_> = known.difference(&found).collect();
    assert!(
        gone.is_empty(),
        "these cycles are broken: remove them from KNOWN_ROOM_CYCLES: {gone:?}"
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle_and_only_a_cycle() {
    let edges: BTreeMap<String, BTreeSet<String>> = [("a", &["b"][..]), ("b", &["a", "c"][..]), ("c", &[][..])]
        .into_iter()
        .map(|(room, to)| (room.to_owned(), to.iter().map(|t| (*t).to_owned()).collect()))
        .collect();
    let found = cycles(&edges);
    assert_eq!(found, BTreeSet::from([vec!["a".to_owned(), "b".to_owned()]]));
}
