//! A fixed set of threads for CPU work (decoding and preprocessing), fed by a queue.
//!
//! Each thread keeps its own buffers from job to job (thread-locals in [`crate::decode`]
//! and the pipeline's preprocessor), so the memory they hold is bounded by the number
//! of threads here — unlike a runtime's blocking pool, which grows to dozens of
//! threads under load and leaves each its own copy.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{mpsc, Arc, Mutex};

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// Threads that run closures handed to [`CpuPool::run`]; dropping the pool lets
/// them finish the queue and joins them.
pub struct CpuPool {
    queue: Option<mpsc::Sender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuPool {
    /// Start `threads` threads (at least one) named `{name}-{i}`.
    pub fn new(name: &str, threads: usize) -> Result<Self> {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let mut handles = Vec::with_capacity(threads.max(1));
        for i in 0..threads.max(1) {
            let rx = Arc::clone(&rx);
            let handle = std::thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || loop {
                    let job = {
                        let guard = match rx.lock() {
                            Ok(g) => g,
                            Err(poisoned) => poisoned.into_inner(),
                        };
                        guard.recv()
                    };
                    let Ok(job) = job else { break };
                    // A job that panics loses its own result (its caller sees the
                    // thread's answer go missing), not the thread.
                    let _ = catch_unwind(AssertUnwindSafe(job));
                })
                .map_err(|e| Error::Task(format!("cannot start a {name} thread: {e}")))?;
            handles.push(handle);
        }
        Ok(Self {
            queue: Some(tx),
            threads: handles,
        })
    }

    /// Run `f` on one of the threads and wait for its result.
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // Nobody waits any more (the run stopped): skip the work.
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        self.queue
            .as_ref()
            .ok_or_else(|| Error::Task("the CPU pool is closed".into()))?
            .send(job)
            .map_err(|_| Error::Task("the CPU pool's threads have stopped".into()))?;
        rx.await
            .map_err(|_| Error::Task("a CPU pool job panicked".into()))
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for CpuPool {
    fn drop(&mut self) {
        drop(self.queue.take());
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_on_the_pools_own_threads_only() {
        let pool = CpuPool::new("test-cpu", 2).unwrap();
        let mut names = std::collections::BTreeSet::new();
        let results = futures::future::join_all((0..40).map(|i| {
            let pool = &pool;
            async move {
                pool.run(move || {
                    (
                        i * 2,
                        std::thread::current().name().unwrap_or("").to_string(),
                    )
                })
                .await
                .unwrap()
            }
        }))
        .await;
        for (i, (doubled, name)) in results.into_iter().enumerate() {
            assert_eq!(doubled, i * 2);
            names.insert(name);
        }
        assert!(
            names.iter().all(|n| n.starts_with("test-cpu-")),
            "{names:?}"
        );
        assert!(names.len() <= 2);
    }

    #[tokio::test]
    async fn a_panicking_job_costs_its_result_not_the_thread() {
        let pool = CpuPool::new("test-panic", 1).unwrap();
        let err = pool.run(|| -> u32 { panic!("boom") }).await.unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        assert_eq!(pool.run(|| 7).await.unwrap(), 7);
    }
}
