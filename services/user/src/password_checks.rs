//! The one gate every password check (an argon2id hash or verification, 19 MiB of memory
//! each by default) passes through. CreateUser and Login are public: without a bound, a few
//! hundred concurrent calls need gigabytes. At most `concurrency` checks run at once, at most
//! `queue` more wait for a slot, and a call beyond that is answered RESOURCE_EXHAUSTED at once,
//! before it has written anything (docs/contract.md, "Bounds").
//!
//! The checks run on threads of their own, `concurrency` of them, at a lower scheduling
//! priority (nice +10): a flood of logins takes the CPU only when nothing else wants it, so the
//! other calls of the process, and the other services on the machine, keep their latency (the
//! figures are in docs/bounds.md).

use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::UserError;
use crate::config::PasswordCheckLimits;

/// The gate, shared by every call of the process.
#[derive(Debug, Clone)]
pub(crate) struct PasswordChecks {
    /// Running and waiting calls together: `concurrency + queue` permits.
    admitted: Arc<Semaphore>,
    /// Running checks: `concurrency` permits.
    running: Arc<Semaphore>,
    /// The checks' threads; they stop when the last clone of the gate is dropped.
    threads: CheckThreads,
}

/// A check handed to the threads.
type Job = Box<dyn FnOnce() + Send>;

/// `concurrency` threads at a lower priority, taking checks from one channel.
#[derive(Debug, Clone)]
struct CheckThreads {
    jobs: mpsc::Sender<Job>,
}

/// How much lower than the rest of the process the checks run (nice +10: about a tenth of
/// the CPU share of a normal thread when both want it).
const NICE: libc::c_int = 10;

impl CheckThreads {
    fn start(count: usize) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..count {
            let queue = Arc::clone(&queue);
            let spawned = std::thread::Builder::new()
                .name(format!("password-check-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            // A check that panics answers nothing (its caller gets an
                            // error); the thread goes on.
                            Ok(job) => {
                                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                            }
                            Err(_) => return, // the gate is gone
                        }
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password-check thread");
            }
        }
        Self { jobs }
    }
}

/// Lowers the calling thread's scheduling priority by [`NICE`] (on Linux, `setpriority` with a
/// thread id applies to that thread alone). A failure only costs the neighbours some latency.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: plain system calls on the calling thread, no pointers.
        let done = unsafe {
            let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
            let now = libc::getpriority(libc::PRIO_PROCESS, tid);
            libc::setpriority(libc::PRIO_PROCESS, tid, now.saturating_add(NICE))
        };
        if done != 0 {
            tracing::warn!("cannot lower the password-check thread's priority");
        }
    }
}

/// A call let through the gate: it may run password checks until it is dropped.
#[derive(Debug)]
pub(crate) struct Admission {
    _admitted: OwnedSemaphorePermit,
    running: Arc<Semaphore>,
    jobs: mpsc::Sender<Job>,
}

impl PasswordChecks {
    pub(crate) fn new(limits: PasswordCheckLimits) -> Self {
        let concurrency = limits.concurrency.max(1);
        Self {
            admitted: Arc::new(Semaphore::new(concurrency + limits.queue)),
            running: Arc::new(Semaphore::new(concurrency)),
            threads: CheckThreads::start(concurrency),
        }
    }

    /// Lets the call in, or answers at once that too many checks are in progress. Call it
    /// before the call writes anything.
    pub(crate) fn admit(&self) -> Result<Admission, UserError> {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| UserError::TooManyPasswordChecks)?;
        Ok(Admission {
            _admitted: admitted,
            running: Arc::clone(&self.running),
            jobs: self.threads.jobs.clone(),
        })
    }
}

impl Admission {
    /// Runs the CPU- and memory-bound `check` on a check thread once a running slot is free.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        check: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, UserError> {
        let slot = Arc::clone(&self.running)
            .acquire_owned()
            .await
            .map_err(|e| UserError::from(anyhow::Error::from(e)))?;
        let (done, result) = tokio::sync::oneshot::channel();
        self.jobs
            .send(Box::new(move || {
                let _ = done.send(check());
                drop(slot);
            }))
            .map_err(|_| UserError::from(anyhow::anyhow!("the password-check threads are gone")))?;
        result.await.map_err(|_| {
            UserError::from(anyhow::anyhow!("a password check ended without an answer"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_beyond_the_running_and_waiting_ones_are_turned_away_at_once() {
        let checks = PasswordChecks::new(PasswordCheckLimits {
            concurrency: 2,
            queue: 3,
        });
        let admitted: Vec<_> = (0..5).map(|_| checks.admit().expect("admitted")).collect();
        assert!(matches!(
            checks.admit(),
            Err(UserError::TooManyPasswordChecks)
        ));
        drop(admitted);
        assert!(checks.admit().is_ok(), "a finished call frees its place");
    }

    #[tokio::test]
    async fn no_more_than_the_concurrency_run_at_once() {
        let checks = PasswordChecks::new(PasswordCheckLimits {
            concurrency: 2,
            queue: 10,
        });
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let peak = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut calls = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let admission = checks.admit().expect("admitted");
            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
            calls.spawn(async move {
                admission
                    .run(move || {
                        use std::sync::atomic::Ordering::SeqCst;
                        let now = running.fetch_add(1, SeqCst) + 1;
                        peak.fetch_max(now, SeqCst);
                        // Work that takes a while, so that the calls overlap.
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        running.fetch_sub(1, SeqCst);
                    })
                    .await
            });
        }
        while let Some(result) = calls.join_next().await {
            result.expect("joined").expect("ran");
        }
        let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
        assert!((1..=2).contains(&peak), "{peak} checks ran at once");
    }
}
