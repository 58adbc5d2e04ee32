//! Operators' side of the store: their actions on cases, false-positive suppressions and
//! the audit log. Every action is one `IMMEDIATE` transaction that also bumps the
//! camera's change number, so the daemon reloads before it writes that camera again.

use std::time::Duration;

use rusqlite::{params, OptionalExtension, Row, Transaction};

use super::{apply, Store, StoreError};
use crate::cases::{operator_transition, Case, OperatorAction, Suppression};

/// One line of the audit log: who did what to which thing, when.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    /// Order of recording (increasing).
    pub seq: i64,
    /// Unix seconds.
    pub at: f64,
    /// The user name.
    pub actor: String,
    /// e.g. `case.reject`, `suppression.lift`, `zone.edit`, `sign_in`.
    pub action: String,
    /// What it was done to: a case id, a suppression id, a camera…
    pub target: String,
    pub detail: String,
}

const SUPPRESSION_COLUMNS: &str = "id, camera_id, zone_id, event, bbox, case_id, created_by, \
     created_at, until, lifted_at, lifted_by, hits, last_hit";

fn suppression_row(r: &Row<'_>) -> rusqlite::Result<Suppression> {
    let bbox: String = r.get(4)?;
    Ok(Suppression {
        id: r.get(0)?,
        camera_id: r.get(1)?,
        zone_id: r.get(2)?,
        event: r.get(3)?,
        bbox: serde_json::from_str(&bbox).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Text, e.into())
        })?,
        case_id: r.get(5)?,
        created_by: r.get(6)?,
        created_at: r.get(7)?,
        until: r.get(8)?,
        lifted_at: r.get(9)?,
        lifted_by: r.get(10)?,
        hits: r.get::<_, i64>(11)?.max(0) as u64,
        last_hit: r.get(12)?,
    })
}

pub(super) fn bump_operator_changes(tx: &Transaction<'_>, camera_id: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO operator_changes (camera_id, seq) VALUES (?1, 1)
         ON CONFLICT(camera_id) DO UPDATE SET seq = seq + 1",
        [camera_id],
    )
    .map(drop)
}

fn audit(
    tx: &Transaction<'_>,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    at: f64,
) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![at, actor, action, target, detail],
    )
    .map(drop)
}

/// `7d`, `1h 30m`: how long a suppression lasts, for the audit log.
fn span(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

impl Store {
    /// One operator action by user `actor` at Unix time `at`: reads the case, applies the
    /// action if the lifecycle allows it, and writes the case, its history entry, its
    /// outbox event, (for a rejection with a non-zero `suppress_for`) a suppression of the
    /// case's place until `at + suppress_for`, and an audit row, and bumps the camera's
    /// change number, all in one `IMMEDIATE` transaction. CLI, API and console pages all
    /// act through here. Returns the case as it now is;
    /// `Err(StoreError::Operator(CaseError::IllegalTransition { .. }))` (or
    /// `CannotConfirm`) when the lifecycle refuses, `Err(StoreError::NotFound { .. })`
    /// without such a case.
    pub fn operator_action(
        &mut self,
        case_id: &str,
        action: OperatorAction,
        actor: &str,
        note: Option<String>,
        at: f64,
        suppress_for: Duration,
    ) -> Result<Case, StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.immediate()?;
        let data: Option<String> = tx
            .query_row("SELECT data FROM cases WHERE id = ?1", [case_id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql)?;
        let Some(data) = data else {
            return Err(StoreError::NotFound {
                path: path.clone(),
                what: "case",
                id: case_id.to_string(),
            });
        };
        let mut case: Case = serde_json::from_str(&data).map_err(|e| StoreError::Corrupt {
            path: path.clone(),
            id: case_id.to_string(),
            reason: e.to_string(),
        })?;
        let from = case.status;
        let changes = operator_transition(&mut case, action, actor, note.clone(), at)?;
        apply(&tx, &changes).map_err(sql)?;
        let mut detail = match action {
            OperatorAction::Confirm => format!("confirmed ({from})"),
            _ => format!("{from} → {}", case.status),
        };
        if let OperatorAction::Reject(reason) = action {
            detail += &format!(", reason {reason}");
            if !suppress_for.is_zero() {
                let until = at + suppress_for.as_secs_f64();
                tx.execute(
                    "INSERT INTO suppressions (camera_id, zone_id, event, bbox, case_id, created_by, created_at, until)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        case.camera_id,
                        case.zone_id,
                        case.event,
                        serde_json::to_string(&case.place).expect("boxes serialise"),
                        case.id,
                        actor,
                        at,
                        until
                    ],
                )
                .map_err(sql)?;
                detail += &format!(
                    ", place suppressed for {} (suppression {})",
                    span(suppress_for),
                    tx.last_insert_rowid()
                );
            }
        }
        if let Some(note) = &note {
            detail += &format!("; note: {note}");
        }
        audit(&tx, actor, action.audit_name(), &case.id, &detail, at).map_err(sql)?;
        bump_operator_changes(&tx, &case.camera_id).map_err(sql)?;
        tx.commit().map_err(sql)?;
        Ok(case)
    }

    /// Suppressions, newest first: of one camera or all, and with `active_at` only those
    /// in force then (not lifted, not expired).
    pub fn suppressions(
        &self,
        camera: Option<&str>,
        active_at: Option<f64>,
    ) -> Result<Vec<Suppression>, StoreError> {
        let sql = format!(
            "SELECT {SUPPRESSION_COLUMNS} FROM suppressions
             WHERE (?1 IS NULL OR camera_id = ?1)
               AND (?2 IS NULL OR (lifted_at IS NULL AND until > ?2))
             ORDER BY id DESC"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map(params![camera, active_at], suppression_row)
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }

    /// One suppression by id.
    pub fn suppression(&self, id: i64) -> Result<Option<Suppression>, StoreError> {
        let sql = format!("SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE id = ?1");
        self.conn
            .query_row(&sql, [id], suppression_row)
            .optional()
            .map_err(|e| self.sql(e))
    }

    /// Lifts suppression `id` for user `actor` at Unix time `at`: the place may produce
    /// cases again (the daemon picks it up before its next write for the camera). Writes
    /// an audit row and bumps the camera's change number. Lifting a lifted suppression
    /// changes nothing and returns it as it is; `Err(StoreError::NotFound { .. })`
    /// without one.
    pub fn lift_suppression(
        &mut self,
        id: i64,
        actor: &str,
        at: f64,
    ) -> Result<Suppression, StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.immediate()?;
        let select = format!("SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE id = ?1");
        let Some(mut suppression) = tx
            .query_row(&select, [id], suppression_row)
            .optional()
            .map_err(sql)?
        else {
            return Err(StoreError::NotFound {
                path: path.clone(),
                what: "suppression",
                id: id.to_string(),
            });
        };
        if suppression.lifted_at.is_some() {
            return Ok(suppression);
        }
        tx.execute(
            "UPDATE suppressions SET lifted_at = ?2, lifted_by = ?3 WHERE id = ?1",
            params![id, at, actor],
        )
        .map_err(sql)?;
        let detail = format!(
            "camera {} zone {} event {} (from case {}), {} hits",
            suppression.camera_id,
            suppression.zone_id,
            suppression.event,
            suppression.case_id,
            suppression.hits
        );
        audit(&tx, actor, "suppression.lift", &id.to_string(), &detail, at).map_err(sql)?;
        bump_operator_changes(&tx, &suppression.camera_id).map_err(sql)?;
        tx.commit().map_err(sql)?;
        suppression.lifted_at = Some(at);
        suppression.lifted_by = Some(actor.to_string());
        Ok(suppression)
    }

    /// Records something an operator did that the store does not do itself (zone edits,
    /// sign-ins…) in the audit log.
    pub fn record_audit(
        &mut self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        at: f64,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        let sql = |source| StoreError::Sql {
            path: path.clone(),
            source,
        };
        let tx = self.immediate()?;
        audit(&tx, actor, action, target, detail, at).map_err(sql)?;
        tx.commit().map_err(sql)
    }

    /// The latest `limit` audit entries, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT seq, at, actor, action, target, detail FROM audit ORDER BY seq DESC LIMIT ?1",
            )
            .map_err(|e| self.sql(e))?;
        let rows = stmt
            .query_map([super::sql_count(Some(limit))], |r| {
                Ok(AuditEntry {
                    seq: r.get(0)?,
                    at: r.get(1)?,
                    actor: r.get(2)?,
                    action: r.get(3)?,
                    target: r.get(4)?,
                    detail: r.get(5)?,
                })
            })
            .map_err(|e| self.sql(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sql(e))
    }
}
