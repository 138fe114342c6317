//! No server outlives its owner: finding and killing every process of a
//! server's tree, and what a killed predecessor left behind ([`reaper`]), and
//! the opt-in cgroup v2 leaves that make "every process" exact on Linux
//! ([`cgroup`]).

pub mod cgroup;
pub mod reaper;
