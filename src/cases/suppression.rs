//! False-positive suppression: when an operator rejects a case, the place (zone, event and
//! box) stops producing cases for a while, so the same billboard or loading bay is not
//! filed again every few minutes. Sightings it holds back are counted.

use serde::Serialize;

use crate::detect::nms::iou;

/// A place where sightings of one event are not made into cases until `until`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Suppression {
    pub id: i64,
    pub camera_id: String,
    pub zone_id: String,
    pub event: String,
    /// `[x1, y1, x2, y2]` in source pixels: the rejected case's place.
    pub bbox: [f32; 4],
    /// The rejected case it came from.
    pub case_id: String,
    pub created_by: String,
    /// Unix seconds.
    pub created_at: f64,
    pub until: f64,
    pub lifted_at: Option<f64>,
    pub lifted_by: Option<String>,
    /// Samples in which it held a sighting back.
    pub hits: u64,
    pub last_hit: Option<f64>,
}

impl Suppression {
    /// In force at Unix time `ts`: not lifted and not expired.
    pub fn is_active(&self, ts: f64) -> bool {
        self.lifted_at.is_none() && ts < self.until
    }

    /// Whether a sighting of `event` in `zone` with box `bbox` at `ts` is held back.
    pub fn covers(&self, zone: &str, event: &str, bbox: &[f32; 4], ts: f64) -> bool {
        self.is_active(ts)
            && self.zone_id == zone
            && self.event == event
            && iou(&self.bbox, bbox) >= super::SAME_PLACE_IOU
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suppression() -> Suppression {
        Suppression {
            id: 1,
            camera_id: "cam-1".into(),
            zone_id: "kerb".into(),
            event: "illegal_parking".into(),
            bbox: [100.0, 100.0, 200.0, 200.0],
            case_id: "C1".into(),
            created_by: "li".into(),
            created_at: 0.0,
            until: 100.0,
            lifted_at: None,
            lifted_by: None,
            hits: 0,
            last_hit: None,
        }
    }

    #[test]
    fn a_suppression_covers_the_same_place_zone_and_event_while_it_lasts() {
        let s = suppression();
        let near = [110.0, 105.0, 210.0, 205.0];
        assert!(s.covers("kerb", "illegal_parking", &near, 50.0));
        assert!(
            !s.covers("kerb", "illegal_parking", &near, 100.0),
            "expired"
        );
        assert!(!s.covers("gate", "illegal_parking", &near, 50.0), "zone");
        assert!(!s.covers("kerb", "exposed_litter", &near, 50.0), "event");
        let elsewhere = [300.0, 100.0, 400.0, 200.0];
        assert!(!s.covers("kerb", "illegal_parking", &elsewhere, 50.0));
        let lifted = Suppression {
            lifted_at: Some(10.0),
            ..suppression()
        };
        assert!(!lifted.covers("kerb", "illegal_parking", &near, 50.0));
    }
}
