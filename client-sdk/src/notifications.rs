//! Notifications the daemon pushes, merged into one typed stream.
//!
//! jsonrpsee routes notifications by method name into one bounded buffer per
//! method (`subscribe_to_method`). [`Notifications`] polls those buffers and
//! yields [`ClientNotification`]s. The buffers are registered before
//! `initialize` is sent, so nothing the daemon pushes right after answering it
//! is lost.
//!
//! Overload is visible, never silent: when this client reads too slowly and a
//! buffer fills, jsonrpsee drops that method's buffer; the stream then ends
//! and [`Notifications::end_reason`] says [`NotificationsEnd::Overflowed`].
//! (The daemon's own `events/lagged` notice covers the other side: the daemon
//! could not write to this connection fast enough.)

use std::pin::Pin;
use std::task::{Context, Poll};

use corral_protocol::{
    DaemonNotification, EventsLagged, EventsLaggedNotification, Notification, StartupStatusUpdated,
    StartupStatusUpdatedNotification,
};
use futures_core::Stream;
use jsonrpsee::core::client::{Subscription, SubscriptionCloseReason};
use serde::{Deserialize, Serialize};

use crate::ClientError;

/// A notification from the daemon.
///
/// Serializes like the wire message without `jsonrpc`:
/// `{"method": "mcpServer/startupStatus/updated", "params": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", content = "params")]
#[non_exhaustive]
pub enum ClientNotification {
    /// `mcpServer/startupStatus/updated`: a server changed lifecycle status.
    #[serde(rename = "mcpServer/startupStatus/updated")]
    StartupStatusUpdated(StartupStatusUpdated),
    /// `events/lagged`: the daemon could not deliver some notifications to this
    /// connection; fetch them with `events/replay`.
    #[serde(rename = "events/lagged")]
    Lagged(EventsLagged),
}

impl ClientNotification {
    /// The daemon-wide sequence number; `None` for `events/lagged`, which is about this connection only.
    pub fn seq(&self) -> Option<u64> {
        match self {
            Self::StartupStatusUpdated(update) => Some(update.seq),
            Self::Lagged(_) => None,
        }
    }

    /// The method name on the wire.
    pub fn method(&self) -> &'static str {
        match self {
            Self::StartupStatusUpdated(_) => StartupStatusUpdatedNotification::METHOD,
            Self::Lagged(_) => EventsLaggedNotification::METHOD,
        }
    }

    /// The same notification as returned by `events/replay`; `None` for a kind
    /// this client does not know (sent by a newer daemon).
    pub fn from_replayed(notification: DaemonNotification) -> Option<Self> {
        match notification {
            DaemonNotification::StartupStatusUpdated(update) => Some(Self::StartupStatusUpdated(update)),
            _ => None,
        }
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

/// The daemon's notifications, in arrival order per method.
///
/// Get it once with [`Client::take_notifications`](crate::Client::take_notifications).
/// Items are `Err` only when a notification does not decode
/// ([`ClientError::Decode`]); the stream goes on after that. Order between
/// different methods is not guaranteed; order by
/// [`ClientNotification::seq`] when it matters.
#[derive(Debug)]
pub struct Notifications {
    startup_status: Option<Subscription<StartupStatusUpdated>>,
    lagged: Option<Subscription<EventsLagged>>,
    end: Option<NotificationsEnd>,
}

impl Notifications {
    pub(crate) fn new(startup_status: Subscription<StartupStatusUpdated>, lagged: Subscription<EventsLagged>) -> Self {
        Self {
            startup_status: Some(startup_status),
            lagged: Some(lagged),
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
        // `events/lagged` first: it is rare, so it cannot starve status updates.
        match poll_subscription(&mut this.lagged, cx) {
            Polled::Item(item) => {
                return Poll::Ready(Some(
                    item.map(ClientNotification::Lagged)
                        .map_err(|error| decode_error(EventsLaggedNotification::METHOD, error)),
                ));
            }
            Polled::Overflowed => return this.finish(NotificationsEnd::Overflowed),
            Polled::Closed | Polled::Pending => {}
        }
        match poll_subscription(&mut this.startup_status, cx) {
            Polled::Item(item) => {
                return Poll::Ready(Some(
                    item.map(ClientNotification::StartupStatusUpdated)
                        .map_err(|error| decode_error(StartupStatusUpdatedNotification::METHOD, error)),
                ));
            }
            Polled::Overflowed => return this.finish(NotificationsEnd::Overflowed),
            Polled::Closed | Polled::Pending => {}
        }
        // On a disconnect both buffers end; drain both before ending.
        if this.lagged.is_none() && this.startup_status.is_none() {
            return this.finish(NotificationsEnd::Disconnected);
        }
        Poll::Pending
    }
}

impl Notifications {
    fn finish(&mut self, end: NotificationsEnd) -> Poll<Option<Result<ClientNotification, ClientError>>> {
        self.end = Some(end);
        self.startup_status = None;
        self.lagged = None;
        Poll::Ready(None)
    }
}

enum Polled<T> {
    Item(Result<T, serde_json::Error>),
    /// This buffer filled and was dropped by jsonrpsee.
    Overflowed,
    /// This buffer ended because the connection closed (or it had already ended).
    Closed,
    Pending,
}

fn poll_subscription<T>(slot: &mut Option<Subscription<T>>, cx: &mut Context<'_>) -> Polled<T>
where
    T: serde::de::DeserializeOwned,
{
    let Some(subscription) = slot else {
        return Polled::Closed;
    };
    match Pin::new(&mut *subscription).poll_next(cx) {
        Poll::Ready(Some(item)) => Polled::Item(item),
        Poll::Ready(None) => {
            let overflowed = matches!(subscription.close_reason(), Some(SubscriptionCloseReason::Lagged));
            *slot = None;
            if overflowed { Polled::Overflowed } else { Polled::Closed }
        }
        Poll::Pending => Polled::Pending,
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
    use corral_protocol::{FailureReason, ServerStatus};

    #[test]
    fn notifications_serialize_like_wire_messages() {
        let update = ClientNotification::StartupStatusUpdated(StartupStatusUpdated::failed(
            18,
            "linear",
            FailureReason::ReauthenticationRequired,
            "log in again",
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
    }

    #[test]
    fn replayed_notifications_convert() {
        let replayed =
            DaemonNotification::StartupStatusUpdated(StartupStatusUpdated::new(3, "github", ServerStatus::Ready));
        let converted = ClientNotification::from_replayed(replayed).expect("known kind");
        assert_eq!(converted.seq(), Some(3));
        assert_eq!(converted.method(), StartupStatusUpdatedNotification::METHOD);
    }
}
