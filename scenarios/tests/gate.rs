//! The regression gate against the committed baseline (`reports/baseline/gate.json`).
//!
//! `RACELAB_UPDATE_BASELINE=1 cargo test -p racelab-scenarios --test gate` rewrites the
//! baseline from the current code instead; review its diff before committing it.

use std::path::PathBuf;

use racelab_scenarios::catalog;
use racelab_scenarios::gate::{BASELINE_PATH, Figures, UPDATE_COMMAND, compare, measure};

fn baseline_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(BASELINE_PATH)
}

fn read_baseline() -> Figures {
    let path = baseline_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read the baseline {}: {e}; create it with `{UPDATE_COMMAND}`",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "the baseline {} is malformed ({e}); regenerate it with `{UPDATE_COMMAND}`",
            path.display()
        )
    })
}

#[test]
fn the_gate_passes_against_the_committed_baseline() {
    let current = measure(&catalog());
    if std::env::var_os("RACELAB_UPDATE_BASELINE").is_some_and(|v| v == "1") {
        let text = serde_json::to_string_pretty(&current).expect("figures serialise") + "\n";
        std::fs::create_dir_all(baseline_path().parent().expect("a parent"))
            .expect("the baseline directory");
        std::fs::write(baseline_path(), text).expect("the baseline is written");
        eprintln!(
            "baseline rewritten: {}; review `git diff {BASELINE_PATH}`",
            baseline_path().display()
        );
        return;
    }
    let baseline = read_baseline();
    let regressions = compare(&baseline, &current);
    for (race, f) in &current.races {
        eprintln!(
            "{race}: seeds to detect {:?} from seed 0, median {:?}; per Correct seed {} store ops, {} events, {} decisions",
            f.seeds_to_detect_from_0,
            f.seeds_to_detect_median,
            f.store_ops_per_seed,
            f.events_per_seed,
            f.decisions_per_seed
        );
    }
    assert!(
        regressions.is_empty(),
        "the regression gate failed:\n{}\nIf the change is intended, update the baseline with `{UPDATE_COMMAND}` and commit the reviewed diff.",
        regressions
            .iter()
            .map(|r| format!("  - {r}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn a_doctored_baseline_that_detects_faster_makes_the_gate_fail_clearly() {
    let current = measure(&catalog());
    let mut doctored = current.clone();
    let (race, figures) = doctored.races.iter_mut().next().expect("a race");
    let race = race.clone();
    let median = figures.seeds_to_detect_median.expect("detected");
    // Pretend the baseline found the race in a third of the seeds it needs now.
    figures.seeds_to_detect_median = Some((median / 3).max(1));
    if median < 2 {
        // Too fast to weaken by a third: weaken the cost figure instead.
        figures.store_ops_per_seed /= 3;
    }
    let regressions = compare(&doctored, &current);
    assert_eq!(regressions.len(), 1, "{regressions:?}");
    let text = regressions[0].to_string();
    assert!(text.starts_with(&format!("{race}: ")), "{text}");
    assert!(text.contains("limit +50%"), "{text}");
    assert!(
        compare(&current, &current).is_empty(),
        "the current figures pass against themselves"
    );
}
