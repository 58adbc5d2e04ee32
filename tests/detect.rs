//! `cgbot detect` end to end: parity with the Python onnxruntime reference, evidence
//! images, other model layouts, and clear failures on bad input.

mod common;

use common::*;
use serde_json::Value;

/// Same tolerance as the acceptance criteria: same class, IoU ≥ 0.95, score ± 0.02.
const SCORE_TOLERANCE: f64 = 0.02;
const MIN_IOU: f64 = 0.95;

fn iou(a: &[f64], b: &[f64]) -> f64 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area = |r: &[f64]| (r[2] - r[0]) * (r[3] - r[1]);
    w * h / (area(a) + area(b) - w * h)
}

struct Det {
    label: String,
    score: f64,
    bbox: Vec<f64>,
}

fn parse(list: &Value) -> Vec<Det> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| Det {
            label: d["label"].as_str().unwrap().to_string(),
            score: d["score"].as_f64().unwrap(),
            bbox: d["box"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect(),
        })
        .collect()
}

/// Every detection of `from` clearly above the threshold has a twin in `to`.
fn assert_matched(image: &str, from: &[Det], to: &[Det], conf: f64, what: &str) {
    for d in from.iter().filter(|d| d.score >= conf + SCORE_TOLERANCE) {
        let twin = to
            .iter()
            .filter(|t| t.label == d.label)
            .max_by(|a, b| iou(&a.bbox, &d.bbox).total_cmp(&iou(&b.bbox, &d.bbox)));
        let Some(twin) = twin else {
            panic!(
                "{image}: {what} {} {:.3} has no counterpart",
                d.label, d.score
            );
        };
        let overlap = iou(&twin.bbox, &d.bbox);
        assert!(
            overlap >= MIN_IOU,
            "{image}: {} IoU {overlap:.3} < {MIN_IOU}",
            d.label
        );
        assert!(
            (twin.score - d.score).abs() <= SCORE_TOLERANCE,
            "{image}: {} score {:.4} vs {:.4}",
            d.label,
            twin.score,
            d.score
        );
    }
}

#[test]
fn detections_match_python_onnxruntime_reference() {
    let reference: Value = serde_json::from_str(include_str!("reference/yolox_nano.json")).unwrap();
    let conf = reference["conf"].as_f64().unwrap();
    let entries = reference["images"].as_array().unwrap();
    let paths: Vec<String> = entries
        .iter()
        .map(|e| sample(e["image"].as_str().unwrap()).display().to_string())
        .collect();
    let mut args = vec!["detect", "--json", "--conf", "0.25"];
    args.extend(paths.iter().map(String::as_str));
    let ours: Value = serde_json::from_str(&ok(cgbot(&args))).unwrap();
    let ours = ours.as_array().unwrap();
    assert_eq!(ours.len(), entries.len());
    let mut matched = 0;
    for (mine, theirs) in ours.iter().zip(entries) {
        let image = theirs["image"].as_str().unwrap();
        assert!(mine["image"].as_str().unwrap().ends_with(image));
        let (mine, theirs) = (parse(&mine["detections"]), parse(&theirs["detections"]));
        assert_matched(image, &theirs, &mine, conf, "reference");
        assert_matched(image, &mine, &theirs, conf, "our");
        matched += theirs
            .iter()
            .filter(|d| d.score >= conf + SCORE_TOLERANCE)
            .count();
    }
    assert!(
        matched >= 15,
        "only {matched} reference detections compared"
    );
}

#[test]
fn annotate_writes_a_jpeg_per_image_with_source_size() {
    let dir = tempfile::tempdir().unwrap();
    let image = sample("street-bus-car.jpg");
    let out = ok(cgbot(&[
        "detect",
        image.to_str().unwrap(),
        "--annotate",
        dir.path().to_str().unwrap(),
    ]));
    assert!(out.contains("bus"), "{out}");
    let written = image::open(dir.path().join("street-bus-car.jpg")).unwrap();
    assert_eq!((written.width(), written.height()), (500, 375));
    // Boxes were drawn: the annotated image differs from the source.
    let source = image::open(&image).unwrap().to_rgb8();
    let differing = source
        .pixels()
        .zip(written.to_rgb8().pixels())
        .filter(|(a, b)| a.0.iter().zip(b.0).any(|(x, y)| x.abs_diff(y) > 60))
        .count();
    assert!(differing > 500, "only {differing} pixels changed");
}

#[test]
fn a_file_that_is_not_an_image_is_named_in_the_error() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("notes.jpg");
    std::fs::write(&fake, "meeting notes, not a picture\n".repeat(50)).unwrap();
    let err = fails(cgbot(&["detect", fake.to_str().unwrap()]));
    assert!(err.contains("notes.jpg"), "{err}");
}

#[test]
fn good_images_are_reported_even_when_another_fails() {
    let missing = "/nonexistent/street.jpg";
    let good = sample("street-person.jpg");
    let out = cgbot(&["detect", "--json", missing, good.to_str().unwrap()]);
    let err = fails(out.clone());
    assert!(
        err.contains("/nonexistent/street.jpg: no such file"),
        "{err}"
    );
    let json: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["detections"][0]["label"], "person");
}

/// Writes `NAME.onnx.toml` describing one of the synthetic test models.
fn sidecar(model: &std::path::Path, format: &str, labels: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join(model.file_name().unwrap());
    std::fs::copy(model, &copy).unwrap();
    let mut toml = copy.as_os_str().to_owned();
    toml.push(".toml");
    std::fs::write(
        toml,
        format!(
            "[[model]]\nname = \"test\"\nfile = \"{}\"\nformat = \"{format}\"\n\
             input = {{ width = 64, height = 64, layout = \"nchw\", colour = \"rgb\", scale = 1.0, pad = 0 }}\n\
             labels = {labels}\n",
            model.file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    dir
}

#[test]
fn yolov8_layout_model_decodes_boxes_and_suppresses_overlaps() {
    let dir = sidecar(
        &test_model("tiny_yolov8.onnx"),
        "yolov8",
        r#"["garbage_pile", "vendor_cart"]"#,
    );
    let model = dir.path().join("tiny_yolov8.onnx");
    let image = dir.path().join("grey.png");
    // Mid-grey 64×64: the model's class-1 score of anchor 1 is the image mean / 255.
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=0x999999:s=64x64",
        "-frames:v",
        "1",
        image.to_str().unwrap(),
    ]);
    let out = ok(cgbot(&[
        "detect",
        "--json",
        "--model",
        model.to_str().unwrap(),
        "--conf",
        "0.25",
        image.to_str().unwrap(),
    ]));
    let json: Value = serde_json::from_str(&out).unwrap();
    let found = parse(&json[0]["detections"]);
    assert_eq!(
        found.len(),
        2,
        "anchor 2 overlaps anchor 0 and must be suppressed"
    );
    assert_eq!(found[0].label, "garbage_pile");
    assert!((found[0].score - 0.9).abs() < 1e-4);
    assert_eq!(found[0].bbox, [12.0, 12.0, 20.0, 20.0]);
    assert_eq!(found[1].label, "vendor_cart");
    assert!(
        (found[1].score - 0x99 as f64 / 255.0).abs() < 0.01,
        "{}",
        found[1].score
    );
    assert_eq!(found[1].bbox, [32.0, 32.0, 48.0, 48.0]);
}

#[test]
fn a_model_with_an_unexpected_output_shape_is_a_clear_error() {
    let dir = sidecar(&test_model("not_a_detector.onnx"), "yolov8", r#"["thing"]"#);
    let model = dir.path().join("not_a_detector.onnx");
    let err = fails(cgbot(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        sample("street-person.jpg").to_str().unwrap(),
    ]));
    assert!(err.contains("not_a_detector.onnx"), "{err}");
    assert!(err.contains("output of shape [1, 10]"), "{err}");
}

#[test]
fn a_file_that_is_not_onnx_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("yolox_nano.onnx");
    std::fs::write(&model, b"<html>404 not found</html>").unwrap();
    // Named like the catalogue's model: the hash check catches it before ONNX Runtime.
    let err = fails(cgbot(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        sample("street-person.jpg").to_str().unwrap(),
    ]));
    assert!(err.contains("expected 4903c9058f6e"), "{err}");
    // Described by a sidecar without a hash: ONNX Runtime's parse error, with the path.
    let dir = sidecar(&model, "yolox", r#"["thing"]"#);
    let model = dir.path().join("yolox_nano.onnx");
    let err = fails(cgbot(&[
        "detect",
        "--model",
        model.to_str().unwrap(),
        sample("street-person.jpg").to_str().unwrap(),
    ]));
    assert!(
        err.contains("cannot load model") && err.contains("yolox_nano.onnx"),
        "{err}"
    );
}

#[test]
fn a_gpu_provider_that_cannot_start_is_an_error_not_a_cpu_fallback() {
    let err = fails(cgbot(&[
        "detect",
        "--provider",
        "cuda",
        sample("street-person.jpg").to_str().unwrap(),
    ]));
    assert!(
        err.contains("cuda:0 execution provider could not be registered"),
        "{err}"
    );
}

#[test]
fn models_verify_reports_a_corrupt_model_file() {
    assert!(ok(cgbot(&["models", "verify"])).contains("ok      yolox_nano"));
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("yolox_nano.onnx"), b"truncated").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args(["models", "verify"])
        .env("CGBOT_MODEL_DIR", dir.path())
        .output()
        .unwrap();
    let err = fails(out.clone());
    assert!(
        stdout(&out).contains("FAILED  yolox_nano"),
        "{}",
        stdout(&out)
    );
    assert!(err.contains("1 model(s) failed"), "{err}");
}
