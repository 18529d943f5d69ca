//! The race matrix and the Markdown timeline.

use std::fmt::Write as _;

use racelab_core::{History, Verdict};
use serde::Serialize;

/// One row of the race matrix: a race and a variant, what was expected and what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MatrixRow {
    /// `R-002-01`.
    pub race: String,
    /// The race's title.
    pub title: String,
    /// The source document (`002`).
    pub document: String,
    /// `buggy`, `docfix` or `correct`.
    pub variant: String,
    /// `fails` or `holds`.
    pub expected: String,
    /// What the sweep and the scripted timelines showed: `fails` or `holds`.
    pub observed: String,
    /// Seeds run in the sweep.
    pub seeds_run: u64,
    /// Seeds run until the first violation (from the sweep's first seed), if any.
    pub seeds_to_detect: Option<u64>,
    /// The command that replays the first failure, if any.
    pub replay: Option<String>,
}

/// The matrix as a Markdown table.
pub fn matrix_markdown(rows: &[MatrixRow]) -> String {
    let mut out = String::from(
        "| race | title | doc | variant | expected | observed | seeds run | seeds to detect | replay |\n\
         |---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let ok = if r.expected == r.observed {
            ""
        } else {
            " **(unexpected)**"
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}{ok} | {} | {} | {} |",
            r.race,
            md_cell(&r.title),
            r.document,
            r.variant,
            r.expected,
            r.observed,
            r.seeds_run,
            r.seeds_to_detect
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            r.replay
                .as_deref()
                .map_or_else(|| "-".to_string(), |c| format!("`{c}`")),
        );
    }
    out
}

/// The matrix as a JSON array (pretty, stable field order).
pub fn matrix_json(rows: &[MatrixRow]) -> String {
    // Invariant: MatrixRow holds only strings and integers, which always serialise.
    serde_json::to_string_pretty(rows).expect("a matrix row serialises")
}

/// A failing trace as a Markdown table in the documents' T1..Tn style, followed by the
/// oracle's explanation and the replay command.
pub fn timeline_markdown(
    title: &str,
    history: &History,
    verdict: &Verdict,
    replay: &str,
) -> String {
    let marked: Vec<usize> = verdict
        .violations
        .iter()
        .flat_map(|v| v.ops.iter().copied())
        .collect();
    let mut out = format!(
        "# {}\n\n| step | time | who | what | result |\n|---|---|---|---|---|\n",
        md_cell(title)
    );
    for step in history.timeline() {
        let (who, what, result) = match step.kind {
            racelab_core::TimelineKind::Op(i) => {
                let op = &history.ops[i];
                let result = match (&op.result, op.applied_at) {
                    (Some(r), Some(at)) if op.timed_out => {
                        format!("{r} (applied {at}; reply lost)")
                    }
                    (Some(r), Some(at)) => format!("{r} (applied {at})"),
                    _ => "never applied".to_string(),
                };
                let what = if marked.contains(&i) {
                    format!("**{}**", op.op)
                } else {
                    op.op.to_string()
                };
                (history.name(op.process), what, result)
            }
            _ => {
                let line = history.render_step(&step);
                let text = line
                    .split_once("  ")
                    .map_or(line.as_str(), |(_, rest)| rest)
                    .trim()
                    .to_string();
                (String::new(), format!("_{text}_"), String::new())
            }
        };
        let _ = writeln!(
            out,
            "| T{} | {} | {} | {} | {} |",
            step.step,
            step.at,
            who,
            md_cell(&what),
            md_cell(&result)
        );
    }
    let _ = write!(out, "\n{}\n\nReplay: `{replay}`\n", verdict.explanation());
    out
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(expected: &str, observed: &str) -> MatrixRow {
        MatrixRow {
            race: "R-002-01".into(),
            title: "a | b".into(),
            document: "002".into(),
            variant: "buggy".into(),
            expected: expected.into(),
            observed: observed.into(),
            seeds_run: 100,
            seeds_to_detect: Some(3),
            replay: Some("racelab replay R-002-01 --variant buggy --seed 2".into()),
        }
    }

    #[test]
    fn the_markdown_matrix_escapes_cells_and_flags_surprises() {
        let md = matrix_markdown(&[row("fails", "fails"), row("fails", "holds")]);
        assert!(md.contains("a \\| b"));
        assert_eq!(md.matches("**(unexpected)**").count(), 1);
        assert!(md.contains("`racelab replay R-002-01 --variant buggy --seed 2`"));
    }

    #[test]
    fn the_json_matrix_has_every_field() {
        let json: serde_json::Value =
            serde_json::from_str(&matrix_json(&[row("fails", "fails")])).expect("JSON");
        let r = &json[0];
        for field in [
            "race",
            "title",
            "document",
            "variant",
            "expected",
            "observed",
            "seeds_run",
            "seeds_to_detect",
            "replay",
        ] {
            assert!(r.get(field).is_some(), "missing {field}");
        }
    }
}
