//! The official MCP client conformance suite (`@modelcontextprotocol/conformance` 0.1.16, under
//! Node 22) against Corral: `initialize`, `tools_call` and every `auth/*` scenario, each run with
//! `corral-conformance` (this package's binary: a real corrald driven like a front-end) as the
//! client under test. The harness listens on all interfaces, so it runs inside a private network
//! namespace (`unshare -n`, as root). Every scenario passes or is listed, with its reason, in
//! `tests/conformance-expected-failures.yml`; the harness fails a listed scenario that passes.

use std::process::Command;
use std::time::Duration;

use corral_tests::{binary, peers_dir, run_command, scratch_dir, workspace_root};

const SCENARIOS: &[&str] = &[
    "initialize",
    "tools_call",
    "auth/metadata-default",
    "auth/metadata-var1",
    "auth/metadata-var2",
    "auth/metadata-var3",
    "auth/basic-cimd",
    "auth/scope-from-www-authenticate",
    "auth/scope-from-scopes-supported",
    "auth/scope-omitted-when-undefined",
    "auth/scope-step-up",
    "auth/scope-retry-limit",
    "auth/token-endpoint-auth-basic",
    "auth/token-endpoint-auth-post",
    "auth/token-endpoint-auth-none",
    "auth/pre-registration",
    "auth/2025-03-26-oauth-metadata-backcompat",
    "auth/2025-03-26-oauth-endpoint-fallback",
    "auth/resource-mismatch",
    "auth/offline-access-scope",
    "auth/offline-access-not-supported",
    "auth/client-credentials-jwt",
    "auth/client-credentials-basic",
    "auth/cross-app-access-complete-flow",
];

/// Quote `text` for `sh`.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

#[test]
fn the_client_conformance_suite_passes_except_the_listed_gaps() {
    // SAFETY: getuid has no preconditions.
    let root = unsafe { libc::getuid() } == 0;
    assert!(
        root,
        "the conformance suite runs in a private network namespace (unshare -n), which needs root; \
         run the tests as root (CI does) with `bash tests/run.sh`"
    );
    let node = peers_dir().join("node_modules/.bin/node");
    let harness = peers_dir().join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    assert!(
        node.exists() && harness.exists(),
        "Node 22 or the conformance suite is missing: run `npm ci --prefix tests/peers` (tests/run.sh does)"
    );
    let client = binary("corral-conformance");
    let baseline = workspace_root().join("tests/conformance-expected-failures.yml");
    let output_dir = scratch_dir();
    let mut script = String::from("ip link set lo up || exit 90\n");
    for scenario in SCENARIOS {
        script.push_str(&format!(
            "{node} {harness} client --command {client} --scenario {scenario} --expected-failures {baseline} \
             -o {out} > /dev/null 2>&1; echo \"{scenario} $?\"\n",
            node = shell_quote(&node.display().to_string()),
            harness = shell_quote(&harness.display().to_string()),
            client = shell_quote(&client.display().to_string()),
            scenario = shell_quote(scenario),
            baseline = shell_quote(&baseline.display().to_string()),
            out = shell_quote(&output_dir.path().display().to_string()),
        ));
    }
    let mut command = Command::new("unshare");
    command.arg("-n").arg("sh").arg("-c").arg(&script);
    let output = run_command(&mut command, Duration::from_secs(600));
    assert!(output.status.success(), "unshare failed:\n{}", output.stderr);
    let results: Vec<(&str, &str)> = output.stdout.lines().filter_map(|line| line.rsplit_once(' ')).collect();
    assert_eq!(
        results.len(),
        SCENARIOS.len(),
        "one result per scenario:\n{}",
        output.stdout
    );
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, code)| *code != "0")
        .map(|(scenario, _)| *scenario)
        .collect();
    if !failed.is_empty() {
        // Keep the harness's checks.json files for whoever reads the failure.
        let kept = output_dir.keep();
        panic!(
            "conformance scenarios failed or passed unexpectedly (checks.json files are in {}): {failed:?}",
            kept.display()
        );
    }
}
