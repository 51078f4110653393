//! GetStats reads the rollups (see `db::stats`): a few hundred rows whatever
//! the number of tickets, but still the costliest read. Callers that ask at
//! the same time share one computation (the others wait for it), and its
//! result answers every later call until the writer commits a change. This
//! keeps the figures cheap with no Redis (the embedded default) and spares the
//! database a stampede when a cached entry is invalidated.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use ticketmesh_proto::v1::Stats;
use tokio::sync::Mutex;

#[derive(Debug, Default, Clone)]
pub struct StatsMemo(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    /// Bumped by the writer after each commit that stored something.
    generation: AtomicU64,
    /// The figures and the generation they were computed at. Held while
    /// computing, so concurrent callers wait for that one result.
    latest: Mutex<Option<(u64, Stats)>>,
}

impl StatsMemo {
    /// Called by the writer after a commit, before it answers its callers: a
    /// read after a 200 never sees the figures from before the write.
    pub fn changed(&self) {
        self.0.generation.fetch_add(1, Ordering::AcqRel);
    }

    /// The figures as of now: the memo if nothing was stored since, else
    /// computed by `load` (once, however many callers are waiting).
    pub async fn get<E>(&self, load: impl Future<Output = Result<Stats, E>>) -> Result<Stats, E> {
        let generation = self.0.generation.load(Ordering::Acquire);
        let mut latest = self.0.latest.lock().await;
        if let Some((computed_at, stats)) = latest.as_ref()
            && *computed_at == generation
        {
            return Ok(stats.clone());
        }
        // A write that commits while this runs bumps the generation, so the
        // result is kept but the next caller computes again.
        let stats = load.await?;
        *latest = Some((generation, stats.clone()));
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::{sync::atomic::AtomicUsize, time::Duration};

    fn stats(tickets: i64) -> Stats {
        Stats { tickets, ..Stats::default() }
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_computation_until_a_write() {
        let memo = StatsMemo::default();
        let loads = Arc::new(AtomicUsize::new(0));
        let load = |n: i64| {
            let loads = loads.clone();
            async move {
                loads.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok::<_, ()>(stats(n))
            }
        };
        let mut callers = tokio::task::JoinSet::new();
        for _ in 0..32 {
            let (memo, load) = (memo.clone(), load(1));
            callers.spawn(async move { memo.get(load).await });
        }
        let answers = callers.join_all().await;
        assert!(answers.iter().all(|a| a.as_ref().unwrap().tickets == 1));
        assert_eq!(loads.load(Ordering::SeqCst), 1, "32 concurrent callers, one computation");
        assert_eq!(memo.get(load(2)).await.unwrap().tickets, 1, "no write since: the memo answers");
        assert_eq!(loads.load(Ordering::SeqCst), 1);
        memo.changed();
        assert_eq!(memo.get(load(2)).await.unwrap().tickets, 2, "after a write: computed again");
        assert_eq!(loads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_computation_is_not_remembered() {
        let memo = StatsMemo::default();
        assert!(memo.get(async { Err::<Stats, _>("database down") }).await.is_err());
        assert_eq!(memo.get(async { Ok::<_, &str>(stats(3)) }).await.unwrap().tickets, 3);
    }
}
