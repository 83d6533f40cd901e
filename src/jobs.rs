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
pub struct Notifier<S> {
    tx: Sender<Continuation<S>>,
    waker: Arc<mio::Waker>,
}

impl<S> Clone for Notifier<S> {
    fn clone(&self) -> Self {
        Notifier {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
        }
    }
}

impl<S> Notifier<S> {
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

/// A fixed pool of named worker threads.
pub struct JobPool<S> {
    tx: Option<Sender<Job<S>>>,
    notifier: Notifier<S>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl<S: 'static> JobPool<S> {
    /// Starts `workers` threads that deliver results through `notifier`.
    pub fn new(workers: usize, notifier: Notifier<S>) -> std::io::Result<JobPool<S>> {
        let (tx, rx) = crossbeam_channel::unbounded::<Job<S>>();
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let rx = rx.clone();
            let notifier = notifier.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("worker-{i}"))
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
            tx: Some(tx),
            notifier,
            threads,
        })
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

impl<S> Drop for JobPool<S> {
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
        let pool = JobPool::new(2, notifier).unwrap();
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
}
