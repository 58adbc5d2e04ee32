//! New stationary things against the camera's learned empty scene, end to end on real
//! clips: `cgbot replay --camera --db` with a zone that watches `new_object`
//! (`material_piles`, 乱堆物堆料). The object is a still crop of another photograph laid
//! on the street's road by FFmpeg for a while, then taken away.

mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// [`REPLAY_START`] in Unix seconds.
const START_UNIX: f64 = 1_795_478_400.0;

/// The road at the bottom left of `street-static-h264.mp4` (640×480), left of the buses.
const ROAD_ZONE: &str = "[[0.0, 0.76], [0.22, 0.76], [0.22, 1.0], [0.0, 1.0]]";
/// Where the object lies on it: 80×56 pixels at (24, 396).
const OBJECT_AT: (u32, u32) = (24, 396);

/// The test's directory and database (see [`Scratch`]), with the road's camera and clip.
type Run = Scratch;

impl Run {
    /// A camera with one zone watching for piles of material, with a dwell short enough
    /// for the clips.
    fn camera(&self, zone: &str) -> String {
        let path = self.path("camera.toml");
        std::fs::write(
            &path,
            format!(
                "[[camera]]\nid = \"cam-road\"\nname = \"test street\"\n\
                 [[camera.zone]]\nid = \"road\"\npolygon = {zone}\n\
                 rules = [{{ event = \"material_piles\", min_dwell = \"10s\", verify_window = \"8s\" }}]\n"
            ),
        )
        .unwrap();
        path.display().to_string()
    }

    /// The street for `seconds`, with a still crop of the dog-and-bicycle photograph (its
    /// porch: a painted wall and floor boards, nothing the model names) lying on the road
    /// from `from` to `until` seconds.
    fn street_with_object(&self, seconds: u32, from: u32, until: u32) -> String {
        let path = self.path("object.mp4");
        let still = sample("dog-bicycle-truck.jpg");
        let (x, y) = OBJECT_AT;
        let filter = format!(
            "movie={},crop=160:168:580:310,scale=80:56[object];\
             [in][object]overlay={x}:{y}:enable='between(t,{from},{until})'[out]",
            still.display()
        );
        filtered_clip(&sample("street-static-h264.mp4"), seconds, &filter, &path);
        path.display().to_string()
    }
}

#[test]
fn an_object_left_on_the_road_files_a_0507_case_that_closes_when_it_is_taken_away() {
    let run = Run::new();
    let camera = run.camera(ROAD_ZONE);
    // Learned from the first samples (0–4 s), the object there from 8 s to 35 s.
    let clip = run.street_with_object(60, 8, 35);
    let log = run.replay(&clip, &camera, &[]);
    let cases = run.cases();
    assert_eq!(cases.len(), 1, "{log}\n{cases:#?}");
    let case = &cases[0];
    assert_eq!(case["category"]["code"], "0507", "{case:#}");
    assert_eq!(case["category"]["name"], "乱堆物堆料");
    assert_eq!(case["event"], "material_piles");
    assert_eq!(case["status"], "closed", "{case:#}");
    assert_eq!(case["close_reason"], "auto-verified");
    let at = |field: &str| case[field].as_f64().unwrap() - case["first_seen"].as_f64().unwrap();
    // Seen first once three samples agreed (8, 10, 12 s), last at 34 s, closed
    // once absent for the 8 s window.
    let start = case["first_seen"].as_f64().unwrap() - START_UNIX;
    assert!((10.0..=16.0).contains(&start), "first seen at {start} s");
    let last = start + at("last_seen");
    assert!((32.0..36.0).contains(&last), "last seen at {last} s");
    let absent = at("closed_at") - at("last_seen");
    assert!(
        (8.0..12.0).contains(&absent),
        "closed after {absent} s absent"
    );
    // Its box lies on the object, to a grid cell (10×13 pixels here), and covers a good
    // part of it: the painted wall at the object's top is as bright as the sunlit asphalt
    // it covers and is not seen (cell means only: a limit the README names), the floor
    // boards below it are.
    let bbox: Vec<f64> = case["bbox"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let (x, y) = (f64::from(OBJECT_AT.0), f64::from(OBJECT_AT.1));
    let object = [x, y, x + 80.0, y + 56.0];
    let within = bbox[0] >= object[0] - 10.0
        && bbox[1] >= object[1] - 14.0
        && bbox[2] <= object[2] + 10.0
        && bbox[3] <= object[3] + 14.0;
    let area = (bbox[2] - bbox[0]) * (bbox[3] - bbox[1]);
    assert!(
        within && area >= 80.0 * 56.0 / 3.0,
        "box {bbox:?}, object {object:?}"
    );
    let detail: Value = serde_json::from_str(&ok(cgbot(&[
        "cases",
        "show",
        case["id"].as_str().unwrap(),
        "--db",
        &run.db(),
    ])))
    .unwrap();
    let kinds: Vec<&str> = detail["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert!(Path::new(e["path"].as_str().unwrap()).is_file());
            e["kind"].as_str().unwrap()
        })
        .collect();
    for kind in ["first", "filed", "after"] {
        assert!(kinds.contains(&kind), "{kinds:?}");
    }
}

#[test]
fn people_walking_through_and_standing_at_a_table_file_nothing() {
    let run = Run::new();
    // The whole floor of the corridor, where four people walk in, stand at the table
    // for up to half a minute and leave.
    let camera = run.camera("[[0.0, 0.56], [1.0, 0.56], [1.0, 1.0], [0.0, 1.0]]");
    let log = run.replay(sample("people-walking.mp4").to_str().unwrap(), &camera, &[]);
    assert!(log.contains("cases: 0 candidates, 0 filed"), "{log}");
    assert!(run.cases().is_empty());
}
