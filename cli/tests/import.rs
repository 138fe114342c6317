//! `corral config import` and `corral mcp install|uninstall`, run as the
//! binary on real files: the table of client configs in `tests/import/` (each
//! with its exact Corral config and notes), writing into an existing config,
//! corrupt files, and install/uninstall round trips for every client.

mod common;

use std::path::{Path, PathBuf};

use common::{Run, corral_command, path_str, run_bounded};

/// Every secret in the cases contains this; it must never be printed.
const SECRET_MARK: &str = "s3cr3t";

/// Run `corral` with `args`, `HOME` set to `home` and no variables that would point it
/// elsewhere; killed after [`WAIT`].
fn corral(args: &[&str], home: &Path) -> Run {
    let mut command = corral_command(args);
    command
        .env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("CODEX_HOME");
    let run = run_bounded(command, args);
    assert!(
        !run.stdout.contains(SECRET_MARK) && !run.stderr.contains(SECRET_MARK),
        "corral {args:?} printed a secret"
    );
    run
}

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("import")
}

/// Every input file under `dir` (recursively), sorted.
fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read the cases") {
            let path = entry.expect("a directory entry").path();
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or_default();
            if path.is_dir() {
                pending.push(path);
            } else if !name.ends_with(".expected.toml") && !name.ends_with(".expected.txt") && name != "README.md" {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Compare `actual` with the file, or write it there under `CORRAL_UPDATE_SNAPSHOTS`.
fn check_snapshot(expected_path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("CORRAL_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(expected_path, actual).expect("write the snapshot");
        return;
    }
    let expected = std::fs::read_to_string(expected_path).unwrap_or_default();
    if expected != actual {
        failures.push(format!(
            "{} differs\n--- expected\n{expected}\n--- actual\n{actual}",
            expected_path.display()
        ));
    }
}

#[test]
fn every_client_case_gives_its_exact_config_and_notes() {
    let cases = cases_dir();
    let mut failures = Vec::new();
    let mut count = 0;
    for client in ["claude-desktop", "claude-code", "codex", "cursor", "vscode", "zed"] {
        let inputs = inputs(&cases.join(client));
        assert!(!inputs.is_empty(), "no cases for {client}");
        for input in inputs {
            count += 1;
            let temp = tempfile::tempdir().expect("tempdir");
            let home = temp.path().join("home");
            std::fs::create_dir(&home).expect("home");
            let config = temp.path().join("config.toml");
            let run = corral(
                &[
                    "config",
                    "import",
                    "--from",
                    client,
                    path_str(&input),
                    "--config",
                    path_str(&config),
                    "--dry-run",
                ],
                &home,
            );
            if run.code != 0 {
                failures.push(format!("{}: exit {}: {}", input.display(), run.code, run.stderr));
                continue;
            }
            let normalize = |text: &str| {
                text.replace(path_str(&cases), "<DIR>")
                    .replace(path_str(&home), "<HOME>")
                    .replace(path_str(&config), "<CONFIG>")
            };
            check_snapshot(
                &with_suffix(&input, ".expected.toml"),
                &normalize(&run.stdout),
                &mut failures,
            );
            check_snapshot(
                &with_suffix(&input, ".expected.txt"),
                &normalize(&run.stderr),
                &mut failures,
            );
            assert!(!config.exists(), "--dry-run wrote {}", config.display());
            // What --dry-run prints is a config the daemon accepts.
            std::fs::write(&config, &run.stdout).expect("write the printed config");
            let check = corral(&["config", "check", path_str(&config)], &home);
            if check.code != 0 {
                failures.push(format!(
                    "{}: the printed config fails the check: {}",
                    input.display(),
                    check.stderr
                ));
            }
        }
    }
    assert!(count >= 10, "only {count} cases");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

const EXISTING_CONFIG: &str = "\
# My Corral servers.
#:schema ./config.schema.json

[servers.filesystem] # the one I had before
command = \"server-filesystem\"   # aligned on purpose
args = [\"/home/ada\"]
";

#[test]
fn import_writes_into_an_existing_config_keeping_its_comments_and_never_overwrites_without_replace() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = temp.path().join("corral").join("config.toml");
    std::fs::create_dir(temp.path().join("corral")).expect("config dir");
    std::fs::write(&config, EXISTING_CONFIG).expect("write config");
    let client = temp.path().join("claude_desktop_config.json");
    std::fs::write(
        &client,
        r#"{"mcpServers": {
            "filesystem": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
            "memory": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-memory"], "env": {"API_TOKEN": "tok-s3cr3t"}}
        }}"#,
    )
    .expect("write client file");
    let import = |extra: &[&str]| {
        let mut args = vec![
            "config",
            "import",
            "--from",
            "claude-desktop",
            path_str(&client),
            "--config",
            path_str(&config),
        ];
        args.extend_from_slice(extra);
        corral(&args, temp.path())
    };

    let run = import(&[]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let config_name = config.display();
    let client_name = client.display();
    assert_eq!(
        run.stdout,
        format!(
            "imported 1 server from {client_name} into {config_name}: memory (stdio)\n\
             not imported: server `filesystem`: `filesystem` is already in {config_name}; `--replace` overwrites it\n\
             set these variables in corrald's environment (the config names them; their values were not copied):\n  \
             API_TOKEN  server `memory`, env.API_TOKEN\n"
        )
    );
    assert_eq!(
        std::fs::read_to_string(&config).expect("read config"),
        format!(
            "{EXISTING_CONFIG}\n[servers.memory]\ncommand = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-memory\"]\nenv_vars = [\"API_TOKEN\"]\n"
        )
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&config).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    // Again: nothing new, nothing written.
    let before = std::fs::read_to_string(&config).expect("read config");
    let again = import(&[]);
    assert_eq!(again.code, 0);
    assert!(
        again
            .stdout
            .starts_with(&format!("nothing to import from {client_name}\n")),
        "{}",
        again.stdout
    );
    assert_eq!(std::fs::read_to_string(&config).expect("read config"), before);

    // --replace overwrites, in place, keeping the comment on the table's line.
    let replaced = import(&["--replace"]);
    assert_eq!(replaced.code, 0, "{}", replaced.stderr);
    assert!(
        replaced.stdout.starts_with(&format!(
            "imported 2 servers from {client_name} into {config_name}: filesystem (stdio, replacing the entry), memory (stdio, replacing the entry)\n"
        )),
        "{}",
        replaced.stdout
    );
    assert_eq!(
        std::fs::read_to_string(&config).expect("read config"),
        "# My Corral servers.\n#:schema ./config.schema.json\n\n[servers.filesystem] # the one I had before\n\
         command = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-filesystem\", \"/tmp\"]\n\n\
         [servers.memory]\ncommand = \"npx\"\nargs = [\"-y\", \"@modelcontextprotocol/server-memory\"]\nenv_vars = [\"API_TOKEN\"]\n"
    );
    let check = corral(&["config", "check", path_str(&config)], temp.path());
    assert_eq!(check.stdout, format!("ok: {config_name} (2 servers)\n"));
}

#[test]
fn a_corrupt_client_file_is_an_error_naming_the_file_and_position_and_writes_nothing() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = temp.path().join("corral.toml");
    std::fs::write(&config, EXISTING_CONFIG).expect("write config");
    let cases = [
        (
            "claude-desktop",
            "claude_desktop_config.json",
            "{\n  \"mcpServers\": {\n    \"github\": {\"env\": {\"TOKEN\": \"ghp_s3cr3t\"}}\n    \"x\": {}\n  }\n}\n",
            "4:5: not valid JSON: expected `,` or `}` after a member",
        ),
        (
            "zed",
            "settings.json",
            "{\n  \"context_servers\": {\"a\": {\"command\": \"x\", \"env\": {\"K\": \"s3cr3t\n\"}}}\n}\n",
            "2:65: not valid JSON: a control character (such as a line break) in a string",
        ),
        (
            "codex",
            "codex.toml",
            "[mcp_servers.x]\ncommand = \"x\"\nbearer_token = \"s3cr3t\n",
            "3:23: not valid TOML: invalid basic string, expected `\"`",
        ),
    ];
    for (client, name, text, error) in cases {
        let file = temp.path().join(name);
        std::fs::write(&file, text).expect("write the client file");
        for dry_run in [false, true] {
            let mut args = vec![
                "config",
                "import",
                "--from",
                client,
                path_str(&file),
                "--config",
                path_str(&config),
            ];
            if dry_run {
                args.push("--dry-run");
            }
            let run = corral(&args, temp.path());
            assert_eq!(run.code, 1, "{client}");
            assert_eq!(run.stdout, "");
            assert_eq!(run.stderr, format!("{}:{error}\n", file.display()), "{client}");
            assert_eq!(std::fs::read_to_string(&config).expect("read config"), EXISTING_CONFIG);
        }
        // install refuses it the same way, and leaves it alone.
        let run = corral(&["mcp", "install", "--client", client, path_str(&file)], temp.path());
        assert_eq!((run.code, run.stderr), (1, format!("{}:{error}\n", file.display())));
        assert_eq!(std::fs::read_to_string(&file).expect("read client file"), text);
    }
}

#[test]
fn an_invalid_corral_config_stops_the_import() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = temp.path().join("config.toml");
    let invalid = "[servers.a]\ncomand = \"x\"\n";
    std::fs::write(&config, invalid).expect("write config");
    let client = temp.path().join("mcp.json");
    std::fs::write(&client, r#"{"mcpServers": {"b": {"command": "b"}}}"#).expect("write client file");
    let run = corral(
        &[
            "config",
            "import",
            "--from",
            "cursor",
            path_str(&client),
            "--config",
            path_str(&config),
        ],
        temp.path(),
    );
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stderr,
        format!(
            "{path}:1:10: server `a`: missing `command` (stdio transport) or `url` (streamable_http transport)\n\
             {path}:2:1: server `a`, field `comand`: unknown field, did you mean `command`?\n\
             fix Corral's config first (`corral config check`); nothing was imported\n",
            path = config.display()
        )
    );
    assert_eq!(std::fs::read_to_string(&config).expect("read config"), invalid);
}

#[test]
fn the_default_files_are_found_under_home() {
    let temp = tempfile::tempdir().expect("tempdir");
    let home = temp.path();
    let config = home.join("config.toml");
    let missing = corral(
        &["config", "import", "--from", "cursor", "--config", path_str(&config)],
        home,
    );
    assert_eq!(missing.code, 1);
    assert_eq!(
        missing.stderr,
        format!(
            "no Cursor config found (looked for {}): give the file as an argument\n",
            home.join(".cursor/mcp.json").display()
        )
    );
    std::fs::create_dir(home.join(".cursor")).expect("mkdir");
    std::fs::write(
        home.join(".cursor/mcp.json"),
        r#"{"mcpServers": {"b": {"command": "b"}}}"#,
    )
    .expect("write");
    let found = corral(
        &["config", "import", "--from", "cursor", "--config", path_str(&config)],
        home,
    );
    assert_eq!(found.code, 0, "{}", found.stderr);
    assert_eq!(
        std::fs::read_to_string(&config).expect("read config"),
        "[servers.b]\ncommand = \"b\"\n"
    );
    // VS Code: both user files are read.
    #[cfg(target_os = "linux")]
    {
        let user = home.join(".config/Code/User");
        std::fs::create_dir_all(&user).expect("mkdir");
        std::fs::write(
            user.join("mcp.json"),
            r#"{"servers": {"one": {"type": "stdio", "command": "one"}}}"#,
        )
        .expect("write");
        std::fs::write(
            user.join("settings.json"),
            r#"{"mcp": {"servers": {"two": {"command": "two"}}}}"#,
        )
        .expect("write");
        let run = corral(
            &[
                "config",
                "import",
                "--from",
                "vscode",
                "--config",
                path_str(&config),
                "--dry-run",
            ],
            home,
        );
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert_eq!(
            run.stdout,
            "[servers.b]\ncommand = \"b\"\n\n[servers.one]\ncommand = \"one\"\n\n[servers.two]\ncommand = \"two\"\n"
        );
    }
}

/// For each client, realistic files (the case files of `tests/import/`), and what the file is
/// after an uninstall that has to edit it instead of restoring the backup: itself when its
/// servers object existed, else with the empty object install had to create.
fn install_cases() -> Vec<(&'static str, PathBuf, Option<&'static str>)> {
    let cases = cases_dir();
    vec![
        (
            "claude-desktop",
            cases.join("claude-desktop/claude_desktop_config.json"),
            None,
        ),
        (
            "claude-desktop",
            cases.join("claude-desktop/empty.json"),
            Some("{\"mcpServers\": {}}\n"),
        ),
        ("claude-code", cases.join("claude-code/claude.json"), None),
        ("claude-code", cases.join("claude-code/project/.mcp.json"), None),
        ("codex", cases.join("codex/config.toml"), None),
        ("cursor", cases.join("cursor/mcp.json"), None),
        ("cursor", cases.join("cursor/project/.cursor/mcp.json"), None),
        ("vscode", cases.join("vscode/workspace/.vscode/mcp.json"), None),
        ("vscode", cases.join("vscode/settings.json"), None),
        ("zed", cases.join("zed/settings.json"), None),
    ]
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|extension| extension == "bak"))
        .collect();
    found.sort();
    found
}

#[test]
fn install_then_uninstall_gives_every_client_file_back_byte_for_byte() {
    let corral_path = std::fs::canonicalize(env!("CARGO_BIN_EXE_corral")).expect("corral path");
    for (client, case, edited) in install_cases() {
        let original = std::fs::read(&case).expect("read case");
        for path_taken in ["backup", "edit"] {
            let temp = tempfile::tempdir().expect("tempdir");
            let file = temp.path().join(case.file_name().expect("a file name"));
            std::fs::write(&file, &original).expect("copy case");

            let dry = corral(
                &["mcp", "install", "--client", client, path_str(&file), "--dry-run"],
                temp.path(),
            );
            assert_eq!(dry.code, 0, "{client}: {}", dry.stderr);
            assert!(dry.stdout.contains("would add"), "{client}: {}", dry.stdout);
            assert_eq!(
                std::fs::read(&file).expect("read"),
                original,
                "{client}: --dry-run wrote"
            );
            assert!(backups(temp.path()).is_empty());

            let install = corral(&["mcp", "install", "--client", client, path_str(&file)], temp.path());
            assert_eq!(install.code, 0, "{client}: {}", install.stderr);
            let installed = std::fs::read_to_string(&file).expect("read");
            assert!(installed.contains(path_str(&corral_path)), "{client}: {installed}");
            let saved = backups(temp.path());
            assert_eq!(saved.len(), 1, "{client}");
            assert_eq!(std::fs::read(&saved[0]).expect("read backup"), original, "{client}");
            assert!(
                install
                    .stdout
                    .contains(&format!("backed up the file to {}", saved[0].display())),
                "{}",
                install.stdout
            );
            // The client can still read its file, and our entry is where it looks.
            let again = corral(&["mcp", "install", "--client", client, path_str(&file)], temp.path());
            assert!(
                again.stdout.contains("already runs this corral"),
                "{client}: {}",
                again.stdout
            );
            assert_eq!(std::fs::read_to_string(&file).expect("read"), installed);

            if path_taken == "edit" {
                // Without the backup, uninstall edits the file: the inverse of install's edit.
                std::fs::remove_file(&saved[0]).expect("remove backup");
            }
            let uninstall = corral(&["mcp", "uninstall", "--client", client, path_str(&file)], temp.path());
            assert_eq!(uninstall.code, 0, "{client}: {}", uninstall.stderr);
            let expected_action = if path_taken == "backup" {
                "restore"
            } else {
                "remove `corral`"
            };
            assert!(
                uninstall.stdout.contains(expected_action),
                "{client}: {}",
                uninstall.stdout
            );
            let expected = match (path_taken, edited) {
                ("edit", Some(edited)) => edited.to_owned(),
                _ => String::from_utf8_lossy(&original).into_owned(),
            };
            assert_eq!(
                String::from_utf8_lossy(&std::fs::read(&file).expect("read")),
                expected,
                "{client} {} ({path_taken})",
                case.display()
            );
            let nothing = corral(&["mcp", "uninstall", "--client", client, path_str(&file)], temp.path());
            assert!(nothing.stdout.contains("nothing to do"), "{}", nothing.stdout);
        }
    }
}

#[test]
fn install_creates_a_missing_file_and_uninstall_deletes_it_again() {
    let corral_path = std::fs::canonicalize(env!("CARGO_BIN_EXE_corral")).expect("corral path");
    let corral_json = serde_json::to_string(path_str(&corral_path)).expect("json");
    let temp = tempfile::tempdir().expect("tempdir");
    // The default place: ~/.cursor/mcp.json.
    let run = corral(&["mcp", "install", "--client", "cursor"], temp.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    let file = temp.path().join(".cursor/mcp.json");
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        format!(
            "{{\n  \"mcpServers\": {{\n    \"corral\": {{\n      \"command\": {corral_json},\n      \"args\": [\"mcp\"]\n    }}\n  }}\n}}\n"
        )
    );
    let run = corral(&["mcp", "uninstall", "--client", "cursor"], temp.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!file.exists());

    // Codex, in CODEX_HOME's absence ~/.codex/config.toml.
    let run = corral(&["mcp", "install", "--client", "codex"], temp.path());
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        std::fs::read_to_string(temp.path().join(".codex/config.toml")).expect("read"),
        format!("[mcp_servers.corral]\ncommand = {corral_json}\nargs = [\"mcp\"]\n")
    );
}

#[test]
fn install_replace_removes_the_imported_entries_and_uninstall_keeps_them_out() {
    let temp = tempfile::tempdir().expect("tempdir");
    let config = temp.path().join("config.toml");
    let file = temp.path().join("claude_desktop_config.json");
    let original = std::fs::read(cases_dir().join("claude-desktop/claude_desktop_config.json")).expect("read");
    std::fs::write(&file, &original).expect("copy");
    let import = corral(
        &[
            "config",
            "import",
            "--from",
            "claude-desktop",
            path_str(&file),
            "--config",
            path_str(&config),
        ],
        temp.path(),
    );
    assert_eq!(import.code, 0, "{}", import.stderr);

    let install = corral(
        &[
            "mcp",
            "install",
            "--client",
            "claude-desktop",
            path_str(&file),
            "--replace",
            "--config",
            path_str(&config),
        ],
        temp.path(),
    );
    assert_eq!(install.code, 0, "{}", install.stderr);
    assert!(
        install.stdout.contains(
            "remove from `mcpServers`, because Corral runs them now: filesystem, github, brave-search, postgres, sqlite, weather.local"
        ),
        "{}",
        install.stdout
    );
    let installed = std::fs::read_to_string(&file).expect("read");
    assert!(
        !installed.contains("server-github") && installed.contains("globalShortcut"),
        "{installed}"
    );

    // Uninstall removes the entry only: the servers run under Corral now.
    let uninstall = corral(
        &["mcp", "uninstall", "--client", "claude-desktop", path_str(&file)],
        temp.path(),
    );
    assert_eq!(uninstall.code, 0, "{}", uninstall.stderr);
    assert_eq!(
        std::fs::read_to_string(&file).expect("read"),
        "{\n  \"mcpServers\": {\n  },\n  \"globalShortcut\": \"Ctrl+Space\"\n}\n"
    );
    // The file before install is in the first backup.
    assert_eq!(std::fs::read(&backups(temp.path())[0]).expect("read"), original);
}
