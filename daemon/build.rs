//! Link options of the `corrald` executable that lower the memory an idle daemon maps, and
//! nothing else (issue #13; measured in docs/benchmarks.md, "Less code mapped"). Each is used
//! only where the linker is known to take it, and neither can make a build fail or a binary
//! behave differently: at worst corrald maps what it would map without them.
//!
//! - `layout/boot.ld` puts the functions that boot, an idle daemon and its first requests run
//!   first in `.text` (recorded by `layout/record.py`; optimised builds only). The kernel maps
//!   code in 64 KiB windows around each first instruction fetch, and boot runs about 1.5 MB of
//!   functions spread over the whole 15 MB `.text`: without the script an idle corrald maps
//!   about 7.5 MB of its code, with it about 1.8 MB. The script names functions as the compiler
//!   mangled them, so another toolchain or other dependencies' versions leave part of it
//!   unmatched (memory, not correctness), and so does new code on those paths;
//!   `python3 daemon/layout/record.py --check BINARY` runs the binary under valgrind and says
//!   whether the script places what it runs.
//! - `-z pack-relative-relocs` (DT_RELR) stores the ~19,000 relative relocations of the
//!   position-independent executable in a few kB instead of 460 kB that the dynamic loader reads
//!   at every start. glibc runs such a binary from 2.36 on, so it is used only when building on
//!   glibc ≥ 2.36 for the same machine.
//!
//! Both need rustc's own lld, the default linker of `x86_64-unknown-linux-gnu` since Rust 1.90:
//! they are left out for other targets, older compilers, a linker chosen in `RUSTFLAGS` or
//! `.cargo/config.toml`, and when `CORRALD_PLAIN_LINK` is set.

use std::env;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=layout/boot.ld");
    println!("cargo::rerun-if-env-changed=CORRALD_PLAIN_LINK");
    if !default_lld() {
        return;
    }
    let manifest = env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let script = std::path::Path::new(&manifest).join("layout").join("boot.ld");
    // Optimised builds only: a debug build's functions are others, and its links (every test
    // run's) would take seconds longer for nothing. `-Wl,` splits its argument at commas.
    let optimised = env::var("OPT_LEVEL").is_ok_and(|level| level != "0");
    if optimised && script.is_file() && !script.to_string_lossy().contains(',') {
        println!("cargo::rustc-link-arg-bin=corrald=-Wl,-T,{}", script.display());
    }
    if native_glibc_with_relr() {
        println!("cargo::rustc-link-arg-bin=corrald=-Wl,-z,pack-relative-relocs");
    }
}

/// Whether the executable is linked by the lld that rustc ships and uses by default here.
fn default_lld() -> bool {
    if env::var_os("CORRALD_PLAIN_LINK").is_some() || env::var_os("RUSTC_LINKER").is_some() {
        return false;
    }
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    // A linker or linker flavour chosen by the user (`-C linker=`, `-fuse-ld=mold`,
    // `-C linker-features=-lld`, `-C link-self-contained=…`).
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|word| flags.contains(word))
    {
        return false;
    }
    rustc_minor().is_some_and(|minor| minor >= 90)
}

/// The minor version of the compiler cargo builds with (`1.MINOR.x`).
#[allow(
    clippy::disallowed_methods,
    reason = "the build script asks rustc its version; corrald's own spawn rule is for MCP servers"
)]
fn rustc_minor() -> Option<u32> {
    let rustc = env::var_os("RUSTC")?;
    let output = Command::new(rustc).arg("--version").output().ok()?;
    let version = String::from_utf8(output.stdout).ok()?;
    // `rustc 1.95.0 (59807616e 2026-04-14)`
    let release = version.split_whitespace().nth(1)?;
    let mut parts = release.split('.');
    (parts.next()? == "1").then_some(())?;
    parts.next()?.parse().ok()
}

/// Whether the binary is built for this machine and its glibc runs DT_RELR binaries (2.36+).
fn native_glibc_with_relr() -> bool {
    if env::var("HOST").ok() != env::var("TARGET").ok() {
        return false;
    }
    glibc_version().is_some_and(|(major, minor)| (major, minor) >= (2, 36))
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn glibc_version() -> Option<(u32, u32)> {
    unsafe extern "C" {
        fn gnu_get_libc_version() -> *const std::ffi::c_char;
    }
    // SAFETY: glibc returns a pointer to a static NUL-terminated string, e.g. "2.36".
    let version = unsafe { std::ffi::CStr::from_ptr(gnu_get_libc_version()) };
    let mut parts = version.to_str().ok()?.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn glibc_version() -> Option<(u32, u32)> {
    None
}
