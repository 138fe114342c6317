//! Corral's end-to-end tests as one test binary: each module is one former
//! `tests/tests/<name>.rs`, unchanged, so `cargo test -p corral-tests --test e2e
//! <module>::` runs one of them. One binary instead of thirty-odd, because on a
//! 2-core machine linking each test executable against the harness, tokio and rmcp
//! dominated the build (issue #14).
//!
//! The tests share one process now, so none of them may change process-wide state
//! (environment, working directory, signal handlers, resource limits, cgroup): each
//! passes such things to the child it starts instead. The one test that has to move
//! the test process itself, into a cgroup of its own, stays its own binary
//! (`tests/tests/stdio_cgroup.rs`): any daemon another test started while this
//! process was in that cgroup would be killed with it. `tests/tests/architecture.rs`
//! stays apart too (it checks the workspace with cargo, not the daemon).

mod bad_input;
mod bridge;
mod bridge_views;
mod builtin;
mod catalog;
mod cli;
mod conformance;
mod credentials;
mod disk_full;
mod doctor;
mod fuzz_socket;
mod grants;
mod handshake;
mod http;
mod lifecycle;
mod limits;
mod mcp_endpoint;
mod mrtr;
mod oauth;
mod oauth_refresh;
mod passthrough;
mod reload;
mod sdk_requests;
mod security_uid;
mod server_messages;
mod server_requests;
mod service;
mod sessions;
mod skills;
mod stdio_env;
mod stdio_era;
mod stdio_failures;
mod stdio_faults;
mod stdio_lifecycle;
mod stdio_robustness;
mod stdio_teardown;
mod tools;
mod vscode_jsonrpc;
