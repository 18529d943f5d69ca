//! `racelab report`: the race matrix (Markdown and JSON) and, for every failing scripted
//! timeline and every Buggy/DocFix variant's first failing seed, a Markdown timeline and a
//! self-contained HTML page with an SVG sequence diagram.

use std::path::{Path, PathBuf};

use racelab_reports::{MatrixRow, matrix_json, matrix_markdown, timeline_html, timeline_markdown};

use crate::{
    Outcome, Race, Variant, replay_command, replay_script_command, run_script, run_seed, sweep,
};

/// What a report run wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    /// The matrix rows.
    pub rows: Vec<MatrixRow>,
    /// Every file written, relative to the output directory.
    pub files: Vec<PathBuf>,
}

/// Writes the report for `races` into `out`, sweeping `seeds` seeds per race and variant.
/// `progress(done, total)` is called after each race and variant.
pub fn write_report(
    races: &[Race],
    out: &Path,
    seeds: u64,
    mut progress: impl FnMut(u64, u64),
) -> std::io::Result<Written> {
    let timelines = out.join("timelines");
    std::fs::create_dir_all(&timelines)?;
    let mut rows = Vec::new();
    let mut files = Vec::new();
    let total = (races.len() * Variant::ALL.len()) as u64;
    let mut done = 0;
    for race in races {
        for variant in Variant::ALL {
            let mut failing_script = false;
            for script in (race.scripts)() {
                let outcome = run_script(race, &script, variant);
                if outcome.violated() {
                    failing_script = true;
                    let name = format!("{}-{}-{}", race.id, variant.as_str(), script.name);
                    let title = format!(
                        "{} {} — timeline {}: {}",
                        race.id,
                        variant.as_str(),
                        script.name,
                        script.summary
                    );
                    let replay = replay_script_command(race, &script, variant);
                    files.extend(write_trace(&timelines, &name, &title, &outcome, &replay)?);
                }
            }
            let result = sweep(race, variant, 0, seeds, |_| {});
            let replay = result
                .first_failing_seed
                .map(|s| replay_command(race, variant, s));
            if let Some(seed) = result.first_failing_seed {
                let outcome = run_seed(race, variant, seed);
                let name = format!("{}-{}-seed-{seed}", race.id, variant.as_str());
                let title = format!(
                    "{} {} — seed {seed}: {}",
                    race.id,
                    variant.as_str(),
                    race.title
                );
                let replay = replay_command(race, variant, seed);
                files.extend(write_trace(&timelines, &name, &title, &outcome, &replay)?);
            }
            let observed = if result.failures > 0 || failing_script {
                "fails"
            } else {
                "holds"
            };
            rows.push(MatrixRow {
                race: race.id.to_string(),
                title: race.title.to_string(),
                document: race.document.to_string(),
                variant: variant.as_str().to_string(),
                expected: race.sweep.get(variant).as_str().to_string(),
                observed: observed.to_string(),
                seeds_run: result.seeds_run,
                seeds_to_detect: result.first_failing_seed.map(|s| s + 1),
                replay,
            });
            done += 1;
            progress(done, total);
        }
    }
    let mut md = matrix_markdown(&rows);
    md.push_str("\n## Failing traces\n\n");
    for f in &files {
        if f.extension().is_some_and(|e| e == "html") {
            let name = f.display().to_string();
            md.push_str(&format!(
                "- [{name}]({name}) ([Markdown]({}))\n",
                f.with_extension("md").display()
            ));
        }
    }
    std::fs::write(out.join("matrix.md"), md)?;
    std::fs::write(out.join("matrix.json"), matrix_json(&rows))?;
    files.push(PathBuf::from("matrix.md"));
    files.push(PathBuf::from("matrix.json"));
    Ok(Written { rows, files })
}

fn write_trace(
    dir: &Path,
    name: &str,
    title: &str,
    outcome: &Outcome,
    replay: &str,
) -> std::io::Result<Vec<PathBuf>> {
    let history = &outcome.run.history;
    std::fs::write(
        dir.join(format!("{name}.html")),
        timeline_html(title, history, &outcome.verdict, replay),
    )?;
    std::fs::write(
        dir.join(format!("{name}.md")),
        timeline_markdown(title, history, &outcome.verdict, replay),
    )?;
    Ok(vec![
        PathBuf::from("timelines").join(format!("{name}.html")),
        PathBuf::from("timelines").join(format!("{name}.md")),
    ])
}
