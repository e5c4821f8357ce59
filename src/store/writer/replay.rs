//! The replay task: feeds the spool back into the database, oldest segment first, deleting a
//! segment only once all of it is committed, and decides when writes may go direct again.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::{
    insert_isolating, pause_or_shutdown, Shared, INITIAL_BACKOFF, MAX_BACKOFF, SPOOL_RECHECK,
};
use crate::store::logs::LogStore;
use crate::store::spool::{read_segment, Segment};

/// Feeds the spool back into the database, oldest segment first, and decides when the database
/// is healthy again.
pub(super) struct Replayer {
    pub(super) store: Arc<dyn LogStore>,
    pub(super) shared: Arc<Shared>,
    pub(super) chunk: usize,
    pub(super) db_timeout: Duration,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Replayer {
    pub(super) async fn run(mut self) {
        let mut backoff = INITIAL_BACKOFF;
        while !*self.shutdown.borrow() {
            let replayed = match self.shared.with_spool(|_, s| s.oldest()).await {
                Some(Some(segment)) => self.replay(segment, &mut backoff).await,
                Some(None) => self.idle(&mut backoff).await,
                None => !pause_or_shutdown(&mut self.shutdown, MAX_BACKOFF).await,
            };
            if !replayed {
                break;
            }
        }
    }

    /// Replays one segment and deletes it. False when shutdown interrupted it (the segment stays
    /// on disk for the next start).
    async fn replay(&mut self, segment: Segment, backoff: &mut Duration) -> bool {
        let path = segment.path.clone();
        let contents = match tokio::task::spawn_blocking(move || read_segment(&path)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(error = %e, "cannot read a spool segment; retrying");
                return !pause_or_shutdown(&mut self.shutdown, MAX_BACKOFF).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "reading a spool segment failed; retrying");
                return !pause_or_shutdown(&mut self.shutdown, MAX_BACKOFF).await;
            }
        };
        for d in &contents.damaged {
            self.shared.dropped(
                "spool_corrupt",
                1,
                &format!(
                    "{} at byte {} of {} ({} bytes skipped)",
                    d.what,
                    d.offset,
                    segment.path.display(),
                    d.bytes
                ),
            );
        }
        let records = contents.records;
        let mut done = 0;
        while done < records.len() {
            let end = (done + self.chunk).min(records.len());
            match insert_isolating(
                self.store.as_ref(),
                &records[done..end],
                self.db_timeout,
                &self.shared,
            )
            .await
            {
                Ok(rejected) => {
                    self.shared
                        .metrics
                        .spool_replayed
                        .inc_by((end - done - rejected) as u64);
                    done = end;
                    *backoff = INITIAL_BACKOFF;
                }
                Err((e, ok, rejected)) => {
                    self.shared
                        .metrics
                        .spool_replayed
                        .inc_by((ok - rejected) as u64);
                    done += ok;
                    self.shared.db_failed(&e, records.len() - done, "replay");
                    if pause_or_shutdown(&mut self.shutdown, *backoff).await {
                        return false;
                    }
                    *backoff = (*backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            if *self.shutdown.borrow() {
                return false;
            }
        }
        let to_remove = segment.clone();
        let removed = self
            .shared
            .with_spool(move |_, s| s.remove(&to_remove))
            .await;
        if let Some(Err(e)) = removed {
            tracing::error!(error = %e, "replayed spool segment could not be deleted; it will be replayed again (harmless duplicates)");
        }
        tracing::info!(
            segment = %segment.path.display(),
            records = records.len(),
            "spool segment replayed into the database"
        );
        true
    }

    /// The spool is empty. While spooling, probe the database and leave that state when it
    /// answers; otherwise wait for something to replay. False on shutdown.
    async fn idle(&mut self, backoff: &mut Duration) -> bool {
        self.shared.with_spool(|_, s| s.recheck()).await;
        if self.shared.spooling() {
            let ping = tokio::time::timeout(self.db_timeout, self.store.probe_writes()).await;
            match ping {
                Ok(Ok(())) => {
                    // Under the spool lock: no batch can be appended between the check and
                    // the switch, so nothing is left behind unnoticed.
                    let switched = self
                        .shared
                        .with_spool(|shared, spool| {
                            let empty = spool.is_empty();
                            if empty {
                                shared.spooling.store(false, Ordering::Release);
                            }
                            empty
                        })
                        .await;
                    if switched == Some(true) {
                        self.shared.set_last_error(None);
                        tracing::info!(
                            "database is back and the spool is drained; writing directly again"
                        );
                    }
                    *backoff = INITIAL_BACKOFF;
                    return !*self.shutdown.borrow();
                }
                Ok(Err(e)) => {
                    self.shared.set_last_error(Some(e.to_string()));
                }
                Err(_) => {
                    self.shared.set_last_error(Some(format!(
                        "database ping timed out after {} ms",
                        self.db_timeout.as_millis()
                    )));
                }
            }
            let stop = pause_or_shutdown(&mut self.shutdown, *backoff).await;
            *backoff = (*backoff * 2).min(MAX_BACKOFF);
            return !stop;
        }
        tokio::select! {
            _ = self.shutdown.wait_for(|stop| *stop) => false,
            _ = self.shared.replay_wake.notified() => true,
            // A look now and then even without a wake-up: a spool failure to re-check, or the
            // spooling state set while this task was waiting.
            _ = tokio::time::sleep(SPOOL_RECHECK) => true,
        }
    }
}
