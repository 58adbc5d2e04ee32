//! Camera lists end to end: `cgbot cameras import` on city point lists and `cgbot cameras
//! diff` between camera files and directories, at the size of the reference deployment.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A quarter's camera point list, as a city exports it from Excel: UTF-8 with a BOM,
/// Chinese headers, a serial number and a remarks column.
struct PointList {
    rows: Vec<[String; 6]>,
}

impl PointList {
    /// `count` cameras numbered from `first`.
    fn new(first: usize, count: usize) -> Self {
        let rows = (first..first + count)
            .map(|i| {
                [
                    format!("3301020000132{i:07}"),
                    format!("人民路{i}号 \"东口\""),
                    format!(
                        "rtsp://admin:secret{i}@10.{}.{}.{}/main",
                        i / 65536,
                        i / 256 % 256,
                        i % 256
                    ),
                    format!("{:.5}", 120.0 + i as f64 * 1e-4),
                    format!("{:.5}", 30.0 + i as f64 * 1e-4),
                    if i % 10 == 0 { "是" } else { "否" }.to_string(),
                ]
            })
            .collect();
        Self { rows }
    }

    fn write(&self, path: &Path) {
        let mut text =
            String::from("\u{feff}序号,设备编码,点位名称,RTSP地址,经度,纬度,重点,备注\n");
        for (n, row) in self.rows.iter().enumerate() {
            let name = row[1].replace('"', "\"\"");
            text.push_str(&format!(
                "{},{},\"{name}\",{},{},{},{},\n",
                n + 1,
                row[0],
                row[2],
                row[3],
                row[4],
                row[5]
            ));
        }
        std::fs::write(path, text).unwrap();
    }
}

fn import(csv: &Path, toml: &Path) -> Duration {
    let (out, took) = cgbot_timed(&["cameras", "import", &path_arg(csv), "-o", &path_arg(toml)]);
    ok(out);
    took
}

fn diff_json(old: &Path, new: &Path) -> Value {
    serde_json::from_str(&ok(cgbot(&[
        "cameras",
        "diff",
        &path_arg(old),
        &path_arg(new),
        "--json",
    ])))
    .unwrap()
}

#[test]
fn a_quarterly_rotation_of_7000_cameras_imports_and_diffs_in_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| -> PathBuf { dir.path().join(name) };

    let old = PointList::new(0, 7000);
    old.write(&path("q1.csv"));
    let import_took = import(&path("q1.csv"), &path("q1.toml"));

    // Next quarter: 300 cameras gone, 250 new, 40 moved to another stream, 25 renamed,
    // 18 made priority, and the list sorted the other way round.
    let mut new = PointList::new(0, 7000);
    new.rows.drain(1000..1300);
    new.rows.extend(PointList::new(7000, 250).rows);
    for row in &mut new.rows[..40] {
        row[2] = row[2].replace("/main", "/ch1/main");
    }
    for row in &mut new.rows[100..125] {
        row[1].push_str(" (迁移)");
    }
    for row in new.rows[200..220].iter_mut().filter(|r| r[5] == "否") {
        row[5] = "1".into();
    }
    new.rows.reverse();
    new.write(&path("q2.csv"));
    import(&path("q2.csv"), &path("q2.toml"));

    let (q1, q2) = (path_arg(&path("q1.toml")), path_arg(&path("q2.toml")));
    let (out, diff_took) = cgbot_timed(&["cameras", "diff", &q1, &q2, "--json"]);
    let diff: Value = serde_json::from_str(&ok(out)).unwrap();
    let count = |key: &str| diff[key].as_array().unwrap().len();
    assert_eq!(
        (count("added"), count("removed"), count("changed")),
        (250, 300, 83)
    );
    assert_eq!(diff["unchanged"], 7000 - 300 - 83);
    assert_eq!(diff["added"][0], "33010200001320007000");
    assert_eq!(diff["removed"][0], "33010200001320001000");
    assert_eq!(
        diff["changed"][0],
        serde_json::json!({"id": "33010200001320000000", "fields": ["main_stream"]})
    );
    assert_eq!(diff["changed"][40]["fields"][0], "name");
    assert_eq!(diff["changed"][82]["fields"][0], "priority");

    // The next quarter merged into the file in use changes the same cameras.
    std::fs::copy(path("q1.toml"), path("merged.toml")).unwrap();
    let merge_took = import(&path("q2.csv"), &path("merged.toml"));
    let merged = diff_json(&path("q1.toml"), &path("merged.toml"));
    assert_eq!(merged, diff);

    // A whole-list import and a diff of two such lists take well under a couple of seconds
    // in release builds; the bound only catches something gone quadratic.
    eprintln!(
        "import of 7000 rows: {import_took:?}, merged into 7000 cameras: {merge_took:?}, \
         diff of 7000 cameras: {diff_took:?}"
    );
    assert!(import_took < Duration::from_secs(10), "{import_took:?}");
    assert!(merge_took < Duration::from_secs(10), "{merge_took:?}");
    assert!(diff_took < Duration::from_secs(10), "{diff_took:?}");
}

#[test]
fn diff_names_what_changed_and_never_prints_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let camera = |id: &str, stream: &str, zone: &str| {
        format!(
            "[[camera]]\nid = \"{id}\"\nname = \"路口 {id}\"\nmain_stream = \"{stream}\"\n\
             [[camera.zone]]\nid = \"east\"\npolygon = {zone}\n\
             rules = [{{ event = \"illegal_parking\" }}]\n"
        )
    };
    let half = "[[0.5, 0.0], [1.0, 0.0], [1.0, 1.0], [0.5, 1.0]]";
    let third = "[[0.7, 0.0], [1.0, 0.0], [1.0, 1.0], [0.7, 1.0]]";
    // The old list is a directory of two files; the new one a single file.
    let old = dir.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::write(
        old.join("a.toml"),
        camera("cam-1", "rtsp://u:oldpass@10.0.0.1/main", half)
            + &camera("cam-2", "rtsp://u:p@10.0.0.2/main", half),
    )
    .unwrap();
    std::fs::write(
        old.join("b.toml"),
        camera("cam-3", "rtsp://u:p@10.0.0.3/main", half)
            + &camera("cam-4", "rtsp://u:p@10.0.0.4/main", half),
    )
    .unwrap();
    let new = dir.path().join("new.toml");
    std::fs::write(
        &new,
        camera("cam-4", "rtsp://u:p@10.0.0.4/main", half)
            + &camera("cam-5", "rtsp://u:newpass@10.0.0.5/main", half)
            + &camera("cam-1", "rtsp://u:newpass@10.0.0.1/main", half)
            + &camera("cam-2", "rtsp://u:p@10.0.0.2/main", third),
    )
    .unwrap();

    let text = ok(cgbot(&[
        "cameras",
        "diff",
        &path_arg(&old),
        &path_arg(&new),
    ]));
    let expected = format!(
        "{} → {}: 1 added, 1 removed, 2 changed, 1 unchanged\n\
         added:\n  cam-5  路口 cam-5  rtsp://***@10.0.0.5/main\n\
         removed:\n  cam-3  路口 cam-3\n\
         changed:\n  cam-1  main_stream (credentials changed)\n  cam-2  zone `east`\n",
        old.display(),
        new.display()
    );
    assert_eq!(text, expected);
    assert!(!text.contains("pass"));

    let same = diff_json(&old, &old);
    assert_eq!(same["unchanged"], 4);
    assert_eq!(same["changed"], serde_json::json!([]));

    let err = fails_config(cgbot(&["cameras", "diff", &path_arg(&old), "missing.toml"]));
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn import_writes_stdout_and_refuses_bad_lists_naming_file_row_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    std::fs::write(
        &csv,
        "Camera_ID,Name,RTSP,Lon,Lat,Notes\n\
         cam-1,East gate,rtsp://u:secret@10.0.0.1/main,120.1,30.2,new\n\
         cam-1,West gate,rtsp://10.0.0.2/main,120.1,30.2,\n\
         cam-3,North gate,rtsp://10.0.0.3/main,east,95,\n\
         cam-4,South gate,rtsp://10.0.0.4/main,,,\n",
    )
    .unwrap();
    let err = fails(cgbot(&["cameras", "import", &path_arg(&csv)]));
    assert!(
        err.contains(&format!(
            "error: {}: 2 bad rows:\n  row 3, column A `Camera_ID`: `cam-1` is also the id of row 2\n  \
             row 4, column D `Lon`: `east` is not a number, column E `Lat`: 95 is not a latitude",
            csv.display()
        )),
        "{err}"
    );
    assert!(err.contains("--skip-invalid"), "{err}");

    let out = cgbot(&[
        "cameras",
        "import",
        &path_arg(&csv),
        "--skip-invalid",
        "--default-zone",
        "illegal_parking,street_vending",
    ]);
    let toml = ok(out.clone());
    let err = stderr(&out);
    assert!(
        err.contains("note: ") && err.contains("columns ignored: Notes"),
        "{err}"
    );
    assert!(
        err.contains("2 cameras written to stdout, each watching illegal_parking, street_vending"),
        "{err}"
    );
    assert!(err.contains("skipped 2 bad rows:\n  row 3"), "{err}");
    assert!(
        toml.contains("id = \"cam-4\"") && !toml.contains("cam-3"),
        "{toml}"
    );

    let err = fails(cgbot(&[
        "cameras",
        "import",
        &path_arg(&csv),
        "--rules", // the old name of --default-zone
        "jaywalking",
    ]));
    assert!(err.contains("unknown event `jaywalking`"), "{err}");

    // GBK, as a Chinese Excel saves plain CSV: "设备编码,RTSP地址".
    let gbk = dir.path().join("gbk.csv");
    std::fs::write(
        &gbk,
        b"\xc9\xe8\xb1\xb8\xb1\xe0\xc2\xeb,RTSP\xb5\xd8\xd6\xb7\ncam-1,rtsp://h/1\n",
    )
    .unwrap();
    let err = fails(cgbot(&["cameras", "import", &path_arg(&gbk)]));
    assert!(
        err.contains(&format!("{}: not UTF-8", gbk.display()))
            && err.contains("iconv -f GBK -t UTF-8"),
        "{err}"
    );
    let err = fails(cgbot(&["cameras", "import", "nowhere.csv"]));
    assert!(err.contains("nowhere.csv"), "{err}");
}

#[test]
fn replace_writes_the_imported_file_afresh() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    let toml = dir.path().join("cameras.toml");
    PointList::new(0, 3).write(&csv);
    import(&csv, &toml);
    std::fs::write(
        &toml,
        std::fs::read_to_string(&toml).unwrap() + "# a note that --replace drops\n",
    )
    .unwrap();
    PointList::new(1, 3).write(&csv);
    let out = cgbot(&[
        "cameras",
        "import",
        &path_arg(&csv),
        "-o",
        &path_arg(&toml),
        "--replace",
    ]);
    let err = stderr(&out);
    ok(out);
    assert!(err.contains("3 cameras written to"), "{err}");
    // Written through a temporary file, which is gone.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(text.contains("33010200001320000003") && !text.contains("33010200001320000000\""));
    assert!(!text.contains("a note"));
    // It loads as a camera file.
    assert_eq!(diff_json(&toml, &toml)["unchanged"], 3);
}

/// Inserts `zone` (TOML text of `[[camera.zone]]` tables) after camera `id`'s table.
fn add_zone_by_hand(text: &str, id: &str, zone: &str) -> String {
    let start = text.find(&format!("id = \"{id}\"")).unwrap();
    let end = text[start..]
        .find("\n[[camera]]")
        .map_or(text.len(), |i| start + i + 1);
    format!("{}{zone}\n{}", &text[..end], &text[end..])
}

#[test]
fn a_quarterly_reimport_keeps_hand_drawn_zones() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| -> PathBuf { dir.path().join(name) };
    let id = |i: usize| format!("3301020000132{i:07}");

    // Quarter A: cameras 0..4, imported with no zones; an operator draws a zone on
    // camera 1 and notes something above camera 2.
    PointList::new(0, 4).write(&path("a.csv"));
    let out = cgbot(&[
        "cameras",
        "import",
        &path_arg(&path("a.csv")),
        "-o",
        &path_arg(&path("cams.toml")),
    ]);
    let err = stderr(&out);
    ok(out);
    assert!(
        err.contains("4 cameras written to") && err.contains("with no zones yet"),
        "{err}"
    );
    let zone = "# The bus stop, drawn 2026-01-05.\n[[camera.zone]]\nid = \"bus-stop\"\n\
                polygon = [[0.0, 0.6], [0.5, 0.6], [0.5, 1.0], [0.0, 1.0]]\n\
                rules = [{ event = \"illegal_parking\", min_dwell = \"60s\" }]\n";
    let text = std::fs::read_to_string(path("cams.toml")).unwrap();
    let text = add_zone_by_hand(&text, &id(1), zone).replace(
        &format!("[[camera]]\nid = \"{}\"", id(2)),
        &format!(
            "# Pole replaced 2026-02.\n[[camera]]\nid = \"{}\"\ntracker = {{ max_missed = 5 }}",
            id(2)
        ),
    );
    std::fs::write(path("cams.toml"), &text).unwrap();
    std::fs::copy(path("cams.toml"), path("before.toml")).unwrap();

    // Quarter B: camera 0 gone, camera 4 new, camera 1 renamed, camera 2 on a new stream.
    let mut next = PointList::new(1, 4);
    next.rows[0][1] = "人民路1号 (迁移)".into();
    next.rows[1][2] = next.rows[1][2].replace("/main", "/ch1/main");
    next.write(&path("b.csv"));
    let out = cgbot(&[
        "cameras",
        "import",
        &path_arg(&path("b.csv")),
        "-o",
        &path_arg(&path("cams.toml")),
    ]);
    let err = stderr(&out);
    ok(out);
    assert!(
        err.contains("kept zones of 3 cameras, added 1, removed 1"),
        "{err}"
    );
    assert!(!err.contains("warning"), "{err}");

    let after = std::fs::read_to_string(path("cams.toml")).unwrap();
    assert!(after.contains(zone), "{after}");
    assert!(
        after.contains("# Pole replaced 2026-02.\n[[camera]]"),
        "{after}"
    );
    assert!(after.contains("tracker = { max_missed = 5 }"), "{after}");
    // Camera 3 was not touched at all: its table is as it was.
    let table = |text: &str, i: usize| -> String {
        let start = text.find(&format!("id = \"{}\"", id(i))).unwrap();
        let end = text[start..]
            .find("[[camera]]")
            .map_or(text.len(), |e| start + e);
        text[start..end].trim_end().to_string()
    };
    assert_eq!(table(&after, 3), table(&text, 3));

    let diff = diff_json(&path("before.toml"), &path("cams.toml"));
    assert_eq!(
        diff,
        serde_json::json!({
            "added": [id(4)],
            "removed": [id(0)],
            "changed": [
                {"id": id(1), "fields": ["name"]},
                {"id": id(2), "fields": ["main_stream"]},
            ],
            "unchanged": 1,
        })
    );
    // The new camera has no zones; the refined one kept its own.
    let printed = ok(cgbot(&[
        "cameras",
        "diff",
        &path_arg(&path("before.toml")),
        &path_arg(&path("cams.toml")),
    ]));
    assert!(!printed.contains("zone"), "{printed}");
}

#[test]
fn an_imported_camera_has_no_zones_and_files_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    let toml = dir.path().join("cams.toml");
    let db = dir.path().join("cases.db");
    // The street clip's camera, as a point list names it: the bus and the van stand in the
    // picture for the whole clip.
    std::fs::write(
        &csv,
        "设备编码,点位名称,RTSP地址\ndemo-street-01,演示路口,rtsp://127.0.0.1:8554/cam/0\n",
    )
    .unwrap();
    import(&csv, &toml);
    let text = std::fs::read_to_string(&toml).unwrap();
    assert!(!text.contains("\n[[camera.zone]]"), "{text}");
    let out = cgbot(&[
        "replay",
        &path_arg(&sample("street-static-h264.mp4")),
        "--every",
        "2s",
        "--camera",
        &path_arg(&toml),
        "--db",
        &path_arg(&db),
        "--start",
        "2026-11-24T00:00:00Z",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let cases: Value = serde_json::from_str(&ok(cgbot(&[
        "cases",
        "list",
        "--json",
        "--db",
        &path_arg(&db),
    ])))
    .unwrap();
    assert_eq!(cases, serde_json::json!([]));

    // The old behaviour on request: one whole-picture zone per camera.
    let out = cgbot(&[
        "cameras",
        "import",
        &path_arg(&csv),
        "--default-zone",
        "illegal_parking",
    ]);
    let err = stderr(&out);
    let text = ok(out);
    assert!(
        err.contains("each watching illegal_parking in its whole frame"),
        "{err}"
    );
    assert!(
        text.contains(
            "[[camera.zone]]\nid = \"whole-frame\"\n\
             polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\n\
             rules = [{ event = \"illegal_parking\" }]\n"
        ),
        "{text}"
    );
}

/// `cameras import --secrets`: the passwords of the point list go to a private secrets
/// file, the camera file names them and holds none; `cameras diff` with the secrets file
/// still sees a changed password, and never prints it.
#[test]
fn import_moves_passwords_to_a_secrets_file_and_diff_still_sees_them_change() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("points.csv");
    let list = |password: &str| {
        format!(
            "id,name,main_stream,sub_stream\n\
             cam-1,East gate,rtsp://admin:{password}@10.0.0.1/main,rtsp://admin:{password}@10.0.0.1/sub\n\
             cam-2,West gate,rtsp://10.0.0.2/main,\n"
        )
    };
    std::fs::write(&csv, list("Hunter%402")).unwrap();
    let (cams, secrets) = (
        dir.path().join("cams.toml"),
        dir.path().join("secrets.toml"),
    );
    let out = cgbot(&[
        "cameras",
        "import",
        &path_arg(&csv),
        "-o",
        &path_arg(&cams),
        "--secrets",
        &path_arg(&secrets),
    ]);
    let err = stderr(&out);
    ok(out);
    assert!(err.contains("credentials of 1 camera moved to"), "{err}");
    let text = std::fs::read_to_string(&cams).unwrap();
    assert!(
        !text.contains("Hunter") && !text.contains("admin"),
        "{text}"
    );
    assert!(text.contains("credentials = \"cam-1\""), "{text}");
    let secret_text = std::fs::read_to_string(&secrets).unwrap();
    assert!(
        secret_text.contains("password = \"Hunter@2\""),
        "{secret_text}"
    );
    let mode = std::fs::metadata(&secrets).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A rotation changes the password only: the camera file stays as it is, the secrets
    // file (merged into) gets the new password.
    let old = dir.path().join("old.toml");
    std::fs::copy(&cams, &old).unwrap();
    std::fs::write(&csv, list("n3w-pass")).unwrap();
    ok(cgbot(&[
        "cameras",
        "import",
        &path_arg(&csv),
        "-o",
        &path_arg(&cams),
        "--secrets",
        &path_arg(&secrets),
    ]));
    assert_eq!(std::fs::read_to_string(&cams).unwrap(), text);
    let secret_text = std::fs::read_to_string(&secrets).unwrap();
    assert!(secret_text.contains("password = \"n3w-pass\"") && !secret_text.contains("Hunter"));

    // Two lists naming different credentials of one secrets file: the change shows,
    // the passwords do not.
    std::fs::write(
        &secrets,
        format!(
            "{secret_text}\n[credentials.cam-1-old]\nuser = \"admin\"\npassword = \"Hunter@2\"\n"
        ),
    )
    .unwrap();
    std::fs::write(
        &old,
        text.replace("credentials = \"cam-1\"", "credentials = \"cam-1-old\""),
    )
    .unwrap();
    let diff = |secrets: &Path| {
        cgbot(&[
            "cameras",
            "diff",
            &path_arg(&old),
            &path_arg(&cams),
            "--secrets",
            &path_arg(secrets),
        ])
    };
    let changed = ok(diff(&secrets));
    assert!(
        changed.contains("main_stream (credentials changed)")
            && changed.contains("sub_stream (credentials changed)"),
        "{changed}"
    );
    assert!(
        !changed.contains("n3w") && !changed.contains("Hunter"),
        "{changed}"
    );

    // A secrets file others may read is refused, naming it and the camera's field.
    std::fs::set_permissions(&secrets, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = fails_config(diff(&secrets));
    assert!(
        err.contains("old.toml: camera[0] `cam-1`.credentials: secrets file")
            && err.contains("chmod 600"),
        "{err}"
    );
}
