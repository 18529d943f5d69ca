//! Tidy: the driver (`src/driver.rs`) is the code the net world runs under turmoil, so it
//! must replay from a seed: no ambient wall clock (tokio's clock is simulated there,
//! `std::time::Instant` and `SystemTime` are not), no OS randomness, no threads, and every
//! `select!` `biased;` (an unbiased select draws from the runtime's RNG).

use std::path::Path;

/// (pattern, why it is banned).
const BANNED: &[(&str, &str)] = &[
    (
        "std::time::Instant",
        "the wall clock: use tokio::time::Instant",
    ),
    ("SystemTime", "the wall clock: use tokio::time::Instant"),
    ("thread_rng", "OS-seeded randomness"),
    ("rand::rng()", "OS-seeded randomness"),
    ("OsRng", "OS randomness"),
    ("from_entropy", "OS randomness"),
    (
        "std::thread",
        "threads make interleavings the seed does not decide",
    ),
    (
        "spawn_blocking",
        "threads make interleavings the seed does not decide",
    ),
    ("HashMap", "random iteration order: use BTreeMap"),
    ("HashSet", "random iteration order: use BTreeSet"),
];

/// The offences in one file's text, as `line: what (why)`. Comments are not code.
fn offences(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (n, line) in lines.iter().enumerate() {
        let code = line.split("//").next().unwrap_or("");
        for (pattern, why) in BANNED {
            if code.contains(pattern) {
                found.push(format!("{}: `{pattern}` ({why})", n + 1));
            }
        }
        if code.contains("select!") {
            let next = lines
                .iter()
                .skip(n + 1)
                .map(|l| l.trim())
                .find(|l| !l.is_empty() && !l.starts_with("//"));
            if next != Some("biased;") {
                found.push(format!(
                    "{}: `select!` without `biased;` (the branch order must not depend on the \
                     runtime's RNG)",
                    n + 1
                ));
            }
        }
    }
    found
}

#[test]
fn the_driver_has_no_ambient_clock_randomness_or_unbiased_select() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/driver.rs");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let found = offences(&text);
    assert!(
        found.is_empty(),
        "{} breaks the net world's determinism:\n{}",
        path.display(),
        found.join("\n")
    );
    assert!(
        text.contains("select!"),
        "the check looks for `select!`; if the driver no longer uses it, update this test"
    );
}

#[test]
fn the_check_catches_what_it_bans() {
    let bad =
        "let t = std::time::Instant::now();\nlet x = tokio::select! {\n    a = f() => a,\n};\n";
    let found = offences(bad);
    assert_eq!(found.len(), 2, "{found:?}");
    let good = "// std::time::Instant in a comment\nlet x = tokio::select! {\n    biased;\n    a = f() => a,\n};\n";
    assert!(offences(good).is_empty());
}
