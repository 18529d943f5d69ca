//! `racelab report`: writes the race matrix (Markdown, JSON), `index.html` and a timeline page
//! per failing trace, and names the unexpected verdicts.

use std::process::ExitCode;

use racelab_scenarios::{Variant, catalog};

use super::output::{clear, progress_bar};

/// Runs `racelab report` into `out` with `seeds` seeds per race and variant.
pub(crate) fn report(out: &std::path::Path, seeds: u64) -> ExitCode {
    let races = catalog();
    let bar = progress_bar(
        false,
        (races.len() * Variant::ALL.len()) as u64,
        "report [{bar:40}] {pos}/{len} race variants",
    );
    let written = racelab_scenarios::report::write_report(&races, out, seeds, |done, _| {
        if let Some(b) = &bar {
            b.set_position(done);
        }
    });
    clear(bar);
    match written {
        Ok(w) => {
            let unexpected = w.rows.iter().filter(|r| !r.as_expected()).count();
            let pages = w
                .files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "html"))
                .count()
                .saturating_sub(1);
            out!(
                "wrote {} files to {}: the matrix ({} rows, {} unexpected) and {} failing traces",
                w.files.len(),
                out.display(),
                w.rows.len(),
                unexpected,
                pages
            );
            out!("open {}", out.join("index.html").display());
            for row in w.rows.iter().filter(|r| !r.as_expected()) {
                out!(
                    "unexpected: {} {} (expected {}, observed {}){}",
                    row.race,
                    row.variant,
                    row.expected,
                    row.observed,
                    row.replay
                        .as_deref()
                        .map_or_else(String::new, |c| format!("; replay: {c}"))
                );
            }
            if unexpected == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("error: cannot write the report to {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}
