//! The bounded teardown of one server's process tree: stdin EOF, then
//! SIGTERM, then SIGKILL, each step bounded ([`TeardownPolicy`]), to the
//! process group, every process carrying the server's marker, every
//! descendant corrald saw, and the cgroup leaf's members. Every path that
//! ends a stdio server (stop, restart, crash, session end, shutdown) comes
//! here.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use process_wrap::tokio::ChildWrapper;

use super::cgroup;
use super::reaper::Registry;
use super::scan::{ProcessId, descendants, is_same_process, marked_processes};
use super::signal::{Signal, group_alive, send_signal, signal_group};

/// How long each teardown step may take.
#[derive(Debug, Clone, Copy)]
pub struct TeardownPolicy {
    /// After closing stdin, how long the server may take to exit by itself.
    pub stdin_grace: Duration,
    /// After SIGTERM, how long before SIGKILL.
    pub term_grace: Duration,
}

impl TeardownPolicy {
    /// Split a total bound: 40% for the server to exit on stdin EOF, the rest after SIGTERM.
    pub(crate) fn within(total: Duration) -> Self {
        let stdin_grace = total.mul_f64(0.4);
        Self {
            stdin_grace,
            term_grace: total.saturating_sub(stdin_grace),
        }
    }
}

pub(crate) fn describe_exit(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(error) => format!("unknown exit ({error})"),
    }
}

/// Close the session, then escalate: stdin EOF → SIGTERM → SIGKILL, each step
/// bounded. Each signal goes to the process group *and* to the rest of the
/// tree at the same moments, so the whole tree gets one grace and the
/// documented bound holds. The rest of the tree is every process carrying
/// the server's `marker` (descendants that left the group: `setsid`
/// children, double-forked daemons) and every descendant corrald saw below
/// the leader (`known` since `ready`, and again here before the session is
/// closed: most servers exit on stdin EOF, orphaning their children, and
/// parent chains are intact only before that), which also finds a process
/// that left the group and cleared its environment. Returns how the leader
/// ended, if it was reaped here. The caller reaps adopted orphans right
/// after ([`reap_adopted`]).
///
/// The `/proc` scans run in `spawn_blocking`, never on a runtime thread.
pub(crate) async fn teardown(
    close_session: impl Future<Output = ()>,
    child: &mut Box<dyn ChildWrapper>,
    leader: ProcessId,
    marker: &str,
    known: &[ProcessId],
    leaf: Option<&cgroup::Leaf>,
    policy: TeardownPolicy,
) -> Option<String> {
    let pid = leader.pid;
    // One deadline for closing the session and the exit that should follow,
    // so that the whole teardown stays within stop_timeout_sec.
    let stdin_deadline = tokio::time::Instant::now() + policy.stdin_grace;
    let mut tree: Vec<ProcessId> = known.to_vec();
    tree.extend(scan_tree(leader, tree.clone(), None).await);
    // Closing the session closes the transport: the server sees stdin EOF.
    close_session.await;
    let mut exit = match tokio::time::timeout_at(stdin_deadline, child.inner_mut().wait()).await {
        Ok(status) => Some(describe_exit(status)),
        Err(_) => None,
    };
    // The processes signalled now are the ones waited for: scanning /proc
    // once, not on every poll of the grace.
    tree.extend(scan_tree(leader, tree.clone(), Some(marker)).await);
    tree.extend(leaf_members(leaf, leader, &tree));
    tree.retain(|process| is_same_process(*process));
    let leaf_populated = || leaf.is_some_and(cgroup::Leaf::populated);
    if exit.is_some() && !group_alive(pid) && tree.is_empty() && !leaf_populated() {
        return exit;
    }
    signal_tree(child, &tree, Signal::Terminate);
    let tree_alive = |tree: &[ProcessId]| {
        group_alive(pid) || tree.iter().any(|process| is_same_process(*process)) || leaf_populated()
    };
    let deadline = tokio::time::Instant::now() + policy.term_grace;
    if exit.is_none() {
        exit = tokio::time::timeout_at(deadline, child.inner_mut().wait())
            .await
            .ok()
            .map(describe_exit);
    }
    // The rest of the tree gets the same grace as the leader.
    while tree_alive(&tree) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // SIGKILL goes to a fresh scan: whatever carries the marker or descends
    // from the tree now, including anything started during the grace.
    tree.extend(scan_tree(leader, tree.clone(), Some(marker)).await);
    tree.retain(|process| is_same_process(*process));
    if exit.is_none() || tree_alive(&tree) {
        signal_tree(child, &tree, Signal::Kill);
        if let Some(leaf) = leaf {
            // Everything in the leaf, whatever it did to hide: cgroup.kill.
            let leaf = leaf.clone();
            let _ = tokio::task::spawn_blocking(move || leaf.kill_and_remove()).await;
        }
        if exit.is_none() {
            exit = tokio::time::timeout(Duration::from_secs(1), child.inner_mut().wait())
                .await
                .ok()
                .map(describe_exit);
        }
    }
    exit
}

/// The server's tree besides its leader, from one `/proc` scan off the
/// runtime threads: the descendants of the leader and of `known`, and with a
/// `marker` every process carrying it. Only new entries are returned.
async fn scan_tree(leader: ProcessId, known: Vec<ProcessId>, marker: Option<&str>) -> Vec<ProcessId> {
    let marker = marker.map(str::to_owned);
    tokio::task::spawn_blocking(move || {
        let mut roots = known.clone();
        roots.push(leader);
        let mut found = descendants(&roots);
        if let Some(marker) = marker {
            found.extend(marked_processes(&marker));
        }
        found.sort_unstable_by_key(|process| (process.pid, process.start_time));
        found.dedup();
        found.retain(|process| *process != leader && !known.contains(process));
        found
    })
    .await
    .unwrap_or_default()
}

/// The processes in the run's cgroup leaf not already in `tree` (the leader excluded).
fn leaf_members(leaf: Option<&cgroup::Leaf>, leader: ProcessId, tree: &[ProcessId]) -> Vec<ProcessId> {
    let Some(leaf) = leaf else { return Vec::new() };
    leaf.pids()
        .into_iter()
        .map(ProcessId::of)
        .filter(|process| process.pid != leader.pid && process.start_time != 0 && !tree.contains(process))
        .collect()
}

/// Reap orphans re-parented to corrald, off the runtime threads: the last
/// step of every teardown (killed orphans are re-parented to corrald, the
/// subreaper), taken by the caller, which holds the registry.
pub(crate) async fn reap_adopted(processes: Arc<Registry>) {
    let _ = tokio::task::spawn_blocking(move || processes.reap_adopted()).await;
}

/// Signal the process group and every process of `tree` (each checked by start time first).
fn signal_tree(child: &mut Box<dyn ChildWrapper>, tree: &[ProcessId], signal: Signal) {
    signal_group(child, signal);
    for process in tree {
        send_signal(*process, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn teardown_bound_is_split_between_stdin_and_sigterm() {
        let policy = TeardownPolicy::within(Duration::from_millis(2500));
        assert_eq!(policy.stdin_grace, Duration::from_millis(1000));
        assert_eq!(policy.term_grace, Duration::from_millis(1500));
    }
}
