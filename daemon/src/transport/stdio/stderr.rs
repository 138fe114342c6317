//! A server's stderr: always drained (a full pipe would block the server)
//! into a bounded ring of recent lines ([`StderrTail`]) and into the log,
//! rate-limited.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt as _;

/// The last lines a server wrote to stderr.
#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    lines: Arc<Mutex<VecDeque<String>>>,
}

/// Lines kept per server.
const STDERR_TAIL_LINES: usize = 50;
/// Longest line kept (longer lines are cut, with a marker).
const STDERR_LINE_BYTES: usize = 1024;
/// Lines per second written to the daemon's log per server; the rest are counted.
const STDERR_LOG_LINES_PER_SECOND: u32 = 50;

impl StderrTail {
    /// The most recent `count` lines, oldest first.
    pub fn last(&self, count: usize) -> Vec<String> {
        let lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        lines.iter().skip(lines.len().saturating_sub(count)).cloned().collect()
    }

    fn push(&self, line: String) {
        let mut lines = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        if lines.len() == STDERR_TAIL_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// Read `stderr` until it closes: every line into `tail`, and into the log
/// (with the server's name) at a bounded rate.
pub async fn drain_stderr(server: String, mut stderr: tokio::process::ChildStderr, tail: StderrTail) {
    let mut chunk = vec![0u8; 8 * 1024];
    let mut line: Vec<u8> = Vec::new();
    let mut window_start = Instant::now();
    let mut logged_in_window = 0u32;
    let mut suppressed = 0u64;
    loop {
        let read = match stderr.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(read) => read,
        };
        for &byte in &chunk[..read] {
            if byte != b'\n' {
                if line.len() < STDERR_LINE_BYTES {
                    line.push(byte);
                }
                continue;
            }
            let mut text = String::from_utf8_lossy(&line).trim_end_matches('\r').to_owned();
            if line.len() >= STDERR_LINE_BYTES {
                text.push_str(" […]");
            }
            line.clear();
            if window_start.elapsed() >= Duration::from_secs(1) {
                if suppressed > 0 {
                    tracing::info!(target: "corrald::server_stderr", server, suppressed, "stderr lines not logged (rate limit)");
                }
                window_start = Instant::now();
                logged_in_window = 0;
                suppressed = 0;
            }
            if logged_in_window < STDERR_LOG_LINES_PER_SECOND {
                logged_in_window += 1;
                tracing::info!(target: "corrald::server_stderr", server, "{text}");
            } else {
                suppressed += 1;
            }
            tail.push(text);
        }
    }
    if !line.is_empty() {
        tail.push(String::from_utf8_lossy(&line).into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let tail = StderrTail::default();
        for n in 0..(STDERR_TAIL_LINES + 5) {
            tail.push(format!("line {n}"));
        }
        let last = tail.last(2);
        assert_eq!(
            last,
            vec![
                format!("line {}", STDERR_TAIL_LINES + 3),
                format!("line {}", STDERR_TAIL_LINES + 4)
            ]
        );
        assert_eq!(tail.last(usize::MAX).len(), STDERR_TAIL_LINES);
    }
}
