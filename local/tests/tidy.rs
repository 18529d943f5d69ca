//! Architecture invariant of `racelab-local`: no clock, no randomness, no runtime and no
//! spawning in its sources; loom's threads or the async scheduler decide every order.

use std::path::Path;

const BANNED: [&str; 8] = [
    "Instant",
    "SystemTime",
    "thread_rng",
    "getrandom",
    "std::thread",
    "tokio",
    "spawn",
    "RandomState",
];

fn offences(source: &str) -> Vec<String> {
    source
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .flat_map(|(n, line)| {
            BANNED
                .iter()
                .filter(move |word| line.contains(*word))
                .map(move |word| format!("line {}: `{word}` in {line:?}", n + 1))
        })
        .collect()
}

#[test]
fn local_sources_have_no_clock_randomness_or_runtime() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).expect("local/src is readable") {
        let path = entry.expect("a directory entry").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).expect("a source file");
            let found = offences(&source);
            assert!(found.is_empty(), "{}: {found:#?}", path.display());
            checked += 1;
        }
    }
    assert!(
        checked >= 5,
        "only {checked} source files found in {}",
        dir.display()
    );
}

#[test]
fn tidy_catches_a_clock_but_not_a_comment() {
    assert_eq!(
        offences("// tokio in production\nlet t = Instant::now();").len(),
        1
    );
}
