//! Replicas: several daemons on one database share the cameras. Each replica renews a
//! heartbeat lease in the `replicas` table ([`crate::store::Store::renew_replica`]); the
//! live replicas are those whose lease has not run out, and every camera belongs to one of
//! them by rendezvous (highest-random-weight) hashing, so each replica computes the same
//! owners from the same live set without talking to the others, a replica joining takes
//! only its share, and one leaving gives away only its own cameras.
//!
//! Continuous (`priority`) cameras and patrolled ones cost very differently, so the two
//! classes are hashed apart: a camera's hash key carries its class, and each class is
//! spread by capacity on its own. Rendezvous hashing is already proportional for each
//! class in expectation; salting by class keeps the two draws independent, so a replica
//! that happens to draw many patrolled cameras is not also the one that draws the priority
//! ones. A camera whose class changes is a changed camera anyway (rotation restarts it).

mod membership;

pub use membership::Membership;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// `[cluster]` in run.toml: absent, the daemon watches every camera of its list alone.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This replica's name, unique among the replicas of a database (default: the host
    /// name, which a StatefulSet makes stable).
    pub replica: String,
    /// Weight in the assignment: a replica of capacity 2 gets twice the cameras of one of
    /// capacity 1.
    pub capacity: f64,
    /// How often the lease is renewed and the live set read.
    #[serde(with = "crate::duration")]
    pub heartbeat: Duration,
    /// How long a renewal holds: a replica silent this long is no longer live, and stops
    /// its own cameras once its own lease has run out.
    #[serde(with = "crate::duration")]
    pub lease: Duration,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            replica: host_name(),
            capacity: 1.0,
            heartbeat: Duration::from_secs(5),
            lease: Duration::from_secs(15),
        }
    }
}

impl ClusterConfig {
    /// The problem with a setting, as (field, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.replica.trim().is_empty() {
            return Err((
                "cluster.replica",
                "must name this replica (the host name was empty)".into(),
            ));
        }
        if !(self.capacity.is_finite() && self.capacity > 0.0) {
            return Err((
                "cluster.capacity",
                format!("{} is not a positive weight", self.capacity),
            ));
        }
        if self.heartbeat < Duration::from_millis(100) {
            return Err((
                "cluster.heartbeat",
                "must be at least 100ms (each beat writes the database)".into(),
            ));
        }
        if self.lease <= self.heartbeat * 2 {
            return Err((
                "cluster.lease",
                format!(
                    "{} must be more than two heartbeats ({}), or one late beat drops the replica",
                    humantime::format_duration(self.lease),
                    humantime::format_duration(self.heartbeat * 2)
                ),
            ));
        }
        Ok(())
    }
}

/// The kernel's host name; empty if it cannot be read (then `cluster.replica` is required).
fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `len` bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return String::new();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// One replica as the `replicas` table holds it; times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Replica {
    pub name: String,
    pub capacity: f64,
    pub started: f64,
    pub heartbeat_at: f64,
    pub lease_until: f64,
    /// Its API address, for display.
    pub api: String,
}

/// A camera as the assignment sees it.
#[derive(Debug, Clone, Copy)]
pub struct Assignable<'a> {
    pub id: &'a str,
    pub priority: bool,
}

/// A uniform number in (0, 1) from `camera`, its class and `replica`: the first 53 bits
/// of their SHA-256, never 0 or 1 so its logarithm is finite and negative.
fn hash_unit(camera: &Assignable<'_>, replica: &str) -> f64 {
    let mut hasher = Sha256::new();
    hasher.update(if camera.priority { b"p" } else { b"c" });
    hasher.update(camera.id.as_bytes());
    // A separator no id contains, so ("ab", "c") and ("a", "bc") differ.
    hasher.update([0u8]);
    hasher.update(replica.as_bytes());
    let digest = hasher.finalize();
    let bits = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) >> 11;
    (bits as f64 + 0.5) / (1u64 << 53) as f64
}

/// The weighted rendezvous score: the replica with the highest score owns the camera.
/// `-capacity / ln(u)` gives each replica the camera with probability capacity / total.
fn score(camera: &Assignable<'_>, replica: &str, capacity: f64) -> f64 {
    -capacity / hash_unit(camera, replica).ln()
}

/// The live replica owning `camera`; ties (practically impossible) go to the smaller name.
pub fn owner<'r>(camera: &Assignable<'_>, replicas: &'r [Replica]) -> Option<&'r Replica> {
    replicas
        .iter()
        .map(|r| (score(camera, &r.name, r.capacity), r))
        .max_by(|(a, ra), (b, rb)| a.total_cmp(b).then_with(|| rb.name.cmp(&ra.name)))
        .map(|(_, r)| r)
}

/// Every camera's owner by id (none without live replicas).
pub fn assign(cameras: &[Assignable<'_>], replicas: &[Replica]) -> BTreeMap<String, String> {
    cameras
        .iter()
        .filter_map(|c| Some((c.id.to_string(), owner(c, replicas)?.name.clone())))
        .collect()
}

/// Cameras whose owner differs between two assignments (gone or new ones included).
pub fn moved(before: &BTreeMap<String, String>, after: &BTreeMap<String, String>) -> usize {
    let ids: BTreeSet<&String> = before.keys().chain(after.keys()).collect();
    ids.into_iter()
        .filter(|id| before.get(*id) != after.get(*id))
        .count()
}

/// This replica's own lease as it knows it: held until the last successful renewal plus
/// the lease length. Past that, other replicas may have taken its cameras.
#[derive(Debug, Clone, Copy, Default)]
pub struct Lease {
    until: Option<f64>,
}

impl Lease {
    /// A renewal written at `now` for `length`.
    pub fn renewed(&mut self, now: f64, length: Duration) {
        self.until = Some(now + length.as_secs_f64());
    }

    /// Whether the lease still holds at `now` (never before the first renewal).
    pub fn holds(&self, now: f64) -> bool {
        self.until.is_some_and(|until| now < until)
    }

    pub fn until(&self) -> Option<f64> {
        self.until
    }
}

/// What a change of the live set looked like, for the one log line about it.
#[derive(Debug, Default, PartialEq)]
pub struct LiveChange {
    pub joined: Vec<String>,
    pub left: Vec<String>,
}

impl LiveChange {
    pub fn between(before: &[Replica], after: &[Replica]) -> Self {
        let names =
            |set: &[Replica]| -> BTreeSet<String> { set.iter().map(|r| r.name.clone()).collect() };
        let (before, after) = (names(before), names(after));
        Self {
            joined: after.difference(&before).cloned().collect(),
            left: before.difference(&after).cloned().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.joined.is_empty() && self.left.is_empty()
    }
}

/// A live replica as `/api/replicas` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaLoad {
    #[serde(flatten)]
    pub replica: Replica,
    /// Configured cameras it owns.
    pub cameras: usize,
    /// Of those, continuous (`priority`) ones.
    pub priority_cameras: usize,
}

#[cfg(test)]
mod tests;
