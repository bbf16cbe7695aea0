//! Expensive CPU work (password hashes) off the async runtime, on a
//! bounded pool shared by the whole process.
//!
//! An Argon2id hash takes tens of milliseconds of one core and 19 MiB.
//! Run on the async runtime, a handful of them stall every function the
//! process hosts; run unbounded on blocking threads, a burst of sign-ups
//! exhausts memory. So each runs on a blocking thread holding one of a
//! fixed number of permits (one per core by default): at most that many
//! at once, each waiting at most [`CpuPool::wait`] for its turn, after
//! which the caller is told to come back ([`Busy`], a 503 at the edge).

use std::sync::OnceLock;
use std::time::Duration;

use tokio::sync::Semaphore;

/// A bounded pool for expensive CPU work.
#[derive(Debug)]
pub struct CpuPool {
    permits: Semaphore,
    size: usize,
    wait: Duration,
}

/// The pool was full for longer than its wait: come back later.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("busy: {running} expensive operations are running and none finished within {waited:?}; try again in a second")]
pub struct Busy {
    /// Operations the pool runs at once.
    pub running: usize,
    /// How long this one waited.
    pub waited: Duration,
}

/// How long work waits for a free slot before [`Busy`].
pub const DEFAULT_WAIT: Duration = Duration::from_millis(500);

impl CpuPool {
    /// A pool running at most `size` (at least one) at once, each waiting
    /// at most `wait` for its turn.
    pub fn new(size: usize, wait: Duration) -> Self {
        let size = size.max(1);
        Self { permits: Semaphore::new(size), size, wait }
    }

    /// The process's pool: one slot per core (`JETSAGA_CPU_POOL` overrides).
    pub fn shared() -> &'static CpuPool {
        static POOL: OnceLock<CpuPool> = OnceLock::new();
        POOL.get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, usize::from);
            let size = std::env::var("JETSAGA_CPU_POOL").ok().and_then(|v| v.parse().ok()).unwrap_or(cores);
            CpuPool::new(size, DEFAULT_WAIT)
        })
    }

    /// Operations it runs at once.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `work` on a blocking thread once a slot is free, or answers
    /// [`Busy`] if none frees up within the pool's wait.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let busy = Busy { running: self.size, waited: self.wait };
        let permit = match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(busy),
        };
        // The permit is held until the work is done, even if the caller
        // stops waiting: the thread runs to the end either way.
        let result = tokio::task::spawn_blocking(work).await;
        drop(permit);
        result.map_err(|_| busy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_size_run_at_once_and_the_rest_are_refused_after_the_wait() {
        let pool = Arc::new(CpuPool::new(2, Duration::from_millis(100)));
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (pool, running, most) = (pool.clone(), running.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(300));
                    running.fetch_sub(1, Ordering::SeqCst);
                })
                .await
            }));
        }
        let mut done = 0;
        let mut busy = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => done += 1,
                Err(e) => {
                    assert_eq!(e.running, 2);
                    busy += 1;
                }
            }
        }
        assert_eq!(most.load(Ordering::SeqCst), 2, "never more than the pool's size at once");
        assert_eq!((done, busy), (2, 6), "the rest waited 100 ms and were refused");
        // The runtime was never blocked: a timer fires on time meanwhile.
        let started = std::time::Instant::now();
        let again = pool.run(|| 7).await.unwrap();
        assert_eq!(again, 7);
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
