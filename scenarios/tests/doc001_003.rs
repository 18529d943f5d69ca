//! Documents 001 and 003 end to end (the proxy's endpoint health table and failure queue):
//! every scripted timeline does what the catalog says for every variant, the random scheduler
//! finds the Buggy (and DocFix) violations within the asserted seed budget, and the Correct
//! variant holds for 10,000 seeds.

use racelab_scenarios::{Variant, catalog, run_script};

#[macro_use]
mod common;

race_tests! {
    r_001_01 => "R-001-01", ["I-401"],
    r_001_02 => "R-001-02", ["I-401", "I-FRESH"],
    r_001_03 => "R-001-03", ["I-OBS"],
    r_001_04 => "R-001-04", ["I-401"],
    r_003_01 => "R-003-01", ["I-FQ1"],
    r_003_02 => "R-003-02", ["I-FQ1"],
    r_003_03 => "R-003-03", ["I-FQ4"],
    r_003_04 => "R-003-04", ["I-FQ5"],
}

/// Each oracle, fed the Buggy variant's scripted history (a known-bad history), names the
/// invariant of its entry.
#[test]
fn buggy_histories_violate_the_named_invariant() {
    let expected = [
        ("R-001-01", "I-401"),
        ("R-001-02", "I-401"),
        ("R-001-03", "I-OBS"),
        ("R-001-04", "I-401"),
        ("R-003-01", "I-FQ1"),
        ("R-003-02", "I-FQ1"),
        ("R-003-03", "I-FQ4"),
        ("R-003-04", "I-FQ5"),
    ];
    for (id, invariant) in expected {
        let race = common::race(id);
        let script = (race.scripts)().remove(0);
        let outcome = run_script(&race, &script, Variant::Buggy);
        assert!(
            outcome
                .verdict
                .violations
                .iter()
                .any(|v| v.invariant == invariant),
            "{id}: expected {invariant}, got {}",
            outcome.verdict.explanation()
        );
    }
}

#[test]
fn documents_001_and_003_are_in_the_catalog() {
    let ids: Vec<&str> = catalog().iter().map(|r| r.id).collect();
    for id in [
        "R-001-01", "R-001-02", "R-001-03", "R-001-04", "R-003-01", "R-003-02", "R-003-03",
        "R-003-04",
    ] {
        assert!(ids.contains(&id), "{id} missing");
    }
}
