//! Operators' side of the store: their actions on cases, false-positive suppressions and
//! the audit log. Every action is one transaction, locked like the daemon's writes of the
//! camera, that also bumps the camera's change number, so the daemon reloads before it
//! writes that camera again.

use std::time::Duration;

use super::sql::{vals, Db, DbError, Row};
use super::{Store, StoreError};
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

fn suppression_row(r: &Row) -> Result<Suppression, DbError> {
    let bbox = r.text(4)?;
    Ok(Suppression {
        id: r.int(0)?,
        camera_id: r.text(1)?,
        zone_id: r.text(2)?,
        event: r.text(3)?,
        bbox: serde_json::from_str(&bbox).map_err(|e| DbError::Column {
            index: 4,
            wanted: "a box",
            found: format!("{bbox:?}: {e}"),
        })?,
        case_id: r.text(5)?,
        created_by: r.text(6)?,
        created_at: r.real(7)?,
        until: r.real(8)?,
        lifted_at: r.opt_real(9)?,
        lifted_by: r.opt_text(10)?,
        hits: r.count(11)?,
        last_hit: r.opt_real(12)?,
    })
}

pub(super) fn bump_operator_changes(tx: &Db, camera_id: &str) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO operator_changes (camera_id, seq) VALUES (?1, 1)
         ON CONFLICT(camera_id) DO UPDATE SET seq = operator_changes.seq + 1",
        &vals![camera_id],
    )
    .map(drop)
}

fn audit(
    tx: &Db,
    actor: &str,
    action: &str,
    target: &str,
    detail: &str,
    at: f64,
) -> Result<(), DbError> {
    tx.execute(
        "INSERT INTO audit (at, actor, action, target, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
        &vals![at, actor, action, target, detail],
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
    /// change number, all in one transaction holding the camera's write lock. CLI, API
    /// and console pages all act through here. Returns the case as it now is;
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
        let sql = |e| self.sql(e);
        let not_found = || StoreError::NotFound {
            path: self.path.clone(),
            what: "case",
            id: case_id.to_string(),
        };
        // The camera's lock comes first, as for the daemon's writes; a case never
        // changes camera, so its camera may be read before.
        let camera = self
            .db
            .query_opt("SELECT camera_id FROM cases WHERE id = ?1", &vals![case_id])
            .and_then(|r| r.map(|r| r.text(0)).transpose())
            .map_err(sql)?
            .ok_or_else(not_found)?;
        let tx = self.db.locked(&[&camera]).map_err(sql)?;
        let Some(row) = tx
            .query_opt("SELECT id, data FROM cases WHERE id = ?1", &vals![case_id])
            .map_err(sql)?
        else {
            return Err(not_found());
        };
        let mut case = self.parse_case(&row)?;
        let from = case.status;
        let changes = operator_transition(&mut case, action, actor, note.clone(), at)?;
        self.apply(&tx, &changes).map_err(sql)?;
        let mut detail = match action {
            OperatorAction::Confirm => format!("confirmed ({from})"),
            _ => format!("{from} → {}", case.status),
        };
        if let OperatorAction::Reject(reason) = action {
            detail += &format!(", reason {reason}");
            if !suppress_for.is_zero() {
                let until = at + suppress_for.as_secs_f64();
                let id = tx
                    .query_one(
                        "INSERT INTO suppressions (camera_id, zone_id, event, bbox, case_id, created_by, created_at, until)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING id",
                        &vals![
                            &case.camera_id,
                            &case.zone_id,
                            &case.event,
                            serde_json::to_string(&case.place).expect("boxes serialise"),
                            &case.id,
                            actor,
                            at,
                            until
                        ],
                    )
                    .and_then(|r| r.int(0))
                    .map_err(sql)?;
                detail += &format!(
                    ", place suppressed for {} (suppression {id})",
                    span(suppress_for),
                );
            }
        }
        if let Some(note) = &note {
            detail += &format!("; note: {note}");
        }
        audit(&tx, actor, action.audit_name(), &case.id, &detail, at).map_err(sql)?;
        bump_operator_changes(&tx, &case.camera_id).map_err(sql)?;
        tx.commit().map_err(sql)?;
        self.unspool(&changes);
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
             WHERE (CAST(?1 AS TEXT) IS NULL OR camera_id = ?1)
               AND (CAST(?2 AS DOUBLE PRECISION) IS NULL OR (lifted_at IS NULL AND until > ?2))
             ORDER BY id DESC"
        );
        self.query_map(&sql, &vals![camera, active_at], suppression_row)
    }

    /// One suppression by id.
    pub fn suppression(&self, id: i64) -> Result<Option<Suppression>, StoreError> {
        let sql = format!("SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE id = ?1");
        Ok(self.query_map(&sql, &vals![id], suppression_row)?.pop())
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
        let sql = |e| self.sql(e);
        let not_found = || StoreError::NotFound {
            path: self.path.clone(),
            what: "suppression",
            id: id.to_string(),
        };
        let camera = self.suppression(id)?.ok_or_else(not_found)?.camera_id;
        let tx = self.db.locked(&[&camera]).map_err(sql)?;
        let select = format!("SELECT {SUPPRESSION_COLUMNS} FROM suppressions WHERE id = ?1");
        let Some(mut suppression) = tx
            .query_opt(&select, &vals![id])
            .and_then(|r| r.as_ref().map(suppression_row).transpose())
            .map_err(sql)?
        else {
            return Err(not_found());
        };
        if suppression.lifted_at.is_some() {
            return Ok(suppression);
        }
        tx.execute(
            "UPDATE suppressions SET lifted_at = ?2, lifted_by = ?3 WHERE id = ?1",
            &vals![id, at, actor],
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
        audit(&self.db, actor, action, target, detail, at).map_err(|e| self.sql(e))
    }

    /// The latest `limit` audit entries, newest first.
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        self.query_map(
            "SELECT seq, at, actor, action, target, detail FROM audit ORDER BY seq DESC LIMIT ?1",
            &vals![super::sql_count(Some(limit))],
            |r| {
                Ok(AuditEntry {
                    seq: r.int(0)?,
                    at: r.real(1)?,
                    actor: r.text(2)?,
                    action: r.text(3)?,
                    target: r.text(4)?,
                    detail: r.text(5)?,
                })
            },
        )
    }
}
