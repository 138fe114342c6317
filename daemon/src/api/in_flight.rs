//! A connection's requests in flight: futures its reader polls between reads
//! (`dispatch.rs` adds them, `connection.rs` runs them), not a task each.
//!
//! A `FuturesUnordered` polls only the futures that were woken, but after it
//! has polled every future it holds once it wakes its own task "to avoid
//! starving other tasks" (futures-rs #2333). For a reader that has just
//! dispatched one call that is a second run of the whole connection task per
//! request: the socket, the shutdown token and the frame timer polled again
//! for nothing. [`InFlight::poll_run`] gives the set a waker of its own that only
//! records a wake arriving while the set is being polled; the set is then
//! polled once more at once (what was really woken runs; an empty ready
//! queue answers `Pending` without a wake), and only a set still woken after
//! that wakes the task. The reader polls it between reads (`connection.rs`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::Stream as _;
use futures_util::stream::FuturesUnordered;
use futures_util::task::AtomicWaker;

/// A request's future (or a batch's): borrows the connection's dispatcher.
pub(super) type RequestFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// How often the set is polled again at once after a wake that came while it
/// was polled, before the task is woken instead (a future that keeps waking
/// itself still lets the runtime run others).
const REPOLLS: usize = 2;

/// The requests of one connection, run by its reader.
pub(super) struct InFlight<'a> {
    futures: FuturesUnordered<RequestFuture<'a>>,
    shared: Arc<SetWaker>,
    /// `shared` as a waker, made once.
    waker: Waker,
}

/// The waker the set's futures wake: the reader's task, unless the set is
/// being polled (then the wake is noted, and [`InFlight::poll_run`] polls again).
#[derive(Default)]
struct SetWaker {
    task: AtomicWaker,
    polling: AtomicBool,
    woken_while_polling: AtomicBool,
}

impl Wake for SetWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if self.polling.load(Ordering::SeqCst) {
            self.woken_while_polling.store(true, Ordering::SeqCst);
            // Still polling after the note: the poller reads it once it stops (it clears
            // `polling` before it reads the note). Stopped meanwhile: it may have read the
            // note already, so the task is woken (at worst once too often).
            if self.polling.load(Ordering::SeqCst) {
                return;
            }
        }
        self.task.wake();
    }
}

impl<'a> InFlight<'a> {
    pub(super) fn new() -> Self {
        let shared = Arc::<SetWaker>::default();
        Self {
            futures: FuturesUnordered::new(),
            waker: Waker::from(shared.clone()),
            shared,
        }
    }

    /// Add a request; it is first polled at the next [`InFlight::poll_run`].
    pub(super) fn push(&mut self, future: RequestFuture<'a>) {
        self.futures.push(future);
    }

    pub(super) fn len(&self) -> usize {
        self.futures.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.futures.is_empty()
    }

    /// Run the requests until none is left.
    pub(super) async fn finish(&mut self) {
        std::future::poll_fn(|cx| self.poll_run(cx)).await;
    }

    /// Poll the woken requests until none of them is ready to run;
    /// `Ready` once the set is empty.
    pub(super) fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.shared.task.register(cx.waker());
        let mut own = Context::from_waker(&self.waker);
        let mut repolls = 0;
        loop {
            self.shared.polling.store(true, Ordering::SeqCst);
            let next = Pin::new(&mut self.futures).poll_next(&mut own);
            self.shared.polling.store(false, Ordering::SeqCst);
            let woken = self.shared.woken_while_polling.swap(false, Ordering::SeqCst);
            match next {
                Poll::Ready(Some(())) => {}
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending if !woken => return Poll::Pending,
                Poll::Pending if repolls < REPOLLS => repolls += 1,
                Poll::Pending => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A task's waker that counts its wakes.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.wake_by_ref();
        }

        fn wake_by_ref(self: &Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn task() -> (Arc<Counting>, Waker) {
        let counting = Arc::<Counting>::default();
        (counting.clone(), Waker::from(counting))
    }

    /// A future that wakes itself `times` times (as a yield does), then completes.
    fn yielding(times: usize) -> RequestFuture<'static> {
        let mut left = times;
        Box::pin(std::future::poll_fn(move |cx| {
            if left == 0 {
                return Poll::Ready(());
            }
            left -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }))
    }

    #[test]
    fn a_request_that_waits_does_not_wake_the_reader_again() {
        let (woken, waker) = task();
        let mut in_flight = InFlight::new();
        in_flight.push(Box::pin(std::future::pending()));
        assert!(in_flight.poll_run(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(
            woken.0.load(Ordering::SeqCst),
            0,
            "FuturesUnordered's own yield is not passed on"
        );
        assert_eq!(in_flight.len(), 1);
    }

    #[test]
    fn a_request_that_yields_runs_again_at_once_and_one_that_keeps_yielding_wakes_the_reader() {
        let (woken, waker) = task();
        let mut in_flight = InFlight::new();
        in_flight.push(yielding(1));
        assert!(in_flight.poll_run(&mut Context::from_waker(&waker)).is_ready());
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        assert!(in_flight.is_empty());

        in_flight.push(yielding(usize::MAX));
        assert!(in_flight.poll_run(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "the runtime gets its turn");
    }

    #[test]
    fn a_request_woken_later_wakes_the_reader_and_completes() {
        let (woken, waker) = task();
        let mut in_flight = InFlight::new();
        let (answer, answered) = tokio::sync::oneshot::channel::<()>();
        in_flight.push(Box::pin(async move {
            let _ = answered.await;
        }));
        assert!(in_flight.poll_run(&mut Context::from_waker(&waker)).is_pending());
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        answer.send(()).expect("the request waits");
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(in_flight.poll_run(&mut Context::from_waker(&waker)).is_ready());
        assert!(in_flight.is_empty());
    }
}
