//! `cgbot replay` end to end: JSON lines, sampling, batching, damaged and truncated clips.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

#[test]
fn json_lines_give_one_object_per_interval_with_people_found() {
    let clip = sample("people-walking.mp4");
    let out = cgbot(&["replay", clip.to_str().unwrap(), "--every", "10s", "--json"]);
    let summary = stderr(&out);
    let frames = json_lines(&ok(out));
    let pts: Vec<f64> = frames.iter().map(|f| f["pts"].as_f64().unwrap()).collect();
    assert_eq!(
        pts,
        (0..14).map(|i| f64::from(i) * 10.0).collect::<Vec<_>>()
    );
    let people = frames
        .iter()
        .filter(|f| {
            f["detections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["label"] == "person")
        })
        .count();
    assert!(
        people >= 8,
        "a person was found in only {people} of 14 samples"
    );
    assert!(
        summary.contains("1394 frames decoded, 14 analysed"),
        "{summary}"
    );
    for stage in ["demux", "decode", "preprocess", "inference", "postprocess"] {
        assert!(summary.contains(stage), "summary lacks {stage}: {summary}");
    }
}

#[test]
fn keyframes_only_analyses_exactly_the_keyframes() {
    let clip = sample("people-walking-1080p-h265.mp4");
    let (packets, keys) = ffprobe_packets(&clip);
    let out = cgbot(&[
        "replay",
        clip.to_str().unwrap(),
        "--keyframes-only",
        "--json",
    ]);
    let summary = stderr(&out);
    let frames = json_lines(&ok(out));
    assert_eq!(frames.len() as u64, keys);
    assert!(frames.iter().all(|f| f["keyframe"] == true));
    assert!(
        summary.contains(&format!(
            "{keys} decoded ({} skipped before the decoder",
            packets - keys
        )),
        "{summary}"
    );
}

#[test]
fn annotate_writes_frames_with_detections() {
    let dir = tempfile::tempdir().unwrap();
    let clip = sample("bottles.mp4");
    let out = ok(cgbot(&[
        "replay",
        clip.to_str().unwrap(),
        "--every",
        "10s",
        "--annotate",
        dir.path().to_str().unwrap(),
    ]));
    assert!(out.contains("bottle"), "{out}");
    let written: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        written.len(),
        out.lines().count(),
        "one image per frame with detections"
    );
    assert!(
        dir.path().join("bottles-000000.000s.jpg").is_file(),
        "{written:?}"
    );
}

#[test]
fn frames_are_batched_for_a_dynamic_batch_model_without_mixing_them_up() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny_yolov8.onnx");
    std::fs::copy(test_model("tiny_yolov8.onnx"), &model).unwrap();
    std::fs::write(
        dir.path().join("tiny_yolov8.onnx.toml"),
        "[[model]]\nname = \"tiny\"\nfile = \"tiny_yolov8.onnx\"\nformat = \"yolov8\"\n\
         input = { width = 64, height = 64, layout = \"nchw\", colour = \"rgb\", scale = 1.0, pad = 0 }\n\
         labels = [\"garbage_pile\", \"vendor_cart\"]\n",
    )
    .unwrap();
    // 24 uniform frames, frame n with luma 16 + 8n (lossless), so each frame's mean —
    // and the model's vendor_cart score — differs.
    let clip = dir.path().join("ramp.mkv");
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        "color=c=black:s=64x64:r=10:d=2.4,format=yuv420p,geq=lum='16+8*N':cb=128:cr=128",
        "-c:v",
        "libx264",
        "-qp",
        "0",
        "-g",
        "1000",
        clip.to_str().unwrap(),
    ]);
    let out = cgbot(&[
        "replay",
        clip.to_str().unwrap(),
        "--model",
        model.to_str().unwrap(),
        "--batch",
        "4",
        "--conf",
        "0.01",
        "--json",
    ]);
    let summary = stderr(&out);
    let frames = json_lines(&ok(out));
    assert_eq!(frames.len(), 24);
    for (n, frame) in frames.iter().enumerate() {
        // Limited-range luma to RGB: (Y - 16) × 255/219.
        let expected = (8.0 * n as f64 * 255.0 / 219.0).round() / 255.0;
        let score = frame["detections"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["label"] == "vendor_cart")
            .map_or(0.0, |d| d["score"].as_f64().unwrap());
        if expected >= 0.05 {
            assert!(
                (score - expected).abs() < 0.01,
                "frame {n}: score {score}, expected {expected}"
            );
        }
    }
    let batches: u64 = summary
        .split(" inference batches")
        .next()
        .and_then(|s| s.rsplit('(').next())
        .and_then(|s| s.parse().ok())
        .expect("batch count in summary");
    assert!(
        (6..24).contains(&batches),
        "24 frames went through in {batches} batches: {summary}"
    );
}

#[test]
fn a_truncated_clip_yields_what_it_holds_and_says_it_was_cut() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("cut.mp4");
    let bytes = std::fs::read(sample("people-walking.mp4")).unwrap(); // index at the front
    std::fs::write(&clip, &bytes[..bytes.len() / 2]).unwrap();
    let out = cgbot(&["replay", clip.to_str().unwrap(), "--every", "20s", "--json"]);
    let summary = stderr(&out);
    // The frames it holds are analysed, and the command still fails.
    assert_eq!(out.status.code(), Some(1), "{summary}");
    let frames = json_lines(&stdout(&out));
    assert!((2..=4).contains(&frames.len()), "{summary}");
    assert!(
        summary.contains("of the 1394 access units its index lists (truncated?)"),
        "{summary}"
    );
    assert!(
        summary.contains("cut.mp4: the stream ended early (file ends after"),
        "{summary}"
    );
}

#[test]
fn a_truncated_clip_without_its_index_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let clip = dir.path().join("cut.mp4");
    let bytes = std::fs::read(sample("street-static-h264.mp4")).unwrap(); // index at the end
    std::fs::write(&clip, &bytes[..bytes.len() / 2]).unwrap();
    let err = fails(cgbot(&["replay", clip.to_str().unwrap()]));
    assert!(
        err.contains("cut.mp4: cannot open as video or image"),
        "{err}"
    );
}

#[test]
fn bad_arguments_and_missing_clips_fail_cleanly() {
    let clip = sample("people-walking.mp4");
    let err = fails(cgbot(&[
        "replay",
        clip.to_str().unwrap(),
        "--every",
        "soon",
    ]));
    assert!(err.contains("--every `soon`"), "{err}");
    let err = fails(cgbot(&["replay", "/nonexistent/cam7.mp4"]));
    assert!(err.contains("/nonexistent/cam7.mp4: no such file"), "{err}");
    let err = fails(cgbot(&[
        "replay",
        clip.to_str().unwrap(),
        "--model",
        "nonexistent_model",
    ]));
    assert!(
        err.contains("unknown model `nonexistent_model`") && err.contains("yolox_nano"),
        "{err}"
    );
}

/// An output that fails (here: annotated images to a directory that cannot exist) ends
/// the run at once with the reason, instead of leaving the stages before it waiting.
#[test]
fn a_failing_output_ends_the_run_with_its_reason() {
    let clip = sample("people-walking.mp4");
    let args = [
        "replay",
        clip.to_str().unwrap(),
        "--annotate",
        "/proc/no-such-dir",
    ];
    let out = run(env!("CARGO_BIN_EXE_cgbot"), &args, Duration::from_secs(30));
    assert!(
        out.status.is_some(),
        "still running after 30 s: the stages wait"
    );
    assert!(!out.succeeded());
    let err = &out.stderr;
    assert!(
        err.contains("cannot write evidence image /proc/no-such-dir/"),
        "{err}"
    );
    assert_eq!(err.matches("No such file").count(), 1, "said once: {err}");
}
