//! Notifications the daemon pushes, merged into one typed stream.
//!
//! The connection's reader puts every notification of a known kind, in arrival
//! order, into one bounded queue; [`Notifications`] decodes them into
//! [`ClientNotification`]s. The queue exists before `initialize` is sent, so
//! nothing the daemon pushes right after answering it is lost. Kinds this
//! client does not know (a newer daemon's) are skipped.
//!
//! Overload is visible, never silent: when this client reads too slowly and the
//! queue fills, the reader closes it; the stream ends after what was queued
//! and [`Notifications::end_reason`] says [`NotificationsEnd::Overflowed`].
//! (The daemon's own `events/lagged` notice covers the other side: the daemon
//! could not write to this connection fast enough.)

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use corral_protocol::{DaemonNotification, EventsLagged, EventsLaggedNotification, Notification};
use futures_core::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::ClientError;
use crate::connection::RawNotification;

/// A notification from the daemon: a daemon event (every kind the protocol
/// defines, each with a `seq`), or this connection's `events/lagged` notice.
///
/// Serializes like the wire message without `jsonrpc`:
/// `{"method": "mcpServer/startupStatus/updated", "params": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientNotification {
    /// A daemon event, as the protocol defines it (also what `events/replay` returns).
    Daemon(DaemonNotification),
    /// `events/lagged`: the daemon could not deliver some notifications to this
    /// connection; fetch them with `events/replay`.
    Lagged(EventsLagged),
}

/// Every notification method the client understands.
pub(crate) fn methods() -> impl Iterator<Item = &'static str> {
    std::iter::once(EventsLaggedNotification::METHOD).chain(DaemonNotification::METHODS)
}

impl ClientNotification {
    /// The daemon-wide sequence number; `None` for `events/lagged`, which is about this connection only.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::Daemon(notification) => Some(notification.seq()),
            Self::Lagged(_) => None,
        }
    }

    /// The method name on the wire.
    pub fn method(&self) -> &'static str {
        match self {
            Self::Daemon(notification) => notification.method(),
            Self::Lagged(_) => EventsLaggedNotification::METHOD,
        }
    }

    /// The same notification as returned by `events/replay`.
    pub fn from_replayed(notification: DaemonNotification) -> Self {
        Self::Daemon(notification)
    }

    /// Decode a notification received as `method` with `params`.
    fn decode(method: &str, params: Value) -> Result<Self, serde_json::Error> {
        if method == EventsLaggedNotification::METHOD {
            return serde_json::from_value(params).map(Self::Lagged);
        }
        let mut message = serde_json::Map::with_capacity(2);
        message.insert("method".to_owned(), Value::String(method.to_owned()));
        message.insert("params".to_owned(), params);
        serde_json::from_value(Value::Object(message)).map(Self::Daemon)
    }
}

impl Serialize for ClientNotification {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Daemon(notification) => notification.serialize(serializer),
            Self::Lagged(lagged) => serde_json::json!({ "method": EventsLaggedNotification::METHOD, "params": lagged })
                .serialize(serializer),
        }
    }
}

impl<'de> Deserialize<'de> for ClientNotification {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut message = serde_json::Map::deserialize(deserializer)?;
        let method = match message.get("method") {
            Some(Value::String(method)) => method.clone(),
            _ => return Err(serde::de::Error::missing_field("method")),
        };
        let params = message.remove("params").unwrap_or(Value::Null);
        Self::decode(&method, params).map_err(serde::de::Error::custom)
    }
}

/// Why a [`Notifications`] stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum NotificationsEnd {
    /// The connection closed, or the [`Client`](crate::Client) was dropped.
    Disconnected,
    /// This client did not read notifications fast enough and its buffer
    /// filled; later notifications were lost. Reconnect, re-read state, and
    /// use `events/replay` to catch up.
    Overflowed,
}

/// The daemon's notifications, in arrival order.
///
/// Get it once with [`Client::take_notifications`](crate::Client::take_notifications).
/// Items are `Err` only when a notification does not decode
/// ([`ClientError::Decode`]); the stream goes on after that.
#[derive(Debug)]
pub struct Notifications {
    queue: mpsc::Receiver<RawNotification>,
    /// Set by the reader when the queue filled and it stopped filling it.
    overflowed: Arc<AtomicBool>,
    end: Option<NotificationsEnd>,
}

impl Notifications {
    pub(crate) fn new(queue: mpsc::Receiver<RawNotification>, overflowed: Arc<AtomicBool>) -> Self {
        Self {
            queue,
            overflowed,
            end: None,
        }
    }

    /// The next notification; `None` once the stream has ended (see [`Notifications::end_reason`]).
    pub async fn next(&mut self) -> Option<Result<ClientNotification, ClientError>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Why the stream ended; `None` while it is still open.
    pub fn end_reason(&self) -> Option<NotificationsEnd> {
        self.end
    }
}

impl Stream for Notifications {
    type Item = Result<ClientNotification, ClientError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.end.is_some() {
            return Poll::Ready(None);
        }
        match this.queue.poll_recv(cx) {
            Poll::Ready(Some((method, params))) => {
                let decoded = ClientNotification::decode(&method, params).map_err(|error| decode_error(&method, error));
                Poll::Ready(Some(decoded))
            }
            Poll::Ready(None) => {
                // Everything queued before the end has been handed out.
                this.end = Some(if this.overflowed.load(Ordering::Acquire) {
                    NotificationsEnd::Overflowed
                } else {
                    NotificationsEnd::Disconnected
                });
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

fn decode_error(method: &str, error: serde_json::Error) -> ClientError {
    ClientError::Decode {
        method: method.to_owned(),
        error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_protocol::{FailureReason, ServerStatus, StartupStatusUpdated, StartupStatusUpdatedNotification};

    #[test]
    fn notifications_serialize_like_wire_messages() {
        let update = ClientNotification::Daemon(DaemonNotification::StartupStatusUpdated(
            StartupStatusUpdated::failed(18, "linear", FailureReason::ReauthenticationRequired, "log in again"),
        ));
        let json = serde_json::to_value(&update).expect("serialize");
        assert_eq!(json["method"], StartupStatusUpdatedNotification::METHOD);
        assert_eq!(json["params"]["seq"], 18);
        assert_eq!(json["params"]["failureReason"], "reauthenticationRequired");
        let back: ClientNotification = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, update);

        let lagged = ClientNotification::Lagged(EventsLagged::new(5, 10));
        let json = serde_json::to_value(&lagged).expect("serialize");
        assert_eq!(json["method"], EventsLaggedNotification::METHOD);
        assert_eq!(json["params"]["lastMissedSeq"], 14);
        assert_eq!(lagged.seq(), None);
        assert_eq!(lagged.method(), EventsLaggedNotification::METHOD);
        let back: ClientNotification = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, lagged);
    }

    #[test]
    fn replayed_notifications_convert() {
        let replayed =
            DaemonNotification::StartupStatusUpdated(StartupStatusUpdated::new(3, "github", ServerStatus::Ready));
        let converted = ClientNotification::from_replayed(replayed);
        assert_eq!(converted.seq(), Some(3));
        assert_eq!(converted.method(), StartupStatusUpdatedNotification::METHOD);
    }
}
