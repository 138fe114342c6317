//! What the CLI's test binaries share: running the `corral` binary with a
//! bound, its output drained on threads.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Upper bound for every run; reaching it is a failure.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// How a run of `corral` ended.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// `corral` with `args`, stdin from /dev/null, stdout and stderr piped, and
/// no inherited `CORRAL_SOCKET`/`CORRAL_CONFIG`; the caller adds the rest.
pub(crate) fn corral_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_corral"));
    command
        .args(args)
        .env_remove("CORRAL_SOCKET")
        .env_remove("CORRAL_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Run `command` to its end, killing it after [`WAIT`] (a failure).
pub(crate) fn run_bounded(mut command: Command, args: &[&str]) -> Run {
    let mut child = command.spawn().expect("spawn corral");
    let mut stdout_pipe = child.stdout.take().expect("stdout piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr piped");
    // Drain both pipes on threads so a chatty child never blocks on a full pipe.
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        stdout_pipe.read_to_string(&mut text).expect("read stdout");
        text
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        stderr_pipe.read_to_string(&mut text).expect("read stderr");
        text
    });
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for corral") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("corral {args:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().expect("corral exited normally, not by a signal"),
        stdout: stdout.join().expect("stdout thread"),
        stderr: stderr.join().expect("stderr thread"),
    }
}

pub(crate) fn path_str(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}
