//! What a reloaded config file means for the registry, decided apart from
//! doing it. [`plan`] is a pure function: from the registry's facts (each
//! server's name, entry and origin; the changed entries waiting for their old
//! server to go; the names still being torn down) and the new [`Config`] it
//! returns a [`Plan`], plain data that the actor carries out
//! (`SupervisorActor::apply_config`) and whose [`ConfigDiff`] is what
//! `config/reloaded` reports.
//!
//! Invariants of every plan:
//! - only config servers are touched: a session server or the built-in that
//!   holds a name the file also uses stays, and the file's entry is refused
//!   with a warning naming who holds the name;
//! - an unchanged entry is kept whatever its server's status (a reload
//!   decides by entry, not by state: a server the user stopped stays
//!   stopped), so its task, its processes and its in-flight calls are not
//!   touched;
//! - a name never runs twice at once: a changed entry, or a new entry whose
//!   name is still being torn down, starts only once the old server is gone;
//! - every name is in at most one list of the plan, and every list (the
//!   diff's too) is in name order.

use std::collections::{BTreeMap, BTreeSet};

use corral_protocol::ServerOrigin;
use corral_protocol::config::{Config, ServerConfig};

/// What applying a reloaded config did to the config servers. Names are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// New entries: started (if enabled).
    pub added: Vec<String>,
    /// Entries gone: stopped and removed.
    pub removed: Vec<String>,
    /// Entries that changed: stopped, then started with the new entry.
    pub changed: Vec<String>,
    /// Entries that could not be applied, one sentence each naming the server.
    pub warnings: Vec<String>,
}

/// What the plan needs to know of one server in the registry.
#[derive(Debug, Clone, Copy)]
pub(super) struct Entry<'a> {
    pub(super) config: &'a ServerConfig,
    pub(super) origin: ServerOrigin,
}

/// The registry as a reload finds it.
#[derive(Debug)]
pub(super) struct Current<'a> {
    /// Every server by name: config, session and built-in ones.
    pub(super) servers: BTreeMap<&'a str, Entry<'a>>,
    /// Config entries to start once the server of the same name is gone.
    pub(super) pending_starts: &'a BTreeMap<String, ServerConfig>,
    /// Names of removed servers whose teardown is still running.
    pub(super) removing: &'a BTreeSet<String>,
}

/// What to do about a reloaded config; every list is in name order.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Plan {
    /// Names the file no longer has: the config server of that name is
    /// stopped and removed, and a start waiting for that name is dropped.
    pub(super) remove: Vec<String>,
    /// New entries whose name is free: start now (a disabled one gets its
    /// task, which stays `stopped`).
    pub(super) start: Vec<ServerConfig>,
    /// Entries to start once the server of the same name is gone: new ones
    /// whose name is still being torn down, and changed ones that were
    /// already waiting (the newest entry replaces the waiting one).
    pub(super) start_after_teardown: Vec<ServerConfig>,
    /// Running config servers whose entry changed: stop them in place (still
    /// listed, `stopped`), then replace each with its new entry once its old
    /// process tree is gone.
    pub(super) restart: Vec<ServerConfig>,
    /// Entries the same as before: not touched.
    pub(super) keep: Vec<String>,
    /// File entries not applied: a server of another origin holds the name.
    pub(super) refused: Vec<NameTaken>,
    /// What the reload reports.
    pub(super) diff: ConfigDiff,
}

/// A file entry whose name a session server or the built-in holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct NameTaken {
    pub(super) name: String,
    pub(super) holder: ServerOrigin,
}

impl NameTaken {
    /// Who holds the name, and how the file's entry can get it.
    pub(super) fn holder_text(&self) -> &'static str {
        match self.holder {
            ServerOrigin::BuiltIn => "the built-in server; restart corrald to replace it",
            _ => {
                "a server a front-end added; once that one is removed (or its connection closes), \
                 `corral config reload` starts the file's entry"
            }
        }
    }

    /// The warning `config/reloaded` carries.
    pub(super) fn warning(&self) -> String {
        format!(
            "server `{}` was not started: the name is taken by {}",
            self.name,
            self.holder_text()
        )
    }
}

/// Diff the registry against the `new` config: what to start, stop, restart
/// and keep, and what to report.
pub(super) fn plan(current: &Current<'_>, new: Config) -> Plan {
    let mut plan = Plan::default();
    // Gone from the file: config servers, and starts still waiting (a changed
    // entry whose old server is stopping is both, and one name).
    let config_servers = current
        .servers
        .iter()
        .filter(|(_, entry)| entry.origin == ServerOrigin::Config)
        .map(|(name, _)| *name);
    let gone: BTreeSet<&str> = config_servers
        .chain(current.pending_starts.keys().map(String::as_str))
        .filter(|name| !new.servers.contains_key(*name))
        .collect();
    plan.remove = gone.into_iter().map(str::to_owned).collect();
    plan.diff.removed.clone_from(&plan.remove);

    for (name, entry) in new.servers {
        if let Some(waiting) = current.pending_starts.get(&name) {
            if *waiting == entry {
                plan.keep.push(name);
            } else {
                plan.start_after_teardown.push(entry);
                plan.diff.changed.push(name);
            }
            continue;
        }
        match current.servers.get(name.as_str()) {
            Some(running) if running.origin == ServerOrigin::Config => {
                if *running.config == entry {
                    plan.keep.push(name);
                } else {
                    plan.restart.push(entry);
                    plan.diff.changed.push(name);
                }
            }
            Some(other) => {
                let taken = NameTaken {
                    name,
                    holder: other.origin,
                };
                plan.diff.warnings.push(taken.warning());
                plan.refused.push(taken);
            }
            None if current.removing.contains(&name) => {
                plan.start_after_teardown.push(entry);
                plan.diff.added.push(name);
            }
            None => {
                plan.start.push(entry);
                plan.diff.added.push(name);
            }
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    //! The plan as a table: each case is a registry, a new file and the plan
    //! written out, one line per non-empty list (`name=command` for an entry).

    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;

    use corral_protocol::ServerOrigin;
    use corral_protocol::config::{Config, ServerConfig, TransportConfig};

    use super::{Current, Entry, NameTaken, Plan, plan};

    /// One row: the registry before the reload, the file, and the plan.
    struct Case {
        what: &'static str,
        /// Config servers in the registry (TOML, `[servers.NAME]` tables).
        running: &'static str,
        /// Session servers in the registry, by name.
        sessions: &'static [&'static str],
        /// The built-in server's name, if it runs.
        builtin: Option<&'static str>,
        /// Changed entries waiting for their old server to go (TOML).
        pending: &'static str,
        /// Names still being torn down.
        removing: &'static [&'static str],
        /// The reloaded file (TOML).
        file: &'static str,
        /// The plan, as [`render`] writes it.
        plan: &'static str,
    }

    const NOTHING: Case = Case {
        what: "",
        running: "",
        sessions: &[],
        builtin: None,
        pending: "",
        removing: &[],
        file: "",
        plan: "",
    };

    fn servers(toml: &str) -> BTreeMap<String, ServerConfig> {
        corral_protocol::config::parse(toml, Path::new("case.toml"))
            .unwrap_or_else(|error| panic!("a valid TOML case: {error}\n{toml}"))
            .servers
    }

    fn config(toml: &str) -> Config {
        corral_protocol::config::parse(toml, Path::new("case.toml"))
            .unwrap_or_else(|error| panic!("a valid TOML case: {error}\n{toml}"))
    }

    /// A session server's or the built-in's entry.
    fn other_entry(name: &str) -> ServerConfig {
        corral_protocol::config::parse_server_json(name, &serde_json::json!({ "command": "other" }))
            .unwrap_or_else(|problems| panic!("a valid entry for {name}: {problems:?}"))
    }

    fn describe(entry: &ServerConfig) -> String {
        let what = match &entry.transport {
            TransportConfig::Stdio(stdio) => stdio.command.clone(),
            TransportConfig::StreamableHttp(http) => http.url.clone(),
        };
        let disabled = if entry.enabled { "" } else { ",disabled" };
        format!("{}={what}{disabled}", entry.name)
    }

    fn origin(origin: ServerOrigin) -> &'static str {
        match origin {
            ServerOrigin::Config => "config",
            ServerOrigin::Session => "session",
            ServerOrigin::BuiltIn => "built-in",
            _ => "unknown",
        }
    }

    /// The plan, one line per non-empty list.
    fn render(plan: &Plan) -> String {
        let entries = |entries: &[ServerConfig]| entries.iter().map(describe).collect::<Vec<_>>();
        let lines: [(&str, Vec<String>); 9] = [
            ("remove", plan.remove.clone()),
            ("start", entries(&plan.start)),
            ("start after teardown", entries(&plan.start_after_teardown)),
            ("restart", entries(&plan.restart)),
            ("keep", plan.keep.clone()),
            (
                "refused",
                plan.refused
                    .iter()
                    .map(|taken| format!("{}({})", taken.name, origin(taken.holder)))
                    .collect(),
            ),
            ("added", plan.diff.added.clone()),
            ("removed", plan.diff.removed.clone()),
            ("changed", plan.diff.changed.clone()),
        ];
        lines
            .into_iter()
            .filter(|(_, names)| !names.is_empty())
            .map(|(list, names)| format!("{list}: {}", names.join(" ")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `text` without indentation and blank lines.
    fn trimmed(text: &str) -> String {
        text.lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn run(case: &Case) -> Plan {
        let running = servers(case.running);
        let others: Vec<(ServerConfig, ServerOrigin)> = case
            .sessions
            .iter()
            .map(|name| (other_entry(name), ServerOrigin::Session))
            .chain(case.builtin.map(|name| (other_entry(name), ServerOrigin::BuiltIn)))
            .collect();
        let mut registry = BTreeMap::new();
        for (name, config) in &running {
            registry.insert(
                name.as_str(),
                Entry {
                    config,
                    origin: ServerOrigin::Config,
                },
            );
        }
        for (config, origin) in &others {
            let previous = registry.insert(
                config.name.as_str(),
                Entry {
                    config,
                    origin: *origin,
                },
            );
            assert!(previous.is_none(), "{}: one server per name in the registry", case.what);
        }
        let pending = servers(case.pending);
        let removing: BTreeSet<String> = case.removing.iter().map(|name| (*name).to_owned()).collect();
        let current = Current {
            servers: registry,
            pending_starts: &pending,
            removing: &removing,
        };
        plan(&current, config(case.file))
    }

    /// What holds for every plan, whatever the case.
    fn check_invariants(case: &Case, plan: &Plan) {
        let mut names: Vec<&str> = plan.remove.iter().map(String::as_str).collect();
        for entries in [&plan.start, &plan.start_after_teardown, &plan.restart] {
            names.extend(entries.iter().map(|entry| entry.name.as_str()));
        }
        names.extend(plan.keep.iter().map(String::as_str));
        names.extend(plan.refused.iter().map(|taken| taken.name.as_str()));
        let unique: BTreeSet<&str> = names.iter().copied().collect();
        assert_eq!(
            unique.len(),
            names.len(),
            "{}: a name in two lists: {names:?}",
            case.what
        );
        for list in [
            &plan.diff.added,
            &plan.diff.removed,
            &plan.diff.changed,
            &plan.keep,
            &plan.remove,
        ] {
            assert!(list.is_sorted(), "{}: not in name order: {list:?}", case.what);
        }
        let warnings: Vec<String> = plan.refused.iter().map(NameTaken::warning).collect();
        assert_eq!(
            plan.diff.warnings, warnings,
            "{}: one warning per refused entry",
            case.what
        );
        for taken in &plan.refused {
            assert_ne!(taken.holder, ServerOrigin::Config, "{}: {taken:?}", case.what);
        }
    }

    const CASES: &[Case] = &[
        Case {
            what: "a new entry is started",
            running: "[servers.old]\ncommand = 'old'",
            file: "[servers.old]\ncommand = 'old'\n[servers.new]\ncommand = 'new'",
            plan: "
                start: new=new
                keep: old
                added: new
            ",
            ..NOTHING
        },
        Case {
            what: "an entry gone from the file is removed",
            running: "[servers.stays]\ncommand = 'stays'\n[servers.goes]\ncommand = 'goes'",
            file: "[servers.stays]\ncommand = 'stays'",
            plan: "
                remove: goes
                keep: stays
                removed: goes
            ",
            ..NOTHING
        },
        Case {
            what: "a changed entry is restarted with its new entry",
            running: "[servers.edited]\ncommand = 'before'\n[servers.same]\ncommand = 'same'",
            file: "[servers.edited]\ncommand = 'after'\n[servers.same]\ncommand = 'same'",
            plan: "
                restart: edited=after
                keep: same
                changed: edited
            ",
            ..NOTHING
        },
        Case {
            what: "any field counts: a new timeout is a change",
            running: "[servers.one]\ncommand = 'one'",
            file: "[servers.one]\ncommand = 'one'\nstartup_timeout_sec = 20",
            plan: "
                restart: one=one
                changed: one
            ",
            ..NOTHING
        },
        Case {
            what: "unchanged entries are kept, and the diff is empty",
            running: "[servers.a]\ncommand = 'a'\n[servers.b]\nurl = 'https://b.example/mcp'",
            file: "[servers.b]\nurl = 'https://b.example/mcp'\n[servers.a]\ncommand = 'a'",
            plan: "keep: a b",
            ..NOTHING
        },
        Case {
            what: "a new disabled entry is started as a task that stays stopped",
            file: "[servers.off]\ncommand = 'off'\nenabled = false",
            plan: "
                start: off=off,disabled
                added: off
            ",
            ..NOTHING
        },
        Case {
            what: "disabling and enabling are changes; an unchanged disabled entry is kept",
            running: "[servers.turned-off]\ncommand = 'x'\n[servers.turned-on]\ncommand = 'y'\nenabled = false\n\
                      [servers.still-off]\ncommand = 'z'\nenabled = false",
            file: "[servers.turned-off]\ncommand = 'x'\nenabled = false\n[servers.turned-on]\ncommand = 'y'\n\
                   [servers.still-off]\ncommand = 'z'\nenabled = false",
            plan: "
                restart: turned-off=x,disabled turned-on=y
                keep: still-off
                changed: turned-off turned-on
            ",
            ..NOTHING
        },
        Case {
            what: "a file entry named like a session server is refused; the session server stays",
            sessions: &["shared"],
            file: "[servers.shared]\ncommand = 'file'",
            plan: "refused: shared(session)",
            ..NOTHING
        },
        Case {
            what: "a file entry named like the built-in is refused; the built-in stays",
            builtin: Some("corral"),
            file: "[servers.corral]\ncommand = 'file'",
            plan: "refused: corral(built-in)",
            ..NOTHING
        },
        Case {
            what: "a file without servers removes every config server, waiting starts too, and nothing else",
            running: "[servers.a]\ncommand = 'a'\n[servers.b]\ncommand = 'b'",
            sessions: &["session"],
            builtin: Some("corral"),
            pending: "[servers.b]\ncommand = 'b2'\n[servers.c]\ncommand = 'c'",
            removing: &["c", "d"],
            file: "",
            plan: "
                remove: a b c
                removed: a b c
            ",
        },
        Case {
            what: "a new entry whose name is still being torn down starts after the teardown",
            removing: &["late"],
            file: "[servers.late]\ncommand = 'late'",
            plan: "
                start after teardown: late=late
                added: late
            ",
            ..NOTHING
        },
        Case {
            what: "an entry changed again while its old server stops: the newest entry waits instead",
            running: "[servers.slow]\ncommand = 'v1'",
            pending: "[servers.slow]\ncommand = 'v2'",
            file: "[servers.slow]\ncommand = 'v3'",
            plan: "
                start after teardown: slow=v3
                changed: slow
            ",
            ..NOTHING
        },
        Case {
            what: "the entry that already waits, reloaded again: nothing to do",
            running: "[servers.slow]\ncommand = 'v1'",
            pending: "[servers.slow]\ncommand = 'v2'",
            file: "[servers.slow]\ncommand = 'v2'",
            plan: "keep: slow",
            ..NOTHING
        },
        Case {
            what: "a changed entry back to what runs while it stops is still a change: the old server is going",
            running: "[servers.slow]\ncommand = 'v1'",
            pending: "[servers.slow]\ncommand = 'v2'",
            file: "[servers.slow]\ncommand = 'v1'",
            plan: "
                start after teardown: slow=v1
                changed: slow
            ",
            ..NOTHING
        },
        Case {
            what: "a waiting entry the file dropped is removed once, with its stopping server",
            running: "[servers.slow]\ncommand = 'v1'",
            pending: "[servers.slow]\ncommand = 'v2'",
            file: "",
            plan: "
                remove: slow
                removed: slow
            ",
            ..NOTHING
        },
        Case {
            what: "the diff lists are in name order, whichever list a name came from",
            running: "[servers.zeta]\ncommand = 'z'\n[servers.mu]\ncommand = 'm'\n[servers.kappa]\ncommand = 'k'\n\
                      [servers.beta]\ncommand = 'b'",
            pending: "[servers.alpha]\ncommand = 'a'",
            removing: &["alpha", "gamma"],
            file: "[servers.kappa]\ncommand = 'k2'\n[servers.beta]\ncommand = 'b2'\n[servers.omega]\ncommand = 'o'\n\
                   [servers.gamma]\ncommand = 'g'\n[servers.delta]\ncommand = 'd'",
            plan: "
                remove: alpha mu zeta
                start: delta=d omega=o
                start after teardown: gamma=g
                restart: beta=b2 kappa=k2
                added: delta gamma omega
                removed: alpha mu zeta
                changed: beta kappa
            ",
            ..NOTHING
        },
    ];

    #[test]
    fn plans() {
        for case in CASES {
            let plan = run(case);
            check_invariants(case, &plan);
            assert_eq!(render(&plan), trimmed(case.plan), "case: {}", case.what);
        }
    }

    #[test]
    fn a_refused_entry_is_reported_in_words_that_say_how_to_get_the_name() {
        let case = Case {
            what: "both holders",
            sessions: &["shared"],
            builtin: Some("corral"),
            file: "[servers.shared]\ncommand = 'file'\n[servers.corral]\ncommand = 'file'",
            ..NOTHING
        };
        assert_eq!(
            run(&case).diff.warnings,
            [
                "server `corral` was not started: the name is taken by the built-in server; restart corrald to \
                 replace it",
                "server `shared` was not started: the name is taken by a server a front-end added; once that one \
                 is removed (or its connection closes), `corral config reload` starts the file's entry",
            ]
        );
    }

    #[test]
    fn the_plan_carries_the_new_entries_whole() {
        let case = Case {
            what: "whole entries",
            running: "[servers.edited]\ncommand = 'x'",
            file: "[servers.edited]\ncommand = 'x'\nargs = ['--new']\n[servers.added]\ncommand = 'y'\nenv = { A = '1' }",
            ..NOTHING
        };
        let file = servers(case.file);
        let plan = run(&case);
        assert_eq!(plan.restart, [file["edited"].clone()]);
        assert_eq!(plan.start, [file["added"].clone()]);
    }
}
