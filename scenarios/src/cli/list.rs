//! `racelab list`: the races with their titles, expected verdicts per variant and scripted
//! timelines, then the documents' own tests and whether each detects its race.

use std::process::ExitCode;

use racelab_scenarios::{Variant, catalog};
use serde_json::json;

/// Runs `racelab list` (one JSON object per race and per document test with `json`).
pub(crate) fn list(json: bool) -> ExitCode {
    for race in catalog() {
        let scripts: Vec<_> = (race.scripts)()
            .iter()
            .map(|s| {
                json!({
                    "name": s.name,
                    "summary": s.summary,
                    "expected": Variant::ALL.iter().map(|v| (v.as_str().to_string(), json!(s.expect.get(*v).as_str()))).collect::<serde_json::Map<_, _>>(),
                })
            })
            .collect();
        if json {
            let expected: serde_json::Map<_, _> = Variant::ALL
                .iter()
                .map(|v| (v.as_str().to_string(), json!(race.sweep.get(*v).as_str())))
                .collect();
            let row = json!({
                "race": race.id,
                "title": race.title,
                "document": race.document,
                "invariant": race.invariant,
                "docfix_verdict": race.docfix_verdict,
                "expected": expected,
                "scripts": scripts,
            });
            out!("{row}");
        } else {
            let e = |v| race.sweep.get(v).as_str();
            out!(
                "{}  {}\n          doc fix: {}; expected: buggy {}, docfix {}, correct {}",
                race.id,
                race.title,
                race.docfix_verdict,
                e(Variant::Buggy),
                e(Variant::DocFix),
                e(Variant::Correct)
            );
            for s in (race.scripts)() {
                out!("          timeline {:<24} {}", s.name, s.summary);
            }
        }
    }
    let tests = racelab_scenarios::acceptance::doc_tests();
    if !json {
        out!(
            "\nthe documents' own tests, run against each variant of the race they were written for:"
        );
    }
    for t in &tests {
        let r = t.result();
        let word = |p: bool| if p { "passes" } else { "fails" };
        if json {
            let row = json!({
                "doc_test": t.id,
                "name": t.name,
                "race": t.race,
                "setting": t.setting,
                "passes": Variant::ALL.iter().zip(r.passes).map(|(v, p)| (v.as_str().to_string(), json!(p))).collect::<serde_json::Map<_, _>>(),
                "detects_race": r.detects(),
            });
            out!("{row}");
        } else {
            out!(
                "{:<9} {:<45} {}: buggy {}, docfix {}, correct {} -> {}",
                t.id,
                t.name,
                t.race,
                word(r.passes[0]),
                word(r.passes[1]),
                word(r.passes[2]),
                if r.detects() {
                    "detects the race".to_string()
                } else {
                    format!("passes on buggy code: cannot detect {}", t.race)
                }
            );
        }
    }
    ExitCode::SUCCESS
}
