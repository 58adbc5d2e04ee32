//! Retention: what the store lets go of, in small steps so filing never waits long for
//! the database. Delivered outbox events after a while; the evidence images of cases
//! that ended (closed or rejected) long ago; and, if the city wants, those cases
//! themselves with their history. Open cases and undelivered events are never touched.

use std::time::Duration;

use super::sql::{vals, Db, DbError, Dialect, Value};
use super::{Store, StoreError};

/// How long each kind of record is kept; `None` keeps it for good.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Retention {
    /// Outbox events every configured sink has acknowledged.
    pub outbox: Option<Duration>,
    /// Evidence images of cases closed or rejected longer ago than this.
    pub evidence: Option<Duration>,
    /// Cases closed or rejected longer ago than this, with history and evidence.
    pub cases: Option<Duration>,
}

/// What one step removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub outbox_events: u64,
    /// Cases whose evidence images went.
    pub evidence_of: u64,
    pub cases: u64,
}

impl Pruned {
    pub fn is_empty(&self) -> bool {
        *self == Pruned::default()
    }
}

/// When a case ended: closed, or rejected by an operator's verdict.
fn ended_at(d: Dialect) -> String {
    format!(
        "COALESCE({}, {})",
        d.json_number("closed_at"),
        d.json_number("verdict.at")
    )
}

impl Store {
    /// Removes at most `batch` records of each kind that `retention` lets go at `now`, in
    /// one transaction; evidence folders go after it commits. Outbox events go only once
    /// every sink in `sinks` has acknowledged them (none when `sinks` is empty). Call
    /// again while it returns something.
    pub fn prune(
        &mut self,
        retention: &Retention,
        sinks: &[String],
        now: f64,
        batch: usize,
    ) -> Result<Pruned, StoreError> {
        let limit = i64::try_from(batch).unwrap_or(i64::MAX);
        let mut folders = Vec::new();
        let pruned = self.db.transaction().and_then(|tx| {
            let pruned = prune(&tx, retention, sinks, now, limit, &mut folders)?;
            tx.commit()?;
            Ok(pruned)
        });
        let pruned = pruned.map_err(|e| self.sql(e))?;
        for id in folders {
            // Case ids are `C` + hex digits: a folder name, never a path.
            let folder = self.evidence_dir.join(&id);
            if let Err(e) = std::fs::remove_dir_all(&folder) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(folder = %folder.display(), error = %e, "evidence folder left behind");
                }
            }
        }
        Ok(pruned)
    }
}

/// One step of [`Store::prune`] inside `tx`; the cases whose evidence went are added to
/// `folders`.
fn prune(
    tx: &Db,
    retention: &Retention,
    sinks: &[String],
    now: f64,
    limit: i64,
    folders: &mut Vec<String>,
) -> Result<Pruned, DbError> {
    let d = tx.dialect();
    let before = |d: Duration| now - d.as_secs_f64();
    let mut pruned = Pruned::default();
    if let (Some(keep), false) = (retention.outbox, sinks.is_empty()) {
        pruned.outbox_events = match d {
            Dialect::Sqlite => {
                // The lowest cursor of the configured sinks: a sink that never delivered
                // has 0.
                let mut acknowledged = i64::MAX;
                for sink in sinks {
                    let seq = tx
                        .query_one(
                            "SELECT COALESCE((SELECT delivered_seq FROM outbox_cursor WHERE sink = ?1), 0)",
                            &vals![sink],
                        )?
                        .int(0)?;
                    acknowledged = acknowledged.min(seq);
                }
                tx.execute(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox
                     WHERE seq <= ?1 AND created_at < ?2 ORDER BY seq LIMIT ?3)",
                    &vals![acknowledged, before(keep), limit],
                )?
            }
            Dialect::Postgres => {
                // Acknowledged by each sink: a delivered row per sink (their claims go
                // with the event).
                let each: String = (0..sinks.len())
                    .map(|i| {
                        format!(
                            " AND EXISTS (SELECT 1 FROM outbox_deliveries d WHERE d.seq = outbox.seq
                              AND d.sink = ?{} AND d.delivered_at IS NOT NULL)",
                            i + 3
                        )
                    })
                    .collect();
                let sql = format!(
                    "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox
                     WHERE created_at < ?1 {each} ORDER BY seq LIMIT ?2)"
                );
                let mut args = vals![before(keep), limit].to_vec();
                args.extend(sinks.iter().map(Value::from));
                tx.execute(&sql, &args)?
            }
        };
    }
    let ended_before = |keep: Duration, with_evidence: bool| {
        let evidence = if with_evidence {
            "AND EXISTS (SELECT 1 FROM evidence e WHERE e.case_id = cases.id)"
        } else {
            ""
        };
        let query = format!(
            "SELECT id FROM cases WHERE status IN ('closed', 'rejected')
             AND {} < ?1 {evidence} ORDER BY first_seen LIMIT ?2",
            ended_at(d)
        );
        tx.query(&query, &vals![before(keep), limit])?
            .iter()
            .map(|r| r.text(0))
            .collect::<Result<Vec<String>, _>>()
    };
    if let Some(keep) = retention.cases {
        let ids = ended_before(keep, false)?;
        for id in &ids {
            // Evidence images (PostgreSQL) go with their evidence rows.
            for table in ["evidence", "history"] {
                tx.execute(
                    &format!("DELETE FROM {table} WHERE case_id = ?1"),
                    &vals![id],
                )?;
            }
            tx.execute("DELETE FROM cases WHERE id = ?1", &vals![id])?;
        }
        pruned.cases = ids.len() as u64;
        folders.extend(ids);
    }
    if let Some(keep) = retention.evidence {
        let ids = ended_before(keep, true)?;
        for id in &ids {
            tx.execute("DELETE FROM evidence WHERE case_id = ?1", &vals![id])?;
        }
        pruned.evidence_of = ids.len() as u64;
        folders.extend(ids);
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cases::{
        Changes, Evidence, EvidenceSource, NewEvent, OperatorAction, RejectReason, Status,
    };
    use crate::store::test_db::{for_each_backend, TestDb};
    use crate::store::CaseFilter;

    const DAY: f64 = 86_400.0;

    /// A store with four filed cases of `camera` whose evidence files exist.
    fn store_with_cases(db: &TestDb) -> (Store, Vec<String>) {
        let mut store = db.open();
        let ids: Vec<String> = (0..4).map(|i| format!("C{i:016x}")).collect();
        for id in &ids {
            let case: crate::cases::Case = serde_json::from_value(serde_json::json!({
                "id": id, "status": "filed",
                "category": { "code": "0505", "major": "街面秩序", "name": "机动车乱停放" },
                "event": "illegal_parking", "camera_id": "cam-1", "camera_name": "cam-1",
                "zone_id": "kerb", "zone_name": "kerb", "location": {},
                "first_seen": 1000.0, "last_seen": 1000.0, "filed_at": 1000.0, "deadline": null,
                "closed_at": null, "close_reason": null, "dwell": 0.0, "confidence": 0.9,
                "label": "car", "place": [0, 0, 10, 10], "bbox": [0, 0, 10, 10],
                "reopen_count": 0, "resume_status": null, "updated_at": 1000.0,
            }))
            .unwrap();
            let folder = store.evidence_dir().join(id);
            std::fs::create_dir_all(&folder).unwrap();
            std::fs::write(folder.join("filed.jpg"), b"jpeg").unwrap();
            store
                .write(&Changes {
                    upserts: vec![case],
                    evidence: vec![Evidence {
                        case_id: id.clone(),
                        kind: "filed".into(),
                        path: folder.join("filed.jpg"),
                        ts: 1000.0,
                        source: Some(EvidenceSource::Analysed),
                        fallback_reason: None,
                        caption_height: 0,
                    }],
                    events: vec![NewEvent {
                        key: format!("{id}:filed:2"),
                        kind: "case.filed".into(),
                        payload: serde_json::json!({ "id": id }),
                    }],
                    ..Changes::default()
                })
                .unwrap();
        }
        (store, ids)
    }

    #[test]
    fn only_acknowledged_old_events_and_long_ended_cases_go() {
        for_each_backend(|db| {
            let (mut store, ids) = store_with_cases(&db);
            // The outbox stamps events with the wall clock: work around the present.
            let t = crate::clock::unix_now() + 1.0;
            // Case 0 closed 40 days ago, case 1 rejected 40 days ago, case 2 closed yesterday,
            // case 3 still open.
            let act = |store: &mut Store, id: &str, action, at| {
                store
                    .operator_action(id, action, "li", None, at, Duration::ZERO)
                    .unwrap();
            };
            act(
                &mut store,
                &ids[0],
                OperatorAction::SetStatus(Status::Closed),
                t - 40.0 * DAY,
            );
            act(
                &mut store,
                &ids[1],
                OperatorAction::Reject(RejectReason::Duplicate),
                t - 40.0 * DAY,
            );
            act(
                &mut store,
                &ids[2],
                OperatorAction::SetStatus(Status::Closed),
                t - DAY,
            );
            // Sink `a` acknowledged the first two events, sink `b` all of them.
            let events = store.pending("a", 100).unwrap();
            store.mark_delivered("a", events[1].seq).unwrap();
            store
                .mark_delivered("b", events.last().unwrap().seq)
                .unwrap();
            let sinks = ["a".to_string(), "b".to_string()];
            let retention = Retention {
                outbox: Some(Duration::ZERO),
                evidence: Some(Duration::from_secs(30 * 86_400)),
                cases: None,
            };
            let pruned = store.prune(&retention, &sinks, t, 1).unwrap();
            assert_eq!(pruned.outbox_events, 1, "one per step");
            while !store.prune(&retention, &sinks, t, 1).unwrap().is_empty() {}
            // Only what both sinks acknowledged went; `a` still waits for the rest.
            let left: Vec<i64> = store
                .pending("a", 100)
                .unwrap()
                .iter()
                .map(|e| e.seq)
                .collect();
            assert_eq!(left, events[2..].iter().map(|e| e.seq).collect::<Vec<_>>());
            assert!(store.pending("b", 100).unwrap().is_empty());
            // The images of the two cases that ended 40 days ago went, rows and folders; the
            // case closed yesterday and the open one kept theirs.
            for (i, id) in ids.iter().enumerate() {
                let kept = i >= 2;
                assert_eq!(!store.evidence(id).unwrap().is_empty(), kept, "case {i}");
                assert_eq!(
                    store.evidence_image(id, "filed").unwrap().is_some(),
                    kept,
                    "image of case {i}"
                );
                assert_eq!(
                    store.evidence_dir().join(id).exists(),
                    kept,
                    "folder of case {i}"
                );
            }
            assert_eq!(
                store.cases(&CaseFilter::default()).unwrap().len(),
                4,
                "cases stay"
            );
        });
    }

    #[test]
    fn ended_cases_go_with_their_history_after_their_retention() {
        for_each_backend(|db| {
            let (mut store, ids) = store_with_cases(&db);
            let t = 100.0 * DAY;
            store
                .operator_action(
                    &ids[0],
                    OperatorAction::SetStatus(Status::Closed),
                    "li",
                    None,
                    t - 40.0 * DAY,
                    Duration::ZERO,
                )
                .unwrap();
            store
                .operator_action(
                    &ids[1],
                    OperatorAction::SetStatus(Status::Closed),
                    "li",
                    None,
                    t - DAY,
                    Duration::ZERO,
                )
                .unwrap();
            let retention = Retention {
                cases: Some(Duration::from_secs(30 * 86_400)),
                ..Retention::default()
            };
            let pruned = store.prune(&retention, &[], t, 100).unwrap();
            assert_eq!(
                pruned,
                Pruned {
                    cases: 1,
                    ..Pruned::default()
                }
            );
            assert!(store.case(&ids[0]).unwrap().is_none());
            assert!(store.history(&ids[0]).unwrap().is_empty());
            assert!(!store.evidence_dir().join(&ids[0]).exists());
            for id in &ids[1..] {
                assert!(store.case(id).unwrap().is_some());
            }
            // Without sinks nothing counts as delivered: the outbox stays whole.
            let outbox = Retention {
                outbox: Some(Duration::ZERO),
                ..Retention::default()
            };
            assert!(store.prune(&outbox, &[], t, 100).unwrap().is_empty());
        });
    }
}
