//! The conversion worker pool: a fixed set of OS threads that run CPU-bound
//! jobs, so that conversions never occupy the async runtime's threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send + 'static>;

/// A job ended without a result: it panicked, or the pool is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the conversion worker stopped without a result (it panicked or the pool shut down)")]
pub struct JobLost;

/// A fixed-size pool of named threads fed from one queue.
///
/// Jobs are admitted by the service's permits before they get here, so the
/// queue in front of the threads never holds more than the permit count.
#[derive(Clone)]
pub struct WorkerPool {
    sender: mpsc::Sender<Job>,
    size: usize,
}

impl WorkerPool {
    /// Starts `size` threads (at least one).
    pub fn new(size: usize) -> std::io::Result<WorkerPool> {
        let size = size.max(1);
        let (sender, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for i in 0..size {
            let receiver = Arc::clone(&receiver);
            thread::Builder::new()
                .name(format!("opusgate-convert-{i}"))
                .spawn(move || loop {
                    let job = {
                        let guard = receiver.lock().unwrap_or_else(|e| e.into_inner());
                        guard.recv()
                    };
                    match job {
                        // A panicking job must not take its thread down with it.
                        Ok(job) => {
                            let _ = catch_unwind(AssertUnwindSafe(job));
                        }
                        Err(_) => return,
                    }
                })?;
        }
        Ok(WorkerPool { sender, size })
    }

    /// Number of threads.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Runs `f` on a pool thread and waits for its result without blocking
    /// the async thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, JobLost>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(f());
        });
        self.sender.send(job).map_err(|_| JobLost)?;
        rx.await.map_err(|_| JobLost)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_off_the_async_thread_and_survives_panics() {
        let pool = WorkerPool::new(2).unwrap();
        let name = pool
            .run(|| thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(name.unwrap().starts_with("opusgate-convert-"));
        let lost = pool.run(|| -> u32 { panic!("boom") }).await;
        assert_eq!(lost, Err(JobLost));
        // Both threads are still there to take work.
        let (a, b) = tokio::join!(pool.run(|| 1), pool.run(|| 2));
        assert_eq!((a, b), (Ok(1), Ok(2)));
    }
}
