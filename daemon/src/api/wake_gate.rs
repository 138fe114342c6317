//! A future polled only when it asked to be: its own waker fired (or it is
//! new), not at every wake of the task that holds it.
//!
//! A connection's reader waits on several things at once (the shutdown
//! token, its requests, the socket); a `select!` polls every one of them at
//! every wake, and most wakes are a request's answer. Polling the socket's
//! read again costs its readiness check and the shutdown token two locks,
//! each time. Behind a [`WakeGate`] (not `admission`'s connection `Gate`), each is polled when it was woken, and only
//! then.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

/// The gate of one future (one at a time: [`WakeGate::open`] for a new one).
pub(super) struct WakeGate {
    shared: Arc<Shared>,
    /// `shared` as a waker, made once.
    waker: Waker,
}

struct Shared {
    /// The task that holds the gated future.
    task: AtomicWaker,
    /// The future asked to be polled (or has not been yet).
    woken: AtomicBool,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.task.wake();
    }
}

impl WakeGate {
    /// A gate open for its first future.
    pub(super) fn new() -> Self {
        let shared = Arc::new(Shared {
            task: AtomicWaker::new(),
            woken: AtomicBool::new(true),
        });
        Self {
            waker: Waker::from(shared.clone()),
            shared,
        }
    }

    /// Open the gate for a new future, which has to be polled once to register its interest.
    pub(super) fn open(&self) {
        self.shared.woken.store(true, Ordering::SeqCst);
    }

    /// Poll `future` if it was woken since its last poll (or is new); `Pending` otherwise.
    pub(super) fn poll<F: Future + ?Sized>(&self, future: Pin<&mut F>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Registered before the look: a wake after it reaches this task.
        self.shared.task.register(cx.waker());
        if !self.shared.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        future.poll(&mut Context::from_waker(&self.waker))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A future that counts its polls and hands out the waker it was given last.
    #[derive(Default)]
    struct Probe {
        polls: usize,
        waker: Option<Waker>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls += 1;
            self.waker = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_gated_future_is_polled_when_new_and_when_it_woke_only() {
        let task = Arc::<Counting>::default();
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        let gate = WakeGate::new();
        let mut probe = std::pin::pin!(Probe::default());
        assert!(gate.poll(probe.as_mut(), &mut cx).is_pending());
        assert!(gate.poll(probe.as_mut(), &mut cx).is_pending());
        assert_eq!(probe.polls, 1, "the task's other wakes do not reach it");
        probe.waker.take().expect("registered").wake();
        assert_eq!(task.0.load(Ordering::SeqCst), 1, "its wake wakes the task");
        assert!(gate.poll(probe.as_mut(), &mut cx).is_pending());
        assert_eq!(probe.polls, 2);
        gate.open();
        assert!(gate.poll(probe.as_mut(), &mut cx).is_pending());
        assert_eq!(probe.polls, 3, "opened for a new future");
    }
}
