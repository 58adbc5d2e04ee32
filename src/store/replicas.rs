//! Replica membership ([`crate::cluster`]): each replica's heartbeat lease, and the
//! change number bumped when a replica takes a camera. Times come from the caller's clock
//! (Unix seconds), never from the database's, so the SQL stays portable and tests drive it.

use super::operator::bump_operator_changes;
use super::sql::{vals, Row};
use super::{Store, StoreError};
use crate::cluster::Replica;

impl Store {
    /// Registers `replica` as starting at `now` (a restart under the same name starts
    /// afresh) with its lease running until `replica.lease_until`.
    pub fn register_replica(&mut self, replica: &Replica) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO replicas (name, capacity, started, heartbeat_at, lease_until, api)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (name) DO UPDATE SET capacity = excluded.capacity,
                    started = excluded.started, heartbeat_at = excluded.heartbeat_at,
                    lease_until = excluded.lease_until, api = excluded.api",
                &vals![
                    &replica.name,
                    replica.capacity,
                    replica.started,
                    replica.heartbeat_at,
                    replica.lease_until,
                    &replica.api
                ],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// Renews `name`'s lease: heartbeat at `now`, live until `lease_until`. Answers false
    /// when the replica is not registered (its row was removed): register it again.
    pub fn renew_replica(
        &mut self,
        name: &str,
        now: f64,
        lease_until: f64,
    ) -> Result<bool, StoreError> {
        self.db
            .execute(
                "UPDATE replicas SET heartbeat_at = ?2, lease_until = ?3 WHERE name = ?1",
                &vals![name, now, lease_until],
            )
            .map(|rows| rows == 1)
            .map_err(|e| self.sql(e))
    }

    /// Removes `name` on a clean shutdown, so its cameras move at the others' next beat
    /// instead of after its lease.
    pub fn leave_replica(&mut self, name: &str) -> Result<(), StoreError> {
        self.db
            .execute("DELETE FROM replicas WHERE name = ?1", &vals![name])
            .map(drop)
            .map_err(|e| self.sql(e))
    }

    /// The replicas whose lease holds at `now`, by name.
    pub fn live_replicas(&self, now: f64) -> Result<Vec<Replica>, StoreError> {
        let replica = |r: &Row| -> Result<Replica, _> {
            Ok(Replica {
                name: r.text(0)?,
                capacity: r.real(1)?,
                started: r.real(2)?,
                heartbeat_at: r.real(3)?,
                lease_until: r.real(4)?,
                api: r.text(5)?,
            })
        };
        self.db
            .query(
                "SELECT name, capacity, started, heartbeat_at, lease_until, api FROM replicas
                 WHERE lease_until > ?1 ORDER BY name",
                &vals![now],
            )
            .and_then(|rows| rows.iter().map(replica).collect())
            .map_err(|e| self.sql(e))
    }

    /// Bumps the change number of each camera a replica takes over, in one transaction
    /// holding the cameras' write locks: a previous owner still finishing a sample then
    /// gets [`StoreError::Conflict`] and reloads from the store instead of overwriting,
    /// and the taker's filing starts from what is stored.
    pub fn take_cameras(&mut self, camera_ids: &[String]) -> Result<(), StoreError> {
        let locks: Vec<&str> = camera_ids.iter().map(String::as_str).collect();
        let tx = self.db.locked(&locks).map_err(|e| self.sql(e))?;
        for id in camera_ids {
            bump_operator_changes(&tx, id).map_err(|e| self.sql(e))?;
        }
        tx.commit().map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::for_each_backend;

    fn replica(name: &str, now: f64) -> Replica {
        Replica {
            name: name.into(),
            capacity: 1.0,
            started: now,
            heartbeat_at: now,
            lease_until: now + 15.0,
            api: format!("http://{name}:8080"),
        }
    }

    fn names(store: &Store, now: f64) -> Vec<String> {
        store
            .live_replicas(now)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect()
    }

    #[test]
    fn replicas_are_live_while_their_lease_holds() {
        for_each_backend(|db| {
            let mut store = db.open();
            store.register_replica(&replica("b", 100.0)).unwrap();
            store.register_replica(&replica("a", 105.0)).unwrap();
            assert_eq!(names(&store, 110.0), ["a", "b"]);
            // b's lease ran to 115; a renewed at 112 until 127.
            assert!(store.renew_replica("a", 112.0, 127.0).unwrap());
            assert_eq!(names(&store, 115.0), ["a"]);
            let a = &store.live_replicas(115.0).unwrap()[0];
            assert_eq!(
                (a.started, a.heartbeat_at, a.lease_until),
                (105.0, 112.0, 127.0)
            );
            // b comes back: renewing finds its row, and it is live again.
            assert!(store.renew_replica("b", 116.0, 131.0).unwrap());
            assert_eq!(names(&store, 128.0), ["b"]);
            // a leaves cleanly: gone at once, and a renewal says it must register again.
            store.leave_replica("a").unwrap();
            assert_eq!(names(&store, 120.0), ["b"]);
            assert!(!store.renew_replica("a", 121.0, 136.0).unwrap());
            // Registering again restarts it.
            store.register_replica(&replica("a", 122.0)).unwrap();
            assert_eq!(store.live_replicas(123.0).unwrap()[0].started, 122.0);
        });
    }

    #[test]
    fn taking_a_camera_makes_an_earlier_owners_write_conflict() {
        for_each_backend(|db| {
            let mut store = db.open();
            let seen = store.operator_seq("cam-1").unwrap();
            store
                .take_cameras(&["cam-1".to_string(), "cam-2".to_string()])
                .unwrap();
            assert_eq!(store.operator_seq("cam-1").unwrap(), seen + 1);
            assert_eq!(store.operator_seq("cam-2").unwrap(), 1);
            assert_eq!(store.operator_seq("cam-3").unwrap(), 0);
            let stale = store.write_guarded(&crate::cases::Changes::default(), "cam-1", seen);
            assert!(
                matches!(stale, Err(StoreError::Conflict { .. })),
                "{stale:?}"
            );
        });
    }
}
