//! The official MCP client conformance suite against Corral, in two releases: the stable
//! `@modelcontextprotocol/conformance` 0.1.16 and the newest, 0.2.0-alpha.12 (the npm alias
//! `conformance-next` in `tests/peers/package.json`), both under Node 22. Every client scenario
//! each release lists (`list --client`) runs with `corral-conformance` (this package's binary: a
//! real corrald driven like a front-end) as the client under test. The harness listens on all
//! interfaces, so it runs inside a private network namespace (`unshare -n`, as root).
//!
//! Each release has its own expected-failures list (`Suite::expected_failures`, in the format of
//! the harness's `--expected-failures`). A scenario passes when the harness's verdict does: its
//! checks pass and the client exits 0 (or the scenario allows a client error, as the ones where
//! the client must refuse to go on do). The harness's own baseline mode grades the checks only,
//! so a server that fails under Corral after every auth check passed would count as passing:
//! this test runs the harness without it and applies the list itself. Every scenario passes or
//! is listed with its reason, and a listed scenario that passes fails the run until it is taken
//! off. The lists themselves are checked too: every entry names a scenario of its release and
//! sits under a comment giving its reason, and the installed release is the one the list was
//! written for. The scenarios of the grants for machines also run one by one (`run_scenario`),
//! so each grant has a test of its own.

use std::process::Command;
use std::time::Duration;

use corral_tests::{binary, peers_dir, run_command, scratch_dir, workspace_root};

/// One release of the suite.
struct Suite {
    /// Where npm installed it, under `tests/peers/node_modules`.
    package: &'static str,
    /// The version pinned in `tests/peers/package.json` (checked against the installed one).
    version: &'static str,
    /// Its expected-failures list, relative to the workspace root.
    expected_failures: &'static str,
}

const STABLE: Suite = Suite {
    package: "@modelcontextprotocol/conformance",
    version: "0.1.16",
    expected_failures: "tests/conformance-expected-failures.yml",
};

const NEWEST: Suite = Suite {
    package: "conformance-next",
    version: "0.2.0-alpha.12",
    expected_failures: "tests/conformance-expected-failures-next.yml",
};

/// How long one release's scenarios may take in all (each client run is bounded by the
/// harness's own 30 s timeout).
const SUITE_LIMIT: Duration = Duration::from_secs(1500);

/// Quote `text` for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// The scenario names of `list --client`'s output (`  - NAME [versions]` lines).
fn client_scenarios(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|line| line.strip_prefix("  - "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The entries of an expected-failures file's `client:` list, each checked to sit under a
/// comment (directly, or below other entries of the same comment). Panics naming the file and
/// the entry otherwise.
fn expected_failures(file: &str, text: &str) -> Vec<String> {
    let mut entries = Vec::new();
    let mut explained = false;
    let mut in_client = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if !line.starts_with(' ') && !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_client = trimmed == "client:";
            explained = false;
            continue;
        }
        if !in_client {
            continue;
        }
        if trimmed.starts_with('#') {
            explained = true;
        } else if let Some(entry) = trimmed.strip_prefix("- ") {
            assert!(
                explained,
                "{file}: `{entry}` has no reason: put a comment saying why above it"
            );
            entries.push(entry.trim().to_owned());
        } else if trimmed.is_empty() {
            explained = false;
        }
    }
    entries
}

/// Node 22 and the harness of `suite`, checked to be there, as root.
fn harness_of(suite: &Suite) -> (std::path::PathBuf, std::path::PathBuf) {
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    assert!(
        root,
        "the conformance suite runs in a private network namespace (unshare -n), which needs root; \
         run the tests as root (CI does) with `bash tests/run.sh`"
    );
    let node = peers_dir().join("node_modules/.bin/node");
    let harness = peers_dir()
        .join("node_modules")
        .join(suite.package)
        .join("dist/index.js");
    assert!(
        node.exists() && harness.exists(),
        "Node 22 or the conformance suite {} is missing: run `npm ci --prefix tests/peers` (tests/run.sh does)",
        suite.version
    );
    (node, harness)
}

/// Run one client scenario of `suite` alone, with its checks printed: it must pass.
fn run_scenario(suite: &Suite, scenario: &str) {
    let (node, harness) = harness_of(suite);
    let output_dir = scratch_dir();
    let script = format!(
        "ip link set lo up || exit 90\n{node} {harness} client --command {client} --scenario {scenario} -o {out} 2>&1\n",
        node = shell_quote(&node.display().to_string()),
        harness = shell_quote(&harness.display().to_string()),
        client = shell_quote(&binary("corral-conformance").display().to_string()),
        scenario = shell_quote(scenario),
        out = shell_quote(&output_dir.path().display().to_string()),
    );
    let mut command = Command::new("unshare");
    command.arg("-n").arg("sh").arg("-c").arg(&script);
    let output = run_command(&mut command, Duration::from_secs(120));
    assert!(
        output.status.success(),
        "{scenario} of {} {} failed:\n{}\n{}",
        suite.package,
        suite.version,
        output.stdout,
        output.stderr
    );
}

fn run_suite(suite: &Suite) {
    let (node, harness) = harness_of(suite);
    let package = peers_dir().join("node_modules").join(suite.package);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(package.join("package.json")).expect("read the suite's package.json"),
    )
    .expect("the suite's package.json is JSON");
    assert_eq!(
        manifest["version"], suite.version,
        "{} is not the release {} was written for: run `npm ci --prefix tests/peers`, or update the list",
        suite.package, suite.expected_failures
    );

    let listing = run_command(
        Command::new(&node).arg(&harness).args(["list", "--client"]),
        Duration::from_secs(60),
    );
    assert!(listing.status.success(), "list --client failed:\n{}", listing.stderr);
    let scenarios = client_scenarios(&listing.stdout);
    assert!(
        scenarios.len() > 20,
        "list --client named too few scenarios:\n{}",
        listing.stdout
    );
    let baseline = workspace_root().join(suite.expected_failures);
    let listed = expected_failures(
        suite.expected_failures,
        &std::fs::read_to_string(&baseline).expect("read the expected-failures list"),
    );
    for entry in &listed {
        assert!(
            scenarios.contains(entry),
            "{}: `{entry}` is not a client scenario of {} {}",
            suite.expected_failures,
            suite.package,
            suite.version
        );
    }

    let client = binary("corral-conformance");
    let output_dir = scratch_dir();
    let mut script = String::from("ip link set lo up || exit 90\n");
    for scenario in &scenarios {
        script.push_str(&format!(
            "{node} {harness} client --command {client} --scenario {scenario} -o {out} > /dev/null 2>&1; \
             echo {scenario} \"$?\"\n",
            node = shell_quote(&node.display().to_string()),
            harness = shell_quote(&harness.display().to_string()),
            client = shell_quote(&client.display().to_string()),
            scenario = shell_quote(scenario),
            out = shell_quote(&output_dir.path().display().to_string()),
        ));
    }
    let mut command = Command::new("unshare");
    command.arg("-n").arg("sh").arg("-c").arg(&script);
    let output = run_command(&mut command, SUITE_LIMIT);
    assert!(output.status.success(), "unshare failed:\n{}", output.stderr);
    let results: Vec<(&str, &str)> = output.stdout.lines().filter_map(|line| line.rsplit_once(' ')).collect();
    assert_eq!(
        results.len(),
        scenarios.len(),
        "one result per scenario:\n{}",
        output.stdout
    );
    eprintln!(
        "{} {}: {} scenarios, {} expected to fail",
        suite.package,
        suite.version,
        scenarios.len(),
        listed.len()
    );
    let unexpected: Vec<&str> = results
        .iter()
        .filter(|(scenario, code)| *code != "0" && !listed.iter().any(|entry| entry == scenario))
        .map(|(scenario, _)| *scenario)
        .collect();
    let stale: Vec<&str> = results
        .iter()
        .filter(|(scenario, code)| *code == "0" && listed.iter().any(|entry| entry == scenario))
        .map(|(scenario, _)| *scenario)
        .collect();
    if !unexpected.is_empty() || !stale.is_empty() {
        // Keep the harness's checks.json files for whoever reads the failure.
        let kept = output_dir.keep();
        panic!(
            "{} {}: failed and not listed: {unexpected:?}; passed but listed in {} (take them off): {stale:?} \
             (checks.json files are in {})",
            suite.package,
            suite.version,
            suite.expected_failures,
            kept.display()
        );
    }
}

#[test]
fn the_stable_client_suite_passes_except_the_listed_gaps() {
    run_suite(&STABLE);
}

#[test]
fn the_newest_client_suite_passes_except_the_listed_gaps() {
    run_suite(&NEWEST);
}

// The grants for machines, one scenario each (also part of the whole runs above), against the
// suite's own authorization servers, which verify what the client sent.

#[test]
fn the_client_credentials_grant_with_client_secret_basic_passes() {
    run_scenario(&NEWEST, "auth/client-credentials-basic");
}

#[test]
fn the_client_credentials_grant_with_private_key_jwt_passes() {
    run_scenario(&NEWEST, "auth/client-credentials-jwt");
}

#[test]
fn the_workload_identity_jwt_bearer_grant_passes() {
    run_scenario(&NEWEST, "auth/wif-jwt-bearer");
}

#[test]
fn enterprise_managed_authorization_passes() {
    run_scenario(&NEWEST, "auth/enterprise-managed-authorization");
    run_scenario(&STABLE, "auth/cross-app-access-complete-flow");
}

#[test]
fn an_expected_failure_without_a_reason_is_refused() {
    let good = "client:\n  # why\n  - a\n  - b\n\n  # why not\n  - c\n";
    assert_eq!(expected_failures("good.yml", good), ["a", "b", "c"]);
    let bad = "client:\n  # why\n  - a\n\n  - b\n";
    let refused = std::panic::catch_unwind(|| expected_failures("bad.yml", bad));
    assert!(refused.is_err(), "an entry after a blank line has no reason");
}
