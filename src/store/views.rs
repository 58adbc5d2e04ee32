//! Each camera's reference view (the view guard of `crate::pipeline::picture`), kept so
//! that a restarted daemon, or the replica that takes the camera over, judges the camera
//! against the view its zones were drawn for, not against whatever it shows at start.

use super::sql::{vals, Row};
use super::{Store, StoreError};
use crate::decode::ViewSignature;

/// [`ReferenceView::taken_by`] of a view learned from steady pictures.
pub const LEARNED: &str = "learned";

/// A camera's reference view and who set it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReferenceView {
    pub signature: ViewSignature,
    /// Unix seconds.
    pub taken_at: f64,
    /// [`LEARNED`], or the operator who re-based it.
    pub taken_by: String,
}

impl Store {
    /// The kept reference view of `camera`; `None` when there is none, or when it was
    /// written with another signature grid (it is learned anew).
    pub fn reference_view(&self, camera: &str) -> Result<Option<ReferenceView>, StoreError> {
        let view = |r: &Row| -> Result<_, _> {
            Ok(
                ViewSignature::from_bytes(&r.bytes(0)?).map(|signature| ReferenceView {
                    signature,
                    taken_at: r.real(1).unwrap_or_default(),
                    taken_by: r.text(2).unwrap_or_default(),
                }),
            )
        };
        self.db
            .query(
                "SELECT signature, taken_at, taken_by FROM view_references WHERE camera_id = ?1",
                &vals![camera],
            )
            .and_then(|rows| rows.first().map(view).transpose())
            .map(Option::flatten)
            .map_err(|e| self.sql(e))
    }

    /// Keeps `view` as the reference view of `camera`, replacing any before it.
    pub fn set_reference_view(
        &mut self,
        camera: &str,
        view: &ReferenceView,
    ) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO view_references (camera_id, signature, taken_at, taken_by)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (camera_id) DO UPDATE SET signature = excluded.signature,
                    taken_at = excluded.taken_at, taken_by = excluded.taken_by",
                &vals![
                    camera,
                    view.signature.to_bytes(),
                    view.taken_at,
                    &view.taken_by
                ],
            )
            .map(drop)
            .map_err(|e| self.sql(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_db::for_each_backend;

    #[test]
    fn a_reference_view_is_kept_and_replaced() {
        for_each_backend(|db| {
            let mut store = db.open();
            assert_eq!(store.reference_view("cam-1").unwrap(), None);
            let first = ReferenceView {
                signature: ViewSignature::from_cells(|c, r| (c * 3 + r * 7) as f32),
                taken_at: 1_700_000_000.0,
                taken_by: "learned".into(),
            };
            store.set_reference_view("cam-1", &first).unwrap();
            assert_eq!(store.reference_view("cam-1").unwrap(), Some(first));
            let rebased = ReferenceView {
                signature: ViewSignature::from_cells(|c, r| (c * 5 + r) as f32),
                taken_at: 1_700_000_100.0,
                taken_by: "operator admin".into(),
            };
            store.set_reference_view("cam-1", &rebased).unwrap();
            assert_eq!(store.reference_view("cam-1").unwrap(), Some(rebased));
            assert_eq!(store.reference_view("cam-2").unwrap(), None);
        });
    }
}
