//! This replica's side of the membership: register, renew, read the live set, take
//! cameras and leave, each a short blocking database call run off the async runtime.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::{ClusterConfig, Lease, Replica};
use crate::clock::unix_now;
use crate::store::{Store, StoreError};

pub struct Membership {
    config: ClusterConfig,
    /// Where this replica's API listens, shown to operators.
    api: String,
    store: Arc<Mutex<Store>>,
    lease: Lease,
    /// Whether the row is known to be there (registered, not yet left or removed).
    registered: bool,
}

impl Membership {
    /// Opens its own connection to the database at `db`.
    pub fn open(config: ClusterConfig, api: String, db: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            config,
            api,
            store: Arc::new(Mutex::new(Store::open(db)?)),
            lease: Lease::default(),
            registered: false,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.replica
    }

    pub fn config(&self) -> &ClusterConfig {
        &self.config
    }

    /// Whether this replica's own lease still holds at `now`: past it, other replicas may
    /// own its cameras.
    pub fn lease_holds(&self, now: f64) -> bool {
        self.lease.holds(now)
    }

    pub fn lease_until(&self) -> Option<f64> {
        self.lease.until()
    }

    /// One heartbeat at the wall clock: renews the lease (registering first when needed)
    /// and answers the live replicas, this one included.
    pub async fn beat(&mut self) -> Result<Vec<Replica>, StoreError> {
        let now = unix_now();
        let until = now + self.config.lease.as_secs_f64();
        let me = Replica {
            name: self.config.replica.clone(),
            capacity: self.config.capacity,
            started: now,
            heartbeat_at: now,
            lease_until: until,
            api: self.api.clone(),
        };
        let registered = self.registered;
        let live = self
            .blocking(move |store| {
                if !(registered && store.renew_replica(&me.name, now, until)?) {
                    store.register_replica(&me)?;
                }
                store.live_replicas(now)
            })
            .await?;
        self.registered = true;
        self.lease.renewed(now, self.config.lease);
        Ok(live)
    }

    /// Marks `cameras` as taken by this replica (see [`Store::take_cameras`]).
    pub async fn take(&self, cameras: Vec<String>) -> Result<(), StoreError> {
        self.blocking(move |store| store.take_cameras(&cameras))
            .await
    }

    /// Removes this replica from the live set at once (clean shutdown).
    pub async fn leave(&mut self) -> Result<(), StoreError> {
        let name = self.config.replica.clone();
        self.registered = false;
        self.blocking(move |store| store.leave_replica(&name)).await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || {
            f(&mut store.lock().unwrap_or_else(PoisonError::into_inner))
        })
        .await
        {
            Ok(answer) => answer,
            // Only a panic in the closure gets here; carry it on.
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}
