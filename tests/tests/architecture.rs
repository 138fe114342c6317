//! Architecture invariants of the workspace, checked with cargo itself:
//! `corral-protocol` has no async runtime and no MCP SDK, and nothing depends
//! on the daemon.

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

#[test]
fn the_protocol_crate_has_no_tokio_and_no_rmcp() {
    let mut tree = cargo();
    tree.args([
        "tree",
        "-e",
        "normal",
        "-p",
        "corral-protocol",
        "--prefix",
        "none",
        "--locked",
        "--offline",
    ]);
    let output = run_command(&mut tree, Duration::from_secs(60));
    assert!(output.status.success(), "cargo tree failed: {}", output.stderr);
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert!(
        lines.first().is_some_and(|first| first.starts_with("corral-protocol ")),
        "cargo tree printed the protocol crate's tree:\n{}",
        output.stdout
    );
    for forbidden in ["tokio ", "rmcp "] {
        let offending: Vec<&&str> = lines.iter().filter(|line| line.starts_with(forbidden)).collect();
        assert!(
            offending.is_empty(),
            "corral-protocol must not depend on {forbidden}(normal edges): {offending:?}"
        );
    }
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
