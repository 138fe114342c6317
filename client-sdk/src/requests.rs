//! Requests the daemon sends to this front-end: MCP servers' questions (elicitation, sampling)
//! forwarded to the application that declared it can answer them.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_core::Stream;
use tokio::sync::mpsc;

pub use crate::connection::IncomingRequest;

/// The daemon's requests to this front-end, in arrival order.
///
/// Get it once with [`Client::take_requests`](crate::Client::take_requests) after connecting with
/// [`ConnectOptions::capabilities`](crate::ConnectOptions::capabilities). Answer each
/// [`IncomingRequest`]; one dropped unanswered is answered with an error for you. The stream ends
/// when the connection closes.
#[derive(Debug)]
pub struct DaemonRequests {
    queue: mpsc::Receiver<IncomingRequest>,
}

impl DaemonRequests {
    pub(crate) fn new(queue: mpsc::Receiver<IncomingRequest>) -> Self {
        Self { queue }
    }

    /// The next request; `None` once the connection has closed.
    pub async fn next(&mut self) -> Option<IncomingRequest> {
        self.queue.recv().await
    }
}

impl Stream for DaemonRequests {
    type Item = IncomingRequest;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<IncomingRequest>> {
        self.get_mut().queue.poll_recv(cx)
    }
}
