//! Worker threads for blocking work, and the way results get back to the event loop.
//!
//! Anything that may wait — running tmux, reading /proc, signalling and waiting for a
//! process tree — runs here. A job returns a [`Continuation`], a closure the event loop runs
//! with its own state; [`Notifier::send`] queues it and wakes the loop in one call, so no
//! result can sit unnoticed.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

/// Work the event loop runs with its state once a job is done. `S` is the loop's state type.
pub type Continuation<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A blocking job: runs on a worker and produces a continuation for the loop.
type Job<S> = Box<dyn FnOnce() -> Continuation<S> + Send>;

/// Queues continuations for the event loop and wakes it.
pub struct Notifier<S: ?Sized> {
    tx: Sender<Continuation<S>>,
    waker: Arc<mio::Waker>,
}

impl<S: ?Sized> Clone for Notifier<S> {
    fn clone(&self) -> Self {
        Notifier {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<S: ?Sized> Notifier<S> {
    /// A notifier and the receiving end the loop drains after each wake-up.
    pub fn new(waker: Arc<mio::Waker>) -> (Notifier<S>, Receiver<Continuation<S>>) {
        let (tx, rx) = crossbeam_channel::unbounded();
        (Notifier { tx, waker }, rx)
    }

    /// Queues `continuation` and wakes the loop. Fails only once the loop has gone.
    pub fn send(&self, continuation: Continuation<S>) -> bool {
        if self.tx.send(continuation).is_err() {
            return false;
        }
        // A failed wake means the poller is gone, i.e. the loop is shutting down.
        self.waker.wake().is_ok()
    }
}

/// A fixed pool of named worker threads with a bounded queue.
///
/// The daemon keeps one pool per kind of work, so that slow work (git, test runs, waiting
/// for a process tree to die) can never hold up quick work (tmux commands, /proc reads)
/// that unrelated requests wait for. Work a request asks for is admitted only while
/// [`JobPool::has_room`]; otherwise the request is answered `503 OVERLOADED` at once rather
/// than waiting behind a backlog. The daemon's own follow-up work (re-arming a pipe,
/// reading an exit status) is always queued: it is bounded by the number of agents and tasks.
pub struct JobPool<S: ?Sized> {
    name: &'static str,
    tx: Option<Sender<Job<S>>>,
    notifier: Notifier<S>,
    threads: Vec<std::thread::JoinHandle<()>>,
    max_queued: usize,
}

impl<S: ?Sized + 'static> JobPool<S> {
    /// Starts `workers` threads named `{name}-{i}` that deliver results through
    /// `notifier`; requests are admitted while fewer than `max_queued` jobs wait.
    pub fn new(
        name: &'static str,
        workers: usize,
        max_queued: usize,
        notifier: Notifier<S>,
    ) -> std::io::Result<JobPool<S>> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job<S>>();
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let rx = rx.clone();
            let notifier = notifier.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || {
                        for job in rx.iter() {
                            let continuation = job();
                            if !notifier.send(continuation) {
                                break;
                            }
                        }
                    })?,
            );
        }
        Ok(JobPool {
            name,
            tx: Some(tx),
            notifier,
            threads,
            max_queued,
        })
    }

    /// The pool's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether a request's job may be queued now: fewer than the pool's `max_queued` jobs
    /// are waiting for a worker.
    pub fn has_room(&self) -> bool {
        self.queued() < self.max_queued
    }

    /// Runs `job` on a worker; its continuation later runs on the loop.
    pub fn run(&self, job: impl FnOnce() -> Continuation<S> + Send + 'static) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Box::new(job));
        }
    }

    /// A notifier for threads outside the pool that also report to the loop.
    pub fn notifier(&self) -> Notifier<S> {
        self.notifier.clone()
    }

    /// Number of jobs waiting for a worker.
    pub fn queued(&self) -> usize {
        self.tx.as_ref().map_or(0, Sender::len)
    }
}

impl<S: ?Sized> Drop for JobPool<S> {
    fn drop(&mut self) {
        // Closing the queue lets idle workers exit; busy ones finish their job first. We do
        // not join: a worker stuck on a hung tmux must not keep the process alive.
        self.tx.take();
        self.threads.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuations_reach_the_loop_and_wake_it() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (notifier, rx) = Notifier::<Vec<u32>>::new(waker);
        let pool = JobPool::new("test", 2, 100, notifier).unwrap();
        for i in 0..10u32 {
            pool.run(move || Box::new(move |state: &mut Vec<u32>| state.push(i)));
        }
        let mut state = Vec::new();
        let mut events = mio::Events::with_capacity(4);
        while state.len() < 10 {
            poll.poll(&mut events, None).unwrap();
            for continuation in rx.try_iter() {
                continuation(&mut state);
            }
        }
        state.sort();
        assert_eq!(state, (0..10).collect::<Vec<_>>());
    }

    #[test]
    fn a_full_queue_has_no_room_until_a_worker_takes_a_job() {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (notifier, _rx) = Notifier::<()>::new(waker);
        let pool = JobPool::new("test", 1, 2, notifier).unwrap();
        let (started_tx, started) = crossbeam_channel::bounded::<()>(1);
        let (release_tx, release) = crossbeam_channel::bounded::<()>(0);
        pool.run(move || {
            started_tx.send(()).unwrap();
            release.recv().unwrap();
            Box::new(|_: &mut ()| {})
        });
        started.recv().unwrap();
        assert!(pool.has_room());
        pool.run(|| Box::new(|_: &mut ()| {}));
        assert!(pool.has_room(), "one job waits, the limit is two");
        pool.run(|| Box::new(|_: &mut ()| {}));
        assert!(!pool.has_room(), "two jobs wait");
        assert_eq!(pool.queued(), 2);
        release_tx.send(()).unwrap();
    }
}
