//! Tidy: the deterministic crates (`racelab-core` and `racelab-sim`'s `explore` world) use no
//! ambient clock, no OS randomness, no threads, no tokio, no network or file system, and no
//! randomly seeded hash map. Same seed, same trace depends on it.

use std::path::{Path, PathBuf};

/// (pattern, why it is banned).
const BANNED: &[(&str, &str)] = &[
    (
        "Instant::now",
        "ambient clock: take `now: Timestamp` as a parameter",
    ),
    (
        "SystemTime",
        "ambient clock: take `now: Timestamp` as a parameter",
    ),
    ("std::time::Instant", "ambient clock"),
    (
        "thread_rng",
        "OS-seeded randomness: draw from the run's SimRng",
    ),
    (
        "rand::rng()",
        "OS-seeded randomness: draw from the run's SimRng",
    ),
    ("OsRng", "OS randomness"),
    ("from_entropy", "OS randomness"),
    ("getrandom", "OS randomness"),
    (
        "std::thread",
        "threads make interleavings the seed does not decide",
    ),
    (
        "thread::spawn",
        "threads make interleavings the seed does not decide",
    ),
    (
        "tokio",
        "an async runtime schedules tasks the seed does not decide",
    ),
    ("std::net", "IO belongs to the adapters"),
    ("std::fs", "IO belongs to the adapters"),
    ("std::env", "ambient configuration: pass it in"),
    ("HashMap", "random iteration order: use BTreeMap"),
    ("HashSet", "random iteration order: use BTreeSet"),
    ("RandomState", "random iteration order"),
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root")
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The banned uses in one file's text, as `line: pattern (why)`. Comments are not code.
fn offences(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (pattern, why) in BANNED {
            if code.contains(pattern) {
                found.push(format!("{}: `{pattern}` ({why})", n + 1));
            }
        }
    }
    found
}

#[test]
fn the_deterministic_crates_use_no_ambient_effects() {
    let root = root();
    let mut files = Vec::new();
    rust_files(&root.join("core/src"), &mut files);
    rust_files(&root.join("sim/src/explore"), &mut files);
    assert!(
        files.len() >= 10,
        "tidy found too few files to check: {files:?}"
    );
    let mut report = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("a readable source file");
        for o in offences(&text) {
            report.push(format!(
                "{}:{o}",
                file.strip_prefix(&root).unwrap_or(file).display()
            ));
        }
    }
    assert!(
        report.is_empty(),
        "banned in deterministic code:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_deterministic_crates_do_not_depend_on_an_async_runtime() {
    for manifest in ["core/Cargo.toml", "sim/Cargo.toml"] {
        let text = std::fs::read_to_string(root().join(manifest)).expect("a manifest");
        let deps = text.split("[dependencies]").nth(1).unwrap_or("");
        let deps = deps.split("\n[").next().unwrap_or("");
        // Optional dependencies serve `sim::net` only (behind its feature); the source scan
        // above keeps them out of `explore`.
        let code = deps.lines().map(|l| l.split('#').next().unwrap_or(""));
        for line in code.filter(|l| !l.contains("optional = true")) {
            for banned in ["tokio", "async-std", "smol", "getrandom", "turmoil"] {
                assert!(
                    !line.contains(banned),
                    "{manifest} depends on {banned}: {line}"
                );
            }
        }
    }
}

#[test]
fn tidy_catches_what_it_bans() {
    let bad = "let t = std::time::Instant::now();\nlet m: HashMap<u8, u8> = HashMap::new();\nstd::thread::spawn(|| ());";
    let found = offences(bad);
    assert!(
        found.iter().any(|o| o.starts_with("1: `Instant::now`")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|o| o.starts_with("2: `HashMap`")),
        "{found:?}"
    );
    assert!(
        found.iter().any(|o| o.starts_with("3: `std::thread`")),
        "{found:?}"
    );
    assert!(offences("// Instant::now in a comment is fine").is_empty());
}
