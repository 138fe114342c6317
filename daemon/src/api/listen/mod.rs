//! Where front-ends connect: the Unix socket ([`unix`]) or, on Windows, the
//! named pipe (`windows`).

#[cfg(unix)]
pub mod unix;
#[cfg(windows)]
pub mod windows;
