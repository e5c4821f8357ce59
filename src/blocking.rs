//! CPU-heavy work (token counting, large JSON, redaction of large texts) off the request
//! workers: run on tokio's blocking threads, at most half the cores at once, so a few heavy
//! calls never stall the async workers that answer everyone else (`/health` included).
//! Imports nothing of ours.

use std::sync::LazyLock;

use tokio::sync::Semaphore;

/// Work on texts of at least this many bytes goes to the pool; smaller work costs less than
/// handing it over and stays inline.
pub const HEAVY_BYTES: usize = 16 * 1024;

/// At most half the cores (at least one) run heavy work at once; more waits its turn.
static PERMITS: LazyLock<Semaphore> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Semaphore::new((cores / 2).max(1))
});

/// Runs `f` on a blocking thread once a permit is free and returns its result. A panic in `f`
/// resumes in the caller, as if `f` had run inline.
pub async fn run<R, F>(f: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    // The semaphore is never closed, so acquiring only waits.
    let _permit = PERMITS.acquire().await;
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            // Cancelled: only when the runtime shuts down, which drops this future too.
            Err(_) => std::future::pending().await,
        },
    }
}

/// [`run`] when `heavy`, else `f` inline.
pub async fn run_if<R, F>(heavy: bool, f: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    if heavy {
        run(f).await
    } else {
        f()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn heavy_work_leaves_the_worker_free() {
        // The only worker thread stays free while a job blocks for as long as it likes: a
        // task spawned meanwhile runs before the job is released.
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let job = tokio::spawn(run(move || release_rx.recv().is_ok()));
        let other = tokio::spawn(async { 42 }).await.unwrap();
        assert_eq!(other, 42);
        release_tx.send(()).unwrap();
        assert!(job.await.unwrap());
    }

    #[tokio::test]
    async fn a_panic_comes_back_to_the_caller() {
        let caught = tokio::spawn(run(|| -> u8 { panic!("boom") })).await;
        assert!(caught.unwrap_err().is_panic());
        assert_eq!(run_if(false, || 7).await, 7);
    }
}
