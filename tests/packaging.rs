//! The deployment files under `packaging/` checked offline: the systemd unit verifies, the
//! container images copy files that exist and install the shared libraries the binary
//! links, the Kubernetes manifests parse and their run.toml and camera files pass
//! `cgbot run --check`, and the dashboard and alerts name only metrics the daemon exports.
//! (Images are not built here: no container daemon on the test machines.)

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a YAML file as JSON, parsed by PyYAML (Debian's python3-yaml).
fn yaml_documents(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
        ])
        .arg(path)
        .output()
        .expect("python3 (with python3-yaml) to parse YAML");
    assert!(
        out.status.success(),
        "{}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn systemd_unit_verifies_and_keeps_the_daemon_contract() {
    let unit = read("packaging/systemd/cgbot.service");
    for line in [
        "LimitNOFILE=65536",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "User=cgbot",
        "StateDirectory=cgbot",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/cgbot",
        "PrivateTmp=yes",
        "ExecStart=/usr/bin/cgbot --log-format json run --config /etc/cgbot/run.toml",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} missing");
    }
    // 78 is the exit status main.rs gives configuration errors.
    assert!(read("src/main.rs").contains("const EX_CONFIG: u8 = 78;"));
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze not installed: unit not verified");
        return;
    }
    // The unit as installed, with the binary we built where /usr/bin/cgbot would be.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("cgbot.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/bin/cgbot", env!("CARGO_BIN_EXE_cgbot")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && said.trim().is_empty(), "{said}");
}

/// The C and GCC runtime libraries, in every Debian image.
const BASE_IMAGE_PACKAGES: [&str; 2] = ["libc6", "libgcc-s1"];

/// The shared libraries the binary links that a slim base image lacks, as Debian packages.
fn linked_packages() -> BTreeSet<String> {
    let ldd = Command::new("ldd")
        .arg(env!("CARGO_BIN_EXE_cgbot"))
        .output()
        .unwrap();
    let mut packages = BTreeSet::new();
    // Direct dependencies only: the runtime packages pull in their own.
    let readelf = Command::new("readelf")
        .args(["-d", env!("CARGO_BIN_EXE_cgbot")])
        .output()
        .expect("readelf (binutils)");
    let needed: Vec<String> = String::from_utf8_lossy(&readelf.stdout)
        .lines()
        .filter_map(|l| l.split_once("Shared library: [")?.1.strip_suffix(']'))
        .map(String::from)
        .collect();
    assert!(!needed.is_empty(), "no NEEDED entries");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let Some((name, rest)) = line.trim().split_once(" => ") else {
            continue;
        };
        if !needed.iter().any(|n| n == name) {
            continue;
        }
        let path = Path::new(rest.split(" (").next().unwrap());
        // dpkg knows a file by the path its package installed, before or after usrmerge's
        // /lib → /usr/lib link.
        let package = [path.to_path_buf(), path.canonicalize().unwrap()]
            .iter()
            .find_map(|p| {
                let out = Command::new("dpkg").arg("-S").arg(p).output().ok()?;
                let said = String::from_utf8_lossy(&out.stdout).into_owned();
                let package = said.split(':').next()?.trim().to_string();
                (out.status.success() && !package.is_empty()).then_some(package)
            })
            .unwrap_or_else(|| panic!("no package owns {}", path.display()));
        if !BASE_IMAGE_PACKAGES.contains(&package.as_str()) {
            packages.insert(package);
        }
    }
    packages
}

/// The packages the final stage installs with apt-get.
fn runtime_packages(containerfile: &str) -> BTreeSet<String> {
    let last_stage = containerfile.rsplit("\nFROM ").next().unwrap();
    let install = last_stage
        .split("apt-get install")
        .nth(1)
        .expect("an apt-get install in the runtime stage");
    let line = install.split("&&").next().unwrap().replace("\\\n", " ");
    line.split_whitespace()
        .filter(|w| !w.starts_with('-'))
        .map(String::from)
        .collect()
}

#[test]
fn container_images_copy_existing_files_and_install_what_the_binary_links() {
    let setup = read("scripts/setup.sh");
    for file in ["packaging/Containerfile", "packaging/Containerfile.gpu"] {
        let text = read(file);
        // Same ONNX Runtime as `make setup` and as the ort API expects.
        let version = text
            .lines()
            .find_map(|l| l.strip_prefix("ARG ORT_VERSION="))
            .unwrap_or_else(|| panic!("{file}: no ARG ORT_VERSION"));
        assert!(
            setup.contains(&format!("ORT_VERSION=${{ORT_VERSION:-{version}}}")),
            "{file}: ONNX Runtime {version} is not scripts/setup.sh's"
        );
        assert!(read("src/detect/runtime.rs").contains(&format!("libonnxruntime.so.{version}")));
        for line in text.lines().filter(|l| l.starts_with("COPY ")) {
            let words: Vec<&str> = line.split_whitespace().skip(1).collect();
            if words[0].starts_with("--from=") {
                continue;
            }
            for source in &words[..words.len() - 1] {
                assert!(
                    repo().join(source).exists(),
                    "{file}: COPY source {source} missing"
                );
            }
        }
        for needed in [
            "USER cgbot",
            "EXPOSE 8080",
            "HEALTHCHECK",
            "/healthz",
            "VOLUME [\"/var/lib/cgbot\"]",
            "/usr/lib/cgbot/",
        ] {
            assert!(text.contains(needed), "{file}: {needed} missing");
        }
    }
    let cpu = read("packaging/Containerfile");
    assert!(cpu.contains("\"onnxruntime==${ORT_VERSION}\""));
    assert!(cpu.contains("FROM docker.io/library/debian:bookworm-slim"));
    let gpu = read("packaging/Containerfile.gpu");
    assert!(gpu.contains("\"onnxruntime-gpu==${ORT_VERSION}\""));
    assert!(gpu.contains("FROM docker.io/nvidia/cuda:"));
    // The CPU image's runtime stage is the Debian this binary was built and linked on.
    let installed = runtime_packages(&cpu);
    let linked = linked_packages();
    let missing: Vec<_> = linked.difference(&installed).collect();
    assert!(
        missing.is_empty(),
        "packaging/Containerfile lacks {missing:?}"
    );
    // The GPU image (Ubuntu 24.04) installs the same FFmpeg libraries in its versions.
    let gpu_installed = runtime_packages(&gpu);
    for library in ["libavcodec", "libavformat", "libavutil", "libswscale"] {
        assert!(
            gpu_installed.iter().any(|p| p.starts_with(library)),
            "packaging/Containerfile.gpu lacks {library}"
        );
    }
    // The image's default run.toml and camera files are valid.
    check_run_config(
        &repo().join("packaging/container/run.toml"),
        "packaging/container",
    );
}

/// `cgbot run --config FILE --check` succeeds.
fn check_run_config(config: &Path, what: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cgbot"))
        .args(["run", "--check", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The YAML files of a kustomization, and those of the bases it names.
fn kustomization_files(dir: &Path, files: &mut Vec<PathBuf>) {
    let kustomization = dir.join("kustomization.yaml");
    let doc = &yaml_documents(&kustomization)[0];
    let listed = |key: &str| -> Vec<String> {
        doc[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| p.as_str().or(p["path"].as_str()).unwrap().to_string())
            .collect()
    };
    for entry in listed("resources").into_iter().chain(listed("patches")) {
        let path = dir.join(&entry);
        assert!(
            path.exists(),
            "{}: {entry} missing",
            kustomization.display()
        );
        if path.is_dir() {
            kustomization_files(&path, files);
        } else {
            files.push(path);
        }
    }
}

#[test]
fn kubernetes_manifests_parse_and_their_configuration_checks() {
    let base = repo().join("packaging/kubernetes");
    let mut files = Vec::new();
    kustomization_files(&base.join("gpu"), &mut files);
    let mut docs = Vec::new();
    for file in &files {
        for doc in yaml_documents(file) {
            for key in ["apiVersion", "kind"] {
                assert!(doc[key].is_string(), "{}: no {key}", file.display());
            }
            assert!(doc["metadata"]["name"].is_string(), "{}", file.display());
            docs.push(doc);
        }
    }
    let find = |kind: &str, name: &str| -> Vec<&Value> {
        docs.iter()
            .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
            .collect()
    };
    for kind in ["StatefulSet", "Service", "ServiceMonitor", "Secret"] {
        assert!(docs.iter().any(|d| d["kind"] == kind), "no {kind}");
    }
    let sets = find("StatefulSet", "cgbot");
    let container = &sets[0]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(container["resources"]["limits"]["cpu"].is_string());
    // The GPU patch asks for one GPU.
    assert_eq!(
        sets[1]["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
            ["nvidia.com/gpu"],
        1
    );

    // Lay the ConfigMaps and the Secret out as the pod sees them, under a temporary root.
    let root = tempfile::tempdir().unwrap();
    let etc = root.path().join("etc/cgbot");
    let write_all = |dir: &Path, data: &Value| {
        std::fs::create_dir_all(dir).unwrap();
        for (name, text) in data.as_object().unwrap() {
            std::fs::write(dir.join(name), text.as_str().unwrap()).unwrap();
        }
    };
    write_all(
        &etc.join("cameras"),
        &find("ConfigMap", "cgbot-cameras")[0]["data"],
    );
    // The database URL is the example's: point it at a real throw-away PostgreSQL, which
    // `run --check` must reach.
    let db = common::postgres::postgres_db();
    let mut secrets = find("Secret", "cgbot-secrets")[0]["stringData"].clone();
    assert!(secrets["database-url"]
        .as_str()
        .unwrap()
        .starts_with("postgres://"));
    secrets["database-url"] = Value::String(db.location().to_string_lossy().into_owned());
    write_all(&etc.join("secrets"), &secrets);
    // The kubelet gives the Secret's files the volume's defaultMode; the daemon refuses
    // credentials others can read.
    let secret_volume = sets[0]["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["secret"]["secretName"] == "cgbot-secrets")
        .expect("a volume of the cgbot-secrets Secret");
    let mode = secret_volume["secret"]["defaultMode"].as_u64().unwrap() as u32;
    for entry in std::fs::read_dir(etc.join("secrets")).unwrap() {
        let permissions = std::os::unix::fs::PermissionsExt::from_mode(mode);
        std::fs::set_permissions(entry.unwrap().path(), permissions).unwrap();
    }
    let mounts = container["volumeMounts"].as_array().unwrap();
    for path in ["/etc/cgbot/cameras", "/etc/cgbot/secrets", "/var/lib/cgbot"] {
        assert!(
            mounts.iter().any(|m| m["mountPath"] == path),
            "{path} not mounted"
        );
    }
    // Base and GPU run.toml alike.
    for run in find("ConfigMap", "cgbot-run") {
        let text = run["data"]["run.toml"].as_str().unwrap();
        assert!(text.contains("token_file = \"/etc/cgbot/secrets/api-token\""));
        let local = text
            .replace("/etc/cgbot/", &format!("{}/", etc.display()))
            .replace("/var/lib/cgbot/", &format!("{}/", root.path().display()));
        let config = root.path().join("run.toml");
        std::fs::write(&config, local).unwrap();
        let said = check_run_config(&config, "packaging/kubernetes run.toml");
        assert!(said.contains("valid, 1 camera(s)"), "{said}");
        assert!(said.contains(": reachable"), "{said}");
    }
}

/// `cgbot_…` metric names in a PromQL expression, histogram series reduced to their family.
fn metric_names(expr: &str, names: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(start) = rest.find("cgbot_") {
        let tail = &rest[start..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(family.to_string());
        rest = &tail[end..];
    }
}

#[test]
fn dashboard_and_alerts_name_only_metrics_the_daemon_exports() {
    let mut names = BTreeSet::new();
    let dashboard: Value = serde_json::from_str(&read("packaging/grafana/cgbot.json")).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(!panels.is_empty());
    for target in panels.iter().flat_map(|p| p["targets"].as_array().unwrap()) {
        metric_names(target["expr"].as_str().unwrap(), &mut names);
    }
    let alerts = &yaml_documents(&repo().join("packaging/prometheus/cgbot-alerts.yaml"))[0];
    for rule in alerts["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
    {
        assert!(
            rule["alert"].is_string() && rule["expr"].is_string(),
            "{rule}"
        );
        metric_names(rule["expr"].as_str().unwrap(), &mut names);
    }
    for needed in [
        "cgbot_cameras",
        "cgbot_camera_problems",
        "cgbot_frames_analysed_total",
        "cgbot_outbox_pending",
        "cgbot_frame_latency_seconds",
        "cgbot_store_write_failures_total",
    ] {
        assert!(names.contains(needed), "{needed} not used");
    }
    // The daemon's exposition names are string literals in its source.
    let mut source = String::new();
    for dir in ["src/pipeline/live", "src/metrics.rs"] {
        let path = repo().join(dir);
        let files: Vec<PathBuf> = if path.is_dir() {
            std::fs::read_dir(&path)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect()
        } else {
            vec![path]
        };
        for file in files {
            source += &std::fs::read_to_string(file).unwrap();
        }
    }
    let unknown: Vec<_> = names
        .iter()
        .filter(|n| !source.contains(&format!("\"{n}\"")))
        .collect();
    assert!(
        unknown.is_empty(),
        "not exported by the daemon: {unknown:?}"
    );
}
