//! The second audited spawn point: the OAuth opener (a browser, or the
//! configured command), which is not a server: no process group, no
//! supervision (see `daemon/clippy.toml`).

/// Start the OAuth opener (a browser, or the configured command) with the authorization URL as
/// its last argument, detached from corrald's stdio, and reap it when it exits. It is not a
/// server: no process group, no supervision; a failure to start is returned, its exit status
/// only logged (an opener may hand the URL to a running browser and exit at once).
pub fn spawn_opener(argv: &[String]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("the opener command is empty"))?;
    #[allow(clippy::disallowed_methods)] // The second audited spawn point: not a server (see daemon/clippy.toml).
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start the opener `{program}`"))?;
    let program = program.clone();
    // Not a task of the daemon's tracker: a browser may run for hours, and
    // shutdown must not wait for it. Only its exit status is logged here.
    tokio::spawn(async move {
        match child.wait().await {
            Ok(status) if status.success() => {}
            Ok(status) => tracing::warn!(opener = %program, %status, "the opener failed"),
            Err(error) => tracing::warn!(opener = %program, %error, "cannot wait for the opener"),
        }
    });
    Ok(())
}

/// Windows: open an `http(s)` URL (already checked by `oauth::check_authorization_url`) in the
/// user's browser with `ShellExecuteW`, the shell's own URL dispatch. No command line is built or
/// parsed: `cmd /C start "" URL` read `&` and `|` in the URL as command separators; `explorer.exe
/// URL` splits its command line at commas for its own switches; `rundll32
/// url.dll,FileProtocolHandler URL` hands on the raw tail of its command line and opens whatever it
/// names (files and programs too). Blocks (the handler may use DDE): call it on a blocking thread.
#[cfg(windows)]
pub fn shell_open_url(url: &str) -> anyhow::Result<()> {
    use std::os::windows::ffi::OsStrExt as _;
    use windows_sys::Win32::UI::Shell::ShellExecuteW;
    use windows_sys::Win32::UI::WindowsAndMessaging::SW_SHOWNORMAL;

    if url.contains('\0') {
        anyhow::bail!("the URL contains a NUL character");
    }
    let wide = |text: &str| -> Vec<u16> {
        std::ffi::OsStr::new(text)
            .encode_wide()
            .chain(std::iter::once(0))
            .collect()
    };
    let operation = wide("open");
    let file = wide(url);
    // SAFETY: `operation` and `file` are NUL-terminated UTF-16 strings that outlive the call; a
    // null window, parameters and directory are allowed by the API.
    let result = unsafe {
        ShellExecuteW(
            std::ptr::null_mut(),
            operation.as_ptr(),
            file.as_ptr(),
            std::ptr::null(),
            std::ptr::null(),
            SW_SHOWNORMAL,
        )
    };
    // Documented: a value greater than 32 means success, anything else is an error code.
    let code = result as isize;
    if code > 32 {
        Ok(())
    } else {
        anyhow::bail!("ShellExecuteW could not open the URL (error {code})")
    }
}
