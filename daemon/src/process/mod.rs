//! No server outlives its owner: finding and killing every process of a
//! server's tree, and what a killed predecessor left behind ([`reaper`]);
//! reading `/proc` ([`scan`]); the background reap and record-retry tasks
//! ([`reap`]); the bounded teardown of one tree ([`teardown`]) and the one
//! way to signal a process or a group ([`signal`]); and the opt-in cgroup v2
//! leaves that make "every process" exact on Linux ([`cgroup`]).

pub mod cgroup;
pub mod reap;
pub mod reaper;
pub mod scan;
pub mod signal;
pub mod teardown;
