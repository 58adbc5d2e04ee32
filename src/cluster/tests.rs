use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn replica(name: &str, capacity: f64) -> Replica {
    Replica {
        name: name.into(),
        capacity,
        started: 0.0,
        heartbeat_at: 0.0,
        lease_until: 15.0,
        api: String::new(),
    }
}

fn ids(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn cameras(ids: &[String]) -> Vec<Assignable<'_>> {
    ids.iter()
        .map(|id| Assignable {
            id,
            // Every seventh camera continuous, as in a city's lists.
            priority: id.bytes().map(u32::from).sum::<u32>() % 7 == 0,
        })
        .collect()
}

fn count_by_owner(owners: &BTreeMap<String, String>) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for owner in owners.values() {
        *counts.entry(owner.as_str()).or_default() += 1;
    }
    counts
}

/// Within `sds` standard deviations of a binomial(n, p) count.
fn near_share(count: usize, n: usize, p: f64, sds: f64) -> bool {
    let (mean, sd) = (n as f64 * p, (n as f64 * p * (1.0 - p)).sqrt());
    (count as f64 - mean).abs() <= sds * sd + 1.0
}

fn replica_set() -> impl Strategy<Value = Vec<Replica>> {
    proptest::collection::btree_map("[a-z]{1,8}-[0-9]", 1.0f64..4.0, 1..6).prop_map(|m| {
        m.into_iter()
            .map(|(name, capacity)| replica(&name, capacity))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_joining_replica_takes_only_cameras_for_itself_and_about_its_share(
        mut live in replica_set(),
        capacity in 1.0f64..4.0,
        prefix in "[a-z]{1,6}",
    ) {
        let ids = ids(400, &prefix);
        let cameras = cameras(&ids);
        let before = assign(&cameras, &live);
        let total: f64 = live.iter().map(|r| r.capacity).sum::<f64>() + capacity;
        live.push(replica("newcomer", capacity));
        let after = assign(&cameras, &live);
        for (id, owner) in &after {
            if before[id] != *owner {
                prop_assert_eq!(owner, "newcomer", "camera {} moved between old replicas", id);
            }
        }
        let taken = moved(&before, &after);
        prop_assert!(
            near_share(taken, ids.len(), capacity / total, 5.0),
            "newcomer of capacity {} of {} took {} of {}", capacity, total, taken, ids.len()
        );
    }

    #[test]
    fn a_leaving_replica_gives_away_only_its_own_cameras(
        live in replica_set(),
        leaving in 0usize..6,
        prefix in "[a-z]{1,6}",
    ) {
        let ids = ids(300, &prefix);
        let cameras = cameras(&ids);
        let before = assign(&cameras, &live);
        let gone = live[leaving % live.len()].name.clone();
        let rest: Vec<Replica> = live.iter().filter(|r| r.name != gone).cloned().collect();
        let after = assign(&cameras, &rest);
        for (id, owner) in &before {
            if *owner == gone {
                prop_assert!(after.get(id).is_none_or(|o| *o != gone));
            } else {
                prop_assert_eq!(after.get(id), Some(owner), "camera {} moved", id);
            }
        }
    }

    #[test]
    fn a_rotation_moves_only_the_changed_cameras(
        live in replica_set(),
        removed in proptest::collection::btree_set(0usize..200, 0..20),
        added in 0usize..20,
    ) {
        let old_ids = ids(200, "cam");
        let mut new_ids: Vec<String> = old_ids
            .iter()
            .enumerate()
            .filter(|(i, _)| !removed.contains(i))
            .map(|(_, id)| id.clone())
            .collect();
        new_ids.extend(ids(added, "new"));
        let before = assign(&cameras(&old_ids), &live);
        let after = assign(&cameras(&new_ids), &live);
        for (id, owner) in &after {
            if let Some(old) = before.get(id) {
                prop_assert_eq!(old, owner, "unchanged camera {} moved", id);
            }
        }
        prop_assert_eq!(moved(&before, &after), removed.len() + added);
    }
}

#[test]
fn capacities_give_proportional_shares_in_each_class() {
    let live = [
        replica("small", 1.0),
        replica("medium", 2.0),
        replica("large", 3.0),
    ];
    for priority in [false, true] {
        let ids = ids(6000, "cam");
        let cameras: Vec<Assignable<'_>> =
            ids.iter().map(|id| Assignable { id, priority }).collect();
        let owners = assign(&cameras, &live);
        let counts = count_by_owner(&owners);
        for r in &live {
            let got = counts.get(r.name.as_str()).copied().unwrap_or(0);
            assert!(
                near_share(got, ids.len(), r.capacity / 6.0, 4.0),
                "{} (capacity {}) got {got} of {} priority={priority}",
                r.name,
                r.capacity,
                ids.len()
            );
        }
    }
}

#[test]
fn the_classes_are_drawn_apart() {
    // The same ids in the two classes: were the class not in the key, every camera would
    // land on the same replica in both.
    let live = [replica("a", 1.0), replica("b", 1.0), replica("c", 1.0)];
    let ids = ids(600, "cam");
    let same = ids
        .iter()
        .filter(|id| {
            let continuous = owner(&Assignable { id, priority: true }, &live);
            let patrolled = owner(
                &Assignable {
                    id,
                    priority: false,
                },
                &live,
            );
            continuous.map(|r| &r.name) == patrolled.map(|r| &r.name)
        })
        .count();
    assert!(
        near_share(same, ids.len(), 1.0 / 3.0, 5.0),
        "{same} of 600 alike"
    );
}

#[test]
fn the_assignment_is_the_same_on_every_replica_and_run() {
    // Pinned: a change of hash or score would move cameras on upgrade, which must be a
    // deliberate decision.
    let live = [
        replica("cgbot-0", 1.0),
        replica("cgbot-1", 1.0),
        replica("cgbot-2", 1.0),
    ];
    let ids = ids(8, "cam");
    let owners: Vec<String> = assign(&cameras(&ids), &live).into_values().collect();
    let reversed: Vec<Replica> = live.iter().rev().cloned().collect();
    let again: Vec<String> = assign(&cameras(&ids), &reversed).into_values().collect();
    assert_eq!(owners, again, "the order of the live set must not matter");
    let counts = owners
        .iter()
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    assert!(counts > 1, "8 cameras all on one of 3 replicas: {owners:?}");
}

#[test]
fn no_live_replica_owns_nothing() {
    let ids = ids(3, "cam");
    assert!(assign(&cameras(&ids), &[]).is_empty());
}

#[test]
fn a_lease_holds_until_its_length_after_the_last_renewal() {
    let length = Duration::from_secs(15);
    let mut lease = Lease::default();
    assert!(!lease.holds(1000.0), "no lease before the first renewal");
    lease.renewed(1000.0, length);
    assert!(lease.holds(1000.0));
    assert!(lease.holds(1014.9));
    assert!(!lease.holds(1015.0), "lapsed at exactly its end");
    // Heartbeats every 5 s failing from 1005 on: still held at 1010, gone at 1015.
    assert!(lease.holds(1010.0));
    lease.renewed(1012.0, length);
    assert!(lease.holds(1026.0));
    assert!(!lease.holds(1027.5));
    assert_eq!(lease.until(), Some(1027.0));
}

#[test]
fn live_set_changes_name_who_joined_and_left() {
    let before = [replica("a", 1.0), replica("b", 1.0)];
    let after = [replica("b", 1.0), replica("c", 2.0)];
    let change = LiveChange::between(&before, &after);
    assert_eq!(change.joined, vec!["c".to_string()]);
    assert_eq!(change.left, vec!["a".to_string()]);
    assert!(LiveChange::between(&after, &after).is_empty());
}

#[test]
fn settings_are_checked() {
    let ok = ClusterConfig {
        replica: "r".into(),
        ..ClusterConfig::default()
    };
    assert!(ok.check().is_ok());
    let bad = |c: ClusterConfig| c.check().unwrap_err().0;
    assert_eq!(
        bad(ClusterConfig {
            capacity: 0.0,
            ..ok.clone()
        }),
        "cluster.capacity"
    );
    assert_eq!(
        bad(ClusterConfig {
            lease: Duration::from_secs(10),
            ..ok.clone()
        }),
        "cluster.lease"
    );
    assert_eq!(
        bad(ClusterConfig {
            replica: " ".into(),
            ..ok
        }),
        "cluster.replica"
    );
}
