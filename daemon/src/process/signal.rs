//! Signalling a server's processes: one process checked by start time first
//! ([`send_signal`]), a process group, and the group a child leads through
//! its process-wrap handle (a Job Object on Windows).

use process_wrap::tokio::ChildWrapper;

use super::scan::ProcessId;

/// The signals corrald sends to servers' processes: one enum for the
/// teardown ladder and for what a predecessor left.
#[derive(Debug, Clone, Copy)]
pub enum Signal {
    /// SIGTERM.
    Terminate,
    /// SIGKILL.
    Kill,
}

#[cfg(unix)]
fn signal_number(signal: Signal) -> i32 {
    match signal {
        Signal::Terminate => libc::SIGTERM,
        Signal::Kill => libc::SIGKILL,
    }
}

/// Signal `id` if it is still the same process.
pub fn send_signal(id: ProcessId, signal: Signal) {
    #[cfg(unix)]
    if super::scan::is_same_process(id) {
        let Ok(pid) = i32::try_from(id.pid) else { return };
        // SAFETY: kill(2) with a pid we just verified; no memory is involved.
        unsafe { libc::kill(pid, signal_number(signal)) };
    }
    #[cfg(not(unix))]
    let _ = (id, signal);
}

pub(crate) fn send_signal_to_group(pgid: u32, signal: Signal) {
    #[cfg(unix)]
    if let Ok(pgid) = i32::try_from(pgid) {
        // SAFETY: killpg(2); a missing group is ESRCH, which is fine.
        unsafe { libc::killpg(pgid, signal_number(signal)) };
    }
    #[cfg(not(unix))]
    let _ = (pgid, signal);
}

#[cfg(unix)]
pub(crate) fn signal_group(child: &mut Box<dyn ChildWrapper>, signal: Signal) {
    // ESRCH (group already gone) is the expected outcome of a clean exit.
    let _ = child.signal(signal_number(signal));
}

#[cfg(windows)]
pub(crate) fn signal_group(child: &mut Box<dyn ChildWrapper>, _signal: Signal) {
    // The Job Object has no graceful signal: terminate the whole job.
    let _ = child.start_kill();
}

/// Whether any process of the group led by `pid` still exists.
#[cfg(unix)]
pub(crate) fn group_alive(pid: u32) -> bool {
    let Ok(pgid) = i32::try_from(pid) else { return false };
    // SAFETY: signal 0 only checks for existence and permission; nothing is sent.
    unsafe { libc::killpg(pgid, 0) == 0 }
}

#[cfg(windows)]
pub(crate) fn group_alive(_pid: u32) -> bool {
    false
}
