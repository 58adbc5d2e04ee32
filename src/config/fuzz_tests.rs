//! The camera-file and run-config loaders fed arbitrary and damaged files: they never
//! panic, and every error names the file, and the field or the TOML line at fault.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use proptest::sample::Index;
use toml::Value;

use super::{load_cameras, ConfigError, RunConfig};
use crate::fuzz::damaged_text;
use crate::rules::EventCatalogue;

/// A run config with every section and key set.
const RUN_FILE: &str = r#"
cameras = "cameras/"
db = "cgbot.db"
catalogue = "categories.toml"
shutdown_deadline = "10s"

[detector]
model = "yolox_nano"
provider = "cuda:0"
conf = 0.3
nms = 0.45
threads = 4
batch = 8
max_wait = "20ms"

[sampling]
interval = "2s"
keyframes = "auto"

[rtsp]
transport = "tcp"
stream = "sub"
connect_timeout = "10s"
frame_timeout = "10s"
backoff_initial = "1s"
backoff_max = "60s"

[queues]
per_camera = 8
decode_threads = 2

[patrol]
slots = 50
samples = 2
visit_timeout = "20s"
revisit = "5m"

[api]
listen = "127.0.0.1:8080"
token_file = "api-token"

[sinks]
jsonl = "events.jsonl"
webhook = "https://city.example/api/cases"
webhook_timeout = "10s"
every = "2s"
"#;

/// Text that looks like TOML to a tokenizer: brackets, quotes, keys, numbers.
const TOML_LIKE: &str = "[\\[\\]{}=\",.#: \n0-9a-z_-]{0,200}";

/// Writes `bytes` to `name` in a fresh directory and loads it.
fn load_file<T>(
    name: &str,
    bytes: &[u8],
    load: impl FnOnce(&Path) -> Result<T, ConfigError>,
) -> (PathBuf, Result<T, ConfigError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    let result = load(&path);
    (path, result)
}

fn load_camera_file(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (path, result) = load_file("cams.toml", bytes, |path| {
        load_cameras(path, &EventCatalogue::builtin())
    });
    match result {
        Ok(cameras) => prop_assert!(!cameras.is_empty()),
        Err(err) => names_the_file(&err, &path, bytes)?,
    }
    Ok(())
}

fn load_run_file(bytes: &[u8]) -> Result<(), TestCaseError> {
    let (path, result) = load_file("run.toml", bytes, RunConfig::load);
    if let Err(err) = result {
        names_the_file(&err, &path, bytes)?;
    }
    Ok(())
}

/// The error starts with the file, and says where in it: the field a check refused, or
/// the line TOML could not parse or deserialize (unless the file is not even text).
fn names_the_file(err: &ConfigError, path: &Path, bytes: &[u8]) -> Result<(), TestCaseError> {
    let message = err.to_string();
    prop_assert!(
        message.starts_with(&format!("{}: ", path.display())),
        "{}",
        message
    );
    match err {
        ConfigError::Read { reason, .. } if std::str::from_utf8(bytes).is_ok() => {
            prop_assert!(reason.contains("at line "), "{}", message);
        }
        ConfigError::Read { .. } => {}
        ConfigError::Invalid { field, .. } => prop_assert!(!field.is_empty(), "{}", message),
    }
    Ok(())
}

/// Strings the loaders parse further: durations and clock times, in and out of range.
const DURATION_OR_CLOCK: &str =
    "[-+]?[0-9]{1,22}(ns|ms|s|m|h|d)?|[-+]?[0-9]{1,3}:[0-9]{1,3}(-[0-9]{1,3}:[0-9]{1,3})?";

/// Any TOML value: scalars of every type (NaN, infinities, huge integers, durations and
/// clock times out of range) and small arrays and tables of them.
fn any_value() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        any::<bool>().prop_map(Value::Boolean),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_map(Value::Float),
        "\\PC{0,12}".prop_map(Value::String),
        DURATION_OR_CLOCK.prop_map(Value::String),
    ];
    scalar.prop_recursive(2, 8, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,8}", inner, 0..3)
                .prop_map(|map| Value::Table(map.into_iter().collect())),
        ]
    })
}

/// A value to put where `old` was: mostly one of the same type, so that the file gets
/// past deserializing to the loader's own checks, with numbers near and far outside the
/// ranges they check; sometimes anything at all.
fn replacement(old: &Value) -> BoxedStrategy<Value> {
    let same_type = match old {
        Value::String(_) => prop_oneof!["\\PC{0,12}", DURATION_OR_CLOCK]
            .prop_map(Value::String)
            .boxed(),
        Value::Integer(_) => prop_oneof![-2i64..100, any::<i64>()]
            .prop_map(Value::Integer)
            .boxed(),
        Value::Float(_) => prop_oneof![-2.0f64..2.0, any::<f64>()]
            .prop_map(Value::Float)
            .boxed(),
        Value::Boolean(_) => any::<bool>().prop_map(Value::Boolean).boxed(),
        Value::Array(items) => match items.first() {
            Some(item) => prop::collection::vec(replacement(item), 0..5)
                .prop_map(Value::Array)
                .boxed(),
            None => any_value().boxed(),
        },
        Value::Table(_) | Value::Datetime(_) => any_value().boxed(),
    };
    prop_oneof![3 => same_type, 1 => any_value()].boxed()
}

/// Values below `value`, depth first.
fn children(value: &mut Value) -> Vec<&mut Value> {
    match value {
        Value::Table(table) => table.iter_mut().map(|(_, v)| v).collect(),
        Value::Array(array) => array.iter_mut().collect(),
        _ => Vec::new(),
    }
}

fn count_values(value: &mut Value) -> usize {
    children(value)
        .into_iter()
        .map(|v| 1 + count_values(v))
        .sum()
}

/// The `n`th value below `value`, depth first; `n` is counted down past the values
/// before it.
fn nth_value<'v>(value: &'v mut Value, n: &mut usize) -> Option<&'v mut Value> {
    for child in children(value) {
        if *n == 0 {
            return Some(child);
        }
        *n -= 1;
        if let Some(found) = nth_value(child, n) {
            return Some(found);
        }
    }
    None
}

/// `seed`, a valid TOML document, with one value anywhere in it (a key's value, an array
/// element, a whole table) replaced.
fn one_value_replaced(seed: &str) -> impl Strategy<Value = Vec<u8>> {
    let mut document: Value = toml::from_str(seed).expect("the seed is TOML");
    let values = count_values(&mut document);
    any::<Index>().prop_flat_map(move |which| {
        let mut document = document.clone();
        let n = which.index(values);
        let old = nth_value(&mut document, &mut n.clone()).expect("n < values");
        replacement(old).prop_map(move |new| {
            let mut document = document.clone();
            *nth_value(&mut document, &mut n.clone()).expect("n < values") = new;
            toml::to_string(&document)
                .expect("a TOML value serializes")
                .into_bytes()
        })
    })
}

#[test]
fn the_seeds_are_valid() {
    load_camera_file(super::tests::GOOD.as_bytes()).unwrap();
    let (_, result) = load_file("run.toml", RUN_FILE.as_bytes(), RunConfig::load);
    result.unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn camera_file_of_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        load_camera_file(&bytes)?;
    }

    #[test]
    fn camera_file_of_toml_like_text(text in TOML_LIKE) {
        load_camera_file(text.as_bytes())?;
    }

    #[test]
    fn run_config_of_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        load_run_file(&bytes)?;
    }

    #[test]
    fn run_config_of_toml_like_text(text in TOML_LIKE) {
        load_run_file(text.as_bytes())?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn damaged_camera_file(text in damaged_text(super::tests::GOOD)) {
        load_camera_file(text.as_bytes())?;
    }

    #[test]
    fn camera_file_with_a_value_replaced(bytes in one_value_replaced(super::tests::GOOD)) {
        load_camera_file(&bytes)?;
    }

    #[test]
    fn damaged_run_config(text in damaged_text(RUN_FILE)) {
        load_run_file(text.as_bytes())?;
    }

    #[test]
    fn run_config_with_a_value_replaced(bytes in one_value_replaced(RUN_FILE)) {
        load_run_file(&bytes)?;
    }
}
