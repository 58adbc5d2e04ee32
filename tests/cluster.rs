//! Several `cgbot run` replicas on one database share the simulator's cameras: each camera
//! analysed by exactly one live replica, failover after `kill -9`, a returning replica
//! taking back only its share, a rotation moving only the changed cameras, and a camera
//! changing hands mid-dwell filing one case.
//!
//! The replicas share a throw-away PostgreSQL database, as a deployment does.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::daemon::{camera_file, free_port, start_sim, van_zone, Daemon};
use common::postgres::{postgres_db, TestDb};
use common::{cgbot, ok};
use serde_json::Value;

fn replica_settings(name: &str, heartbeat: &str, lease: &str, interval: &str) -> String {
    format!(
        "[sampling]\ninterval = \"{interval}\"\n\
         [cluster]\nreplica = \"{name}\"\nheartbeat = \"{heartbeat}\"\nlease = \"{lease}\"\n"
    )
}

/// A replica keeping its files in a folder of its own, and its cases in the test's
/// throw-away PostgreSQL database.
fn start_replica(db: &TestDb, name: &str, cameras: &Path, settings: &str) -> Daemon {
    let dir = db.dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    Daemon::start_with_db(&dir, cameras.to_str().unwrap(), settings, db.location())
}

/// Camera id → (replica that lists it as its own, its frames analysed there), from every
/// replica's `/api/cameras`; `None` when some camera is claimed twice, or when the
/// replicas disagree on an owner.
fn ownership(replicas: &[&Daemon]) -> Option<BTreeMap<String, (String, u64)>> {
    let mut owned: BTreeMap<String, (String, u64)> = BTreeMap::new();
    let mut named: BTreeMap<String, String> = BTreeMap::new();
    for daemon in replicas {
        for camera in daemon.cameras() {
            let id = camera["id"].as_str()?.to_string();
            let owner = camera["replica"].as_str()?.to_string();
            if named
                .insert(id.clone(), owner.clone())
                .is_some_and(|o| o != owner)
            {
                return None;
            }
            if camera["state"] != "elsewhere" {
                let analysed = camera["frames_analysed"].as_u64().unwrap_or(0);
                if owned.insert(id, (owner, analysed)).is_some() {
                    return None;
                }
            }
        }
    }
    // Each owned camera is on the replica it names, and every named camera is owned.
    (owned.len() == named.len()).then_some(owned)
}

fn live_replicas(daemon: &Daemon) -> usize {
    daemon.metric("cgbot_cluster_replicas") as usize
}

/// Waits until the replicas agree, every one of `expected` cameras is owned exactly once
/// and analysed by its owner; answers owner by camera.
fn settled(
    replicas: &mut [&mut Daemon],
    expected: usize,
    limit: Duration,
) -> BTreeMap<String, (String, u64)> {
    let started = Instant::now();
    loop {
        let views: Vec<&Daemon> = replicas.iter().map(|d| &**d).collect();
        if let Some(owned) = ownership(&views) {
            let analysed = owned.values().all(|(_, n)| *n > 0);
            let agreed = views.iter().all(|d| live_replicas(d) == views.len());
            if owned.len() == expected && analysed && agreed {
                return owned;
            }
        }
        if started.elapsed() > limit {
            let logs: Vec<String> = views.iter().map(|d| d.log()).collect();
            panic!(
                "replicas did not settle within {limit:?}: {:?}\n{}",
                ownership(&views).map(|o| o.len()),
                logs.join("\n=====\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn owners(owned: &BTreeMap<String, (String, u64)>) -> BTreeMap<String, String> {
    owned
        .iter()
        .map(|(id, (owner, _))| (id.clone(), owner.clone()))
        .collect()
}

#[test]
fn replicas_share_the_cameras_fail_over_take_back_their_share_and_rotate_only_the_changed() {
    const CAMERAS: usize = 60;
    let root = postgres_db();
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", CAMERAS + 5, port, &[]);
    let cameras = root.dir().join("cams.toml");
    // A dwell far longer than the test: no cases, only the sharing is under test.
    std::fs::write(&cameras, camera_file(port, 0..CAMERAS, &van_zone("1h"))).unwrap();
    // The default heartbeat and lease: the failover target is for them.
    let settings = |name: &str| replica_settings(name, "5s", "15s", "3s");
    let mut r0 = start_replica(&root, "r0", &cameras, &settings("r0"));
    let mut r1 = start_replica(&root, "r1", &cameras, &settings("r1"));
    let mut r2 = start_replica(&root, "r2", &cameras, &settings("r2"));

    let first = owners(&settled(
        &mut [&mut r0, &mut r1, &mut r2],
        CAMERAS,
        Duration::from_secs(60),
    ));
    let share = |name: &str| first.values().filter(|o| *o == name).count();
    for name in ["r0", "r1", "r2"] {
        assert!(
            // A third each, give or take what hashing 60 cameras gives.
            (CAMERAS * 2 / 15..=CAMERAS * 8 / 15).contains(&share(name)),
            "{name} owns {} of {CAMERAS}: {first:?}",
            share(name)
        );
    }
    let replicas = r0.get("/api/replicas");
    let counts: Vec<u64> = replicas
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["cameras"].as_u64().unwrap())
        .collect();
    assert_eq!(counts.iter().sum::<u64>(), CAMERAS as u64, "{replicas}");

    // kill -9 r1: its cameras are analysed by the others within 30 s.
    r1.kill();
    let killed = Instant::now();
    let after_kill = owners(&settled(
        &mut [&mut r0, &mut r2],
        CAMERAS,
        Duration::from_secs(30),
    ));
    let failover = killed.elapsed();
    eprintln!("failover of {} cameras: {failover:.1?}", share("r1"));
    assert!(failover < Duration::from_secs(30), "{failover:?}");
    for (id, owner) in &first {
        if owner != "r1" {
            assert_eq!(&after_kill[id], owner, "{id} moved though its owner lived");
        }
    }
    assert!(
        r0.metric("cgbot_cluster_handoffs_total") + r2.metric("cgbot_cluster_handoffs_total")
            >= share("r1") as f64
    );

    // r1 back: it takes exactly its share again, nothing else moves.
    let mut r1 = start_replica(&root, "r1", &cameras, &settings("r1"));
    let back = settled(
        &mut [&mut r0, &mut r1, &mut r2],
        CAMERAS,
        Duration::from_secs(40),
    );
    assert_eq!(
        owners(&back),
        first,
        "the returning replica took other cameras"
    );

    // Rotation: 5 cameras removed, 5 added. The other 55 keep their owner and are not
    // restarted (their frame counts only grow).
    let before = back;
    std::fs::write(&cameras, camera_file(port, 5..CAMERAS + 5, &van_zone("1h"))).unwrap();
    let rotated = {
        let started = Instant::now();
        loop {
            let owned = settled(
                &mut [&mut r0, &mut r1, &mut r2],
                CAMERAS,
                Duration::from_secs(40),
            );
            if owned.contains_key(&format!("cam-{}", CAMERAS + 4)) {
                break owned;
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "rotation not applied"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    for (id, (owner, analysed)) in &before {
        let Some((now_owner, now_analysed)) = rotated.get(id) else {
            let i: usize = id.trim_start_matches("cam-").parse().unwrap();
            assert!(i < 5, "{id} vanished");
            continue;
        };
        assert_eq!(
            now_owner, owner,
            "{id} moved in a rotation that did not change it"
        );
        assert!(
            now_analysed >= analysed,
            "{id} was restarted by the rotation"
        );
    }
}

/// The van of street-static-h264.mp4 is in the zone from the first frame: its owner stores
/// a candidate, dies mid-dwell, and the other replica continues the dwell from the
/// database and files the one case.
#[test]
fn a_camera_changing_hands_mid_dwell_files_one_case() {
    let root = postgres_db();
    let port = free_port();
    let _sim = start_sim("street-static-h264.mp4", 1, port, &[]);
    let cameras = root.dir().join("cams.toml");
    std::fs::write(&cameras, camera_file(port, 0..1, &van_zone("12s"))).unwrap();
    let settings = |name: &str| replica_settings(name, "1s", "3s", "1s");
    let mut a = start_replica(&root, "a", &cameras, &settings("a"));
    let mut b = start_replica(&root, "b", &cameras, &settings("b"));
    let owner =
        owners(&settled(&mut [&mut a, &mut b], 1, Duration::from_secs(60)))["cam-0"].clone();
    let (mut owner, mut other) = if owner == "a" { (a, b) } else { (b, a) };
    let db = root.location();
    let cases = || -> Vec<Value> {
        let out = ok(cgbot(&[
            "cases",
            "list",
            "--json",
            "--db",
            db.to_str().unwrap(),
        ]));
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone()
    };
    let started = Instant::now();
    let candidate = loop {
        if let Some(case) = cases().into_iter().find(|c| c["status"] == "detected") {
            break case;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no candidate stored\n{}",
            owner.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    owner.kill();
    other.wait_for(
        "the case to be filed by the new owner",
        Duration::from_secs(40),
        |_| cases().iter().any(|c| c["status"] == "filed"),
    );
    // A few more samples: nothing duplicates it.
    std::thread::sleep(Duration::from_secs(3));
    let all = cases();
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(
        all[0]["id"], candidate["id"],
        "the case id changed with the owner"
    );
    assert_eq!(
        all[0]["first_seen"], candidate["first_seen"],
        "the dwell restarted"
    );
    assert!(
        other.metric("cgbot_cluster_handoffs_total") >= 1.0,
        "{}",
        other.log()
    );
}
