//! `racelab report`: the race matrix (Markdown, JSON and an HTML index) and, for every failing
//! trace, a Markdown timeline and a self-contained HTML page with an SVG sequence diagram.
//!
//! Failing traces are: every scripted timeline that fails (in any variant), and for every
//! variant whose sweep fails, its first failing seed and that seed shrunk to the fewest faults
//! that still break the invariant (when shrinking removed any). The rendering is
//! `racelab-reports`'; this module runs the catalog and writes the files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use racelab_reports::{
    DocTestRow, MatrixRow, ScriptRow, Trace, doc_tests_html, doc_tests_markdown, matrix_html,
    matrix_json, matrix_markdown, timeline_html, timeline_markdown,
};

use crate::{
    Outcome, Race, Variant, replay_command, replay_script_command, run_script, shrink,
    shrink_command, sweep,
};

/// What a report run wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The matrix rows.
    pub rows: Vec<MatrixRow>,
    /// Every file written, relative to the output directory.
    pub files: Vec<PathBuf>,
}

/// Writes the report for `races` into `out`, sweeping seeds `0..seeds` per race and variant.
/// `progress(done, total)` is called after each race and variant.
pub fn write_report(
    races: &[Race],
    out: &Path,
    seeds: u64,
    mut progress: impl FnMut(u64, u64),
) -> std::io::Result<Written> {
    std::fs::create_dir_all(out.join("timelines"))?;
    let mut rows = Vec::new();
    let mut files = Vec::new();
    let total = (races.len() * Variant::ALL.len()) as u64;
    let mut done = 0;
    for race in races {
        for variant in Variant::ALL {
            let mut pages = Vec::new();
            let mut scripts = Vec::new();
            for script in (race.scripts)() {
                let outcome = run_script(race, &script, variant);
                let replay = replay_script_command(race, &script, variant);
                if outcome.violated() {
                    let page = Page {
                        name: format!("{}-{}-{}", race.id, variant.as_str(), script.name),
                        title: format!(
                            "{} {}, timeline {}",
                            race.id,
                            variant.as_str(),
                            script.name
                        ),
                        summary: script.summary.to_string(),
                        replay: replay.clone(),
                    };
                    pages.push(page.write(out, race, &outcome)?);
                }
                scripts.push(ScriptRow {
                    name: script.name.to_string(),
                    expected: script.expect.get(variant).as_str().to_string(),
                    observed: outcome.observed().as_str().to_string(),
                    replay,
                });
            }
            let result = sweep(race, variant, 0, seeds, |_| {});
            if let Some(seed) = result.first_failing_seed {
                pages.extend(seed_pages(out, race, variant, seed)?);
            }
            files.extend(pages.iter().flat_map(|html| {
                let md = html.with_extension("md");
                [html.clone(), md]
            }));
            rows.push(MatrixRow {
                race: race.id.to_string(),
                title: race.title.to_string(),
                document: race.document.to_string(),
                variant: variant.as_str().to_string(),
                expected: race.sweep.get(variant).as_str().to_string(),
                observed: result.observed().as_str().to_string(),
                seeds_run: result.seeds_run,
                failures: result.failures,
                seeds_to_detect: result.first_failing_seed.map(|s| s + 1),
                replay: result
                    .first_failing_seed
                    .map(|s| replay_command(race, variant, s)),
                scripts,
                timelines: pages.iter().map(|p| slash_path(p)).collect(),
            });
            done += 1;
            progress(done, total);
        }
    }
    let mut md = format!(
        "# racelab race matrix\n\nEvery race and variant of the catalog: the scripted \
         timelines, and a random sweep of seeds 0..{seeds}. `seeds to detect` counts the seeds \
         run until the first violation.\n\n"
    );
    md.push_str(&matrix_markdown(&rows));
    let doc_rows = doc_test_rows(races);
    if !doc_rows.is_empty() {
        md.push('\n');
        md.push_str(&doc_tests_markdown(&doc_rows));
    }
    md.push_str("\n## Failing traces\n\n");
    for row in &rows {
        for page in &row.timelines {
            let md_page = page.strip_suffix(".html").unwrap_or(page);
            let _ = writeln!(md, "- [{page}]({page}) ([Markdown]({md_page}.md))");
        }
    }
    std::fs::write(out.join("matrix.md"), md)?;
    std::fs::write(out.join("matrix.json"), matrix_json(&rows))?;
    let mut index = matrix_html("racelab race matrix", &rows);
    if !doc_rows.is_empty() {
        let section = doc_tests_html(&doc_rows);
        match index.rfind("</body>") {
            Some(at) => index.insert_str(at, &section),
            None => index.push_str(&section),
        }
    }
    std::fs::write(out.join("index.html"), index)?;
    files.extend(["matrix.md", "matrix.json", "index.html"].map(PathBuf::from));
    Ok(Written { rows, files })
}

/// The documents' tests written for any of `races`.
fn doc_test_rows(races: &[Race]) -> Vec<DocTestRow> {
    crate::acceptance::doc_tests()
        .iter()
        .filter(|t| races.iter().any(|r| r.id == t.race))
        .map(|t| DocTestRow {
            id: t.id.to_string(),
            name: t.name.to_string(),
            race: t.race.to_string(),
            setting: t.setting.to_string(),
            passes: t.result().passes,
        })
        .collect()
}

/// The pages of a sweep's first failing seed: the seed as it ran, and shrunk to the fewest
/// injected faults that still break the invariant when shrinking removed any.
fn seed_pages(
    out: &Path,
    race: &Race,
    variant: Variant,
    seed: u64,
) -> std::io::Result<Vec<PathBuf>> {
    let base = format!("{}-{}-seed-{seed}", race.id, variant.as_str());
    let mut pages = Vec::new();
    let outcome = crate::run_seed(race, variant, seed);
    let page = Page {
        name: base.clone(),
        title: format!("{} {}, seed {seed}", race.id, variant.as_str()),
        summary: format!(
            "{}: the first failing seed of the random sweep ({} injected faults)",
            race.title,
            outcome.run.injected.len()
        ),
        replay: replay_command(race, variant, seed),
    };
    pages.push(page.write(out, race, &outcome)?);
    if let Some(shrunk) = shrink(race, variant, seed)
        && (shrunk.steps.len() < shrunk.original_faults || shrunk.workload_changed)
    {
        let faults = if shrunk.steps.is_empty() {
            "no fault at all: the seed's workload and latencies suffice".to_string()
        } else {
            shrunk
                .steps
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let page = Page {
            name: format!("{base}-shrunk"),
            title: format!("{} {}, seed {seed} shrunk", race.id, variant.as_str()),
            summary: format!(
                "{}: seed {seed} with its {} injected faults shrunk to {}: {faults}; its {} workload draws became {}, {} at their simplest value",
                race.title,
                shrunk.original_faults,
                shrunk.steps.len(),
                shrunk.workload_draws,
                shrunk.workload_draws_now,
                shrunk.workload_simplest
            ),
            replay: shrink_command(race, variant, seed),
        };
        pages.push(page.write(out, race, &shrunk.outcome)?);
    }
    Ok(pages)
}

/// One failing trace's page pair.
struct Page {
    name: String,
    title: String,
    summary: String,
    replay: String,
}

impl Page {
    /// Writes `timelines/NAME.html` and `timelines/NAME.md`; returns the HTML's path relative
    /// to the output directory.
    fn write(&self, out: &Path, race: &Race, outcome: &Outcome) -> std::io::Result<PathBuf> {
        let trace = Trace {
            title: &self.title,
            summary: &self.summary,
            invariant: race.invariant,
            history: &outcome.run.history,
            verdict: &outcome.verdict,
            replay: &self.replay,
            trace_hash: Some(outcome.run.trace_hash()),
        };
        let name = file_name(&self.name);
        let html = PathBuf::from("timelines").join(format!("{name}.html"));
        std::fs::write(out.join(&html), timeline_html(&trace))?;
        std::fs::write(
            out.join(html.with_extension("md")),
            timeline_markdown(&trace),
        )?;
        Ok(html)
    }
}

/// A file name made of ASCII letters, digits, `-`, `_` and `.` only.
fn file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A relative path with `/` separators, as links in Markdown and HTML want it.
fn slash_path(path: &Path) -> String {
    path.iter()
        .map(|c| c.to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_plain() {
        assert_eq!(
            file_name("R-002-01-buggy-a b/../c"),
            "R-002-01-buggy-a_b_.._c"
        );
        assert_eq!(
            slash_path(&PathBuf::from("timelines").join("x.html")),
            "timelines/x.html"
        );
    }
}
