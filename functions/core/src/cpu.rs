//! Expensive CPU work (password hashes) off the async runtime, on a
//! bounded pool shared by the whole process.
//!
//! An Argon2id hash takes tens of milliseconds of one core and 19 MiB.
//! Run on the async runtime, a handful of them stall every function the
//! process hosts; run unbounded on blocking threads, a burst of sign-ups
//! exhausts memory. So each runs on one of a fixed set of threads (one per
//! core by default): at most that many at once, each waiting at most
//! [`CpuPool`]'s wait for its turn, after which the caller is told to come
//! back ([`Busy`], a 503 at the edge). Fixed threads, not tokio's blocking
//! pool, whose threads come and go: glibc's allocator keeps freed blocks
//! in per-thread arenas, so the memory kept is bounded by the threads that
//! ever hashed.

use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use tokio::sync::{Semaphore, oneshot};

type Job = Box<dyn FnOnce() + Send>;

/// A bounded pool for expensive CPU work.
#[derive(Debug)]
pub struct CpuPool {
    permits: Semaphore,
    size: usize,
    wait: Duration,
    jobs: mpsc::SyncSender<Job>,
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
    /// A pool of `size` threads (at least one), each job waiting at most
    /// `wait` for its turn.
    pub fn new(size: usize, wait: Duration) -> Self {
        let size = size.max(1);
        let (jobs, queue) = mpsc::sync_channel::<Job>(size);
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..size {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("jetsaga-cpu-{i}"))
                .spawn(move || {
                    loop {
                        let job = queue.lock().expect("the pool's queue lock is never poisoned").recv();
                        match job {
                            Ok(job) => job(),
                            Err(_) => return, // the pool is gone
                        }
                    }
                })
                .expect("a thread for the CPU pool starts");
        }
        Self { permits: Semaphore::new(size), size, wait, jobs }
    }

    /// The process's pool: one thread per core (`JETSAGA_CPU_POOL` overrides).
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

    /// Runs `work` on one of the pool's threads once one is free, or
    /// answers [`Busy`] if none frees up within the pool's wait.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Busy> {
        let busy = Busy { running: self.size, waited: self.wait };
        let permit = match tokio::time::timeout(self.wait, self.permits.acquire()).await {
            Ok(Ok(permit)) => permit,
            _ => return Err(busy),
        };
        let (done, result) = oneshot::channel();
        // Holding a permit means a thread is free or about to be: the queue
        // (as long as the pool is large) never makes this wait.
        let job: Job = Box::new(move || {
            let _ = done.send(work());
        });
        if self.jobs.try_send(job).is_err() {
            return Err(busy);
        }
        // The permit is held until the work is done, even if the caller
        // stops waiting: the thread runs it to the end either way.
        let result = result.await;
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
