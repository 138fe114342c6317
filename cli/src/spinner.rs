//! A waiting indicator on stderr for commands that may take a while
//! (`corral call`): shown only on a terminal and only once the wait is
//! noticeable, erased when the wait ends. Nothing is written when stderr is
//! piped or redirected, so scripts see clean output.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Set while the terminal is asking the user something (`ask.rs`): the indicator stays away.
static PAUSED: AtomicBool = AtomicBool::new(false);

/// Hide the indicator (and keep it hidden) while the user is being asked something.
pub(crate) fn pause() {
    PAUSED.store(true, Ordering::Relaxed);
    if std::io::stderr().is_terminal() {
        erase();
    }
}

/// Let the indicator show again.
pub(crate) fn resume() {
    PAUSED.store(false, Ordering::Relaxed);
}

/// Waits shorter than this show nothing (no flicker on quick calls).
const SHOW_AFTER: Duration = Duration::from_millis(300);
/// Time between frames.
const FRAME: Duration = Duration::from_millis(100);
const FRAMES: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Run `future`; while it runs on a terminal, show `label` with a spinner and the time waited.
pub(crate) async fn while_waiting<F: Future>(label: &str, future: F) -> F::Output {
    if !std::io::stderr().is_terminal() {
        return future.await;
    }
    tokio::pin!(future);
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + SHOW_AFTER, FRAME);
    let mut shown = false;
    let output = loop {
        tokio::select! {
            output = &mut future => break output,
            _ = ticks.tick() => {
                if PAUSED.load(Ordering::Relaxed) {
                    continue;
                }
                let elapsed = started.elapsed();
                let frame = FRAMES[usize::try_from(elapsed.as_millis() / FRAME.as_millis()).unwrap_or(0) % FRAMES.len()];
                let elapsed = elapsed.as_secs();
                let mut stderr = std::io::stderr().lock();
                let _ = write!(stderr, "\r\x1b[2K{frame} {label} {elapsed}s (Ctrl-C cancels)");
                let _ = stderr.flush();
                shown = true;
            }
        }
    };
    if shown {
        erase();
    }
    output
}

/// Erase the indicator line.
pub(crate) fn erase() {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K");
    let _ = stderr.flush();
}
