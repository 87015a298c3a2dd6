//! Turns for full syncs, shared by the sources of a fleet: a dump is read off the
//! master's disk and sent over its network, so masters on one host (one disk) send one
//! at a time by default, and the whole fleet at most `max_parallel_full_syncs`. A source
//! holds its turn from before it asks for a dump until every database's dump is
//! loaded; streaming never waits for one.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The turns of one fleet.
#[derive(Debug)]
pub struct FullSyncTurns {
    /// The whole fleet's limit, if any.
    all: Option<Arc<Semaphore>>,
    per_host: usize,
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A turn held: dropped, it goes to the next waiting source.
#[derive(Debug)]
pub struct Turn {
    _host: Option<OwnedSemaphorePermit>,
    _all: Option<OwnedSemaphorePermit>,
}

impl FullSyncTurns {
    pub fn new(all: Option<NonZeroUsize>, per_host: NonZeroUsize) -> Arc<FullSyncTurns> {
        Arc::new(FullSyncTurns {
            all: all.map(|n| Arc::new(Semaphore::new(n.get()))),
            per_host: per_host.get(),
            hosts: Mutex::new(HashMap::new()),
        })
    }

    /// Whether a turn for `host` is free now (for a source to say it waits).
    pub fn free_now(&self, host: &str) -> bool {
        self.host(host).available_permits() > 0
            && self.all.as_ref().is_none_or(|a| a.available_permits() > 0)
    }

    fn host(&self, host: &str) -> Arc<Semaphore> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.per_host)))
            .clone()
    }

    /// Waits for a turn for a master on `host`. The host's turn is taken first, then the
    /// fleet's: a source waiting behind its own host holds no fleet-wide turn meanwhile.
    pub async fn take(&self, host: &str) -> Turn {
        // The semaphores are never closed, so acquiring cannot fail; were one closed,
        // a full sync without a turn is better than none.
        let host = self.host(host).acquire_owned().await.ok();
        let all = match &self.all {
            Some(all) => all.clone().acquire_owned().await.ok(),
            None => None,
        };
        Turn {
            _host: host,
            _all: all,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn n(v: usize) -> NonZeroUsize {
        NonZeroUsize::new(v).unwrap()
    }

    #[tokio::test]
    async fn one_per_host_and_the_fleet_limit() {
        let turns = FullSyncTurns::new(Some(n(2)), n(1));
        let a1 = turns.take("a").await;
        assert!(!turns.free_now("a"), "host a is busy");
        assert!(turns.free_now("b"));
        let _b = turns.take("b").await;
        assert!(!turns.free_now("c"), "two in the fleet already");
        let waiting = tokio::time::timeout(Duration::from_millis(50), turns.take("a")).await;
        assert!(waiting.is_err(), "a second dump from host a waits");
        drop(a1);
        let _a2 = tokio::time::timeout(Duration::from_millis(50), turns.take("a"))
            .await
            .expect("host a's turn passed on");
    }
}
