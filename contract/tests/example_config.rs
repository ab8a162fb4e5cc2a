//! `vsfleet.example.toml`, at the repository root, documents every
//! configuration key at its default. These tests hold it to [`Settings`]:
//! loaded as it is, it gives exactly the defaults; it sets every key the
//! defaults set; and each example value it leaves commented out
//! (`# key = value`) is valid when uncommented.
//!
//! `Settings::load` also reads `VSFLEET_*` environment variables: run the
//! tests without any (as the settings' own tests are).
//!
//! Not caught here: a new `Option` key with no example line at all, since
//! the defaults do not serialize unset keys (the README's table lists them).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value as Json;
use vsfleet_contract::Settings;

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vsfleet.example.toml")
}

fn example() -> String {
    std::fs::read_to_string(example_path()).expect("vsfleet.example.toml at the repository root")
}

/// `Settings::load` of `text` written to a file of its own.
fn load_text(text: &str) -> Result<Settings, String> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "example-config-{}-{}.toml",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).unwrap();
    let loaded = Settings::load(Some(&path)).map_err(|e| e.to_string());
    std::fs::remove_file(&path).unwrap();
    loaded
}

fn json(settings: &Settings) -> Json {
    serde_json::to_value(settings).unwrap()
}

/// The dotted paths of every leaf (`nats.tls.ca_file`), sorted.
fn leaf_keys(value: &Json) -> Vec<String> {
    fn walk(value: &Json, prefix: &str, out: &mut Vec<String>) {
        match value {
            Json::Object(map) => {
                for (key, value) in map {
                    walk(value, &format!("{prefix}{key}."), out);
                }
            }
            _ => out.push(prefix.trim_end_matches('.').to_owned()),
        }
    }
    let mut out = Vec::new();
    walk(value, "", &mut out);
    out.sort();
    out
}

/// Equal settings, or a failure naming each key that differs.
fn assert_same(left: &Json, right: &Json, what: &str) {
    let mut keys = leaf_keys(left);
    keys.extend(leaf_keys(right));
    keys.sort();
    keys.dedup();
    let differ: Vec<String> = keys
        .iter()
        .filter(|key| lookup(left, key) != lookup(right, key))
        .map(|key| format!("`{key}`: {:?} instead of {:?}", lookup(left, key), lookup(right, key)))
        .collect();
    assert!(differ.is_empty(), "{what}:\n{}", differ.join("\n"));
    assert_eq!(left, right, "{what}");
}

fn lookup<'a>(value: &'a Json, dotted: &str) -> Option<&'a Json> {
    dotted.split('.').try_fold(value, |value, key| value.get(key))
}

/// One `# key = value` line of the example.
#[derive(Debug)]
struct Commented {
    /// Its index among the file's lines.
    line: usize,
    /// The key with its section: `worker.metrics_listen`.
    key: String,
    /// The line without its `#`: `metrics_listen = "127.0.0.1:9101"`.
    uncommented: String,
}

/// The commented-out keys of `text`: comment lines whose text is
/// `key = value` with a lowercase key, in the section they stand in. A
/// prose line of that shape would be taken for one, and fail to parse.
fn commented_keys(text: &str) -> Vec<Commented> {
    let mut section = String::new();
    let mut found = Vec::new();
    for (line, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        let Some(rest) = trimmed.strip_prefix('#') else { continue };
        let rest = rest.strip_prefix(' ').unwrap_or(rest);
        let Some((key, _)) = rest.split_once('=') else { continue };
        let key = key.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
            continue;
        }
        let key = if section.is_empty() { key.to_owned() } else { format!("{section}.{key}") };
        found.push(Commented { line, key, uncommented: rest.to_owned() });
    }
    found
}

/// Keys that validation accepts only together with others: each is
/// uncommented with its companions. (Validation does not look at the
/// files the TLS and NATS credential keys name, so none needs to exist.)
const TOGETHER: &[(&str, &[&str])] = &[
    // A NATS user needs its password, and a password its user.
    ("nats.user", &["nats.password"]),
    ("nats.password", &["nats.user"]),
    // A client certificate needs its key, and a key its certificate.
    ("nats.tls.cert_file", &["nats.tls.key_file"]),
    ("nats.tls.key_file", &["nats.tls.cert_file"]),
    // A system template is looked up in the templates directory.
    ("worker.system_template", &["worker.templates_dir"]),
];

#[test]
fn the_example_loads_as_exactly_the_defaults() {
    let defaults = json(&Settings::default());
    let loaded = Settings::load(Some(&example_path())).unwrap_or_else(|e| panic!("vsfleet.example.toml: {e}"));
    assert_same(&json(&loaded), &defaults, "loading the example does not give the defaults");
}

#[test]
fn the_example_sets_every_key_of_the_defaults() {
    let text = example();
    let table: toml::Table = toml::from_str(&text).unwrap();
    let in_example = leaf_keys(&serde_json::to_value(&table).unwrap());
    let commented: Vec<String> = commented_keys(&text).into_iter().map(|c| c.key).collect();

    for key in leaf_keys(&json(&Settings::default())) {
        if key == "worker.host_id" {
            // Computed from the hostname: shown commented out, not pinned.
            assert!(commented.contains(&key), "the example does not show worker.host_id commented out");
            assert!(!in_example.contains(&key), "the example pins worker.host_id, which defaults to the hostname");
            continue;
        }
        assert!(in_example.contains(&key), "the example does not set `{key}`");
    }
}

#[test]
fn every_commented_out_example_value_loads_when_uncommented() {
    let text = example();
    let lines: Vec<&str> = text.lines().collect();
    let commented = commented_keys(&text);
    assert!(commented.len() >= 10, "only {} commented-out keys found: {commented:?}", commented.len());

    for entry in &commented {
        let companions = TOGETHER.iter().find(|(key, _)| *key == entry.key).map_or(&[][..], |&(_, with)| with);
        let mut set = vec![entry];
        for companion in companions {
            let found = commented.iter().find(|c| c.key == *companion);
            set.push(
                found.unwrap_or_else(|| panic!("`{}` needs `{companion}`, which is not in the example", entry.key)),
            );
        }
        let mut edited: Vec<&str> = lines.clone();
        for c in &set {
            edited[c.line] = &c.uncommented;
        }
        let edited = edited.join("\n");
        let keys: Vec<&str> = set.iter().map(|c| c.key.as_str()).collect();

        // Each uncommented key holds the example's value: it stands in the
        // right section and took effect.
        let check = |settings: &Settings, how: &str| {
            let settings = json(settings);
            for c in &set {
                let line: toml::Table = toml::from_str(&c.uncommented).unwrap();
                let expected = serde_json::to_value(line.values().next().unwrap()).unwrap();
                assert_eq!(lookup(&settings, &c.key), Some(&expected), "{how} with {keys:?} uncommented: `{}`", c.key);
            }
        };
        let loaded = load_text(&edited).unwrap_or_else(|e| panic!("the example with {keys:?} uncommented: {e}"));
        check(&loaded, "loaded");
    }
}
