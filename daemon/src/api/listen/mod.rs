//! Where front-ends connect: the Unix socket ([`unix`]) or, on Windows, the
//! named pipe (`windows`). Each platform only binds and accepts (an
//! `Accept`); the accept loop that admits, counts, logs and serves is one
//! body for both (`api::serve`), so a failed accept is survived the
//! same way everywhere.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite};

use crate::api::connection::HungUp;

#[cfg(unix)]
pub mod unix;
#[cfg(windows)]
pub mod windows;

/// What a connection accepted from this user comes with.
pub(crate) struct Accepted<S> {
    /// The connection's byte stream.
    pub(crate) stream: S,
    /// Whether the front-end has closed the connection entirely, asked at end of stream.
    pub(crate) hung_up: HungUp,
}

/// A platform's way to accept front-end connections.
pub(crate) trait Accept: Send {
    /// The stream of one connection.
    type Stream: AsyncRead + AsyncWrite + Send + 'static;

    /// The next connection. `Ok(None)`: one was accepted and refused (another
    /// user's; already logged). An error is of accepting itself (typically
    /// `EMFILE`): the loop backs off and tries again, never ends on it.
    fn accept(&mut self) -> impl Future<Output = std::io::Result<Option<Accepted<Self::Stream>>>> + Send;
}
