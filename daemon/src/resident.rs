//! corrald's resident set after boot: the code pages that only boot ran are let go.
//!
//! Most of an idle corrald's `VmRSS` is not memory it allocated (about 1 MiB is anonymous) but
//! pages of its own executable's code (`RssFile`): each instruction fetched maps a whole
//! fault-around window of the file (64 KiB), and boot runs code from every corner of a binary of
//! about 14 MB of `.text` (argument parsing, the log filter, the config parser, the method
//! tables, the built-in server's schemas). Measured on the release build (issue #13): 12.4 MiB of
//! `RssFile` after boot, of which an idle daemon touches about 3 MiB again.
//!
//! [`let_go_of_boot_code`] asks the kernel (`madvise(MADV_DONTNEED)`) to unmap the executable's
//! code mappings once boot is done. Nothing is lost: they are clean, read-only pages of the
//! file, which stay in the page cache (shared, and reclaimable as ever), and the next
//! instruction fetched from one maps it again (a minor fault). Only mappings that are
//! executable, not writable, private and without a single anonymous (copied-on-write) page are
//! touched, so no relocated or written page is ever dropped (`.data`, RELRO, a debugger's
//! breakpoint). Linux only; elsewhere it does nothing.

/// Unmap corrald's own code pages (see the module docs); the bytes of mappings let go of, or
/// `None` when `/proc/self` cannot be read (then nothing was done).
pub(crate) fn let_go_of_boot_code() -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        let exe = std::fs::read_link("/proc/self/exe").ok()?;
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut released = 0;
        for (start, end) in code_mappings(&smaps, &exe.to_string_lossy()) {
            let length = end - start;
            // SAFETY: `start..end` is a whole mapping of this process (page-aligned, from the
            // kernel's own list), executable, read-only, private and with no anonymous page:
            // MADV_DONTNEED only drops the mapping of clean file pages, which the next access maps
            // again from the file; no data of this process is in them.
            let result = unsafe { libc::madvise(start as *mut libc::c_void, length, libc::MADV_DONTNEED) };
            if result == 0 {
                released += length;
            }
        }
        Some(released)
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The mappings of `exe` in `smaps` (the text of `/proc/self/smaps`) that may be let go of:
/// `r-xp` (read, execute, not write, private) and `Anonymous: 0 kB`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn code_mappings(smaps: &str, exe: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    // The mapping whose fields are being read: its range, if it is a candidate.
    let mut candidate: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        if let Some((range, rest)) = header(line) {
            let mut fields = rest.split_whitespace();
            let perms = fields.next().unwrap_or("");
            // offset, device, inode, then the path (which may contain spaces).
            let path = rest.splitn(5, ' ').nth(4).map(str::trim_start).unwrap_or("");
            candidate = (perms == "r-xp" && path == exe).then_some(range);
        } else if let Some(anonymous) = line.strip_prefix("Anonymous:")
            && let Some(range) = candidate.take()
            && anonymous.trim() == "0 kB"
        {
            found.push(range);
        }
    }
    found
}

/// A mapping's header line of `smaps`: its address range and the rest of the line.
fn header(line: &str) -> Option<((usize, usize), &str)> {
    let (range, rest) = line.split_once(' ')?;
    let (start, end) = range.split_once('-')?;
    let start = usize::from_str_radix(start, 16).ok()?;
    let end = usize::from_str_radix(end, 16).ok()?;
    (start < end).then_some(((start, end), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXE: &str = "/opt/corral bin/corrald";

    #[test]
    fn only_clean_read_only_code_of_the_executable_is_let_go_of() {
        let smaps = format!(
            "5600000000-5600100000 r--p 00000000 08:01 42 {EXE}\nAnonymous:             0 kB\n\
             5600100000-5600900000 r-xp 00100000 08:01 42 {EXE}\nRss:     9000 kB\nAnonymous:             0 kB\n\
             5600900000-5600a00000 r-xp 00900000 08:01 42 {EXE}\nAnonymous:             4 kB\n\
             5600a00000-5600a40000 rw-p 00a00000 08:01 42 {EXE}\nAnonymous:           256 kB\n\
             7f0000000000-7f0000100000 r-xp 00000000 08:01 7 /usr/lib/libc.so.6\nAnonymous:             0 kB\n\
             7f0000200000-7f0000300000 rwxp 00000000 00:00 0 \nAnonymous:             0 kB\n"
        );
        assert_eq!(code_mappings(&smaps, EXE), vec![(0x56_0010_0000, 0x56_0090_0000)]);
        // A binary replaced while it runs is `… (deleted)` in both places.
        let deleted = format!("1000-3000 r-xp 00000000 08:01 42 {EXE} (deleted)\nAnonymous: 0 kB\n");
        assert_eq!(
            code_mappings(&deleted, &format!("{EXE} (deleted)")),
            vec![(0x1000, 0x3000)]
        );
        assert!(code_mappings(&deleted, EXE).is_empty());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_keeps_running_after_letting_go() {
        let released = let_go_of_boot_code().expect("/proc/self is readable");
        assert!(released > 0, "the test binary has code mappings");
        // Code is mapped again as it runs.
        assert_eq!(code_mappings("", EXE), Vec::new());
    }
}
