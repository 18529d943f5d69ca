//! The race matrix: one row per race and variant, what the catalog expects and what the sweep
//! and the scripted timelines showed, as Markdown, JSON and an HTML index page.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::escape::{html as esc, md_code, md_text};

/// One row of the race matrix: a race and a variant, what was expected and what was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatrixRow {
    /// `R-002-01`.
    pub race: String,
    /// The race's title.
    pub title: String,
    /// The source document (`002`).
    pub document: String,
    /// `buggy`, `docfix` or `correct`.
    pub variant: String,
    /// What the catalog expects of the random sweep: `fails` or `holds`.
    pub expected: String,
    /// What the random sweep showed: `fails` or `holds`.
    pub observed: String,
    /// Seeds run in the sweep (from seed 0).
    pub seeds_run: u64,
    /// Seeds whose run violated an invariant.
    pub failures: u64,
    /// Seeds run until the first violation (the first failing seed + 1), if any.
    pub seeds_to_detect: Option<u64>,
    /// The command that replays the sweep's first failure, if any.
    pub replay: Option<String>,
    /// The scripted timelines, each with its own expectation.
    pub scripts: Vec<ScriptRow>,
    /// The pages written for this row's failing traces (relative paths of the HTML files; the
    /// Markdown timeline sits next to each, with the extension `.md`).
    pub timelines: Vec<String>,
}

/// One scripted timeline of a [`MatrixRow`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScriptRow {
    /// The timeline's name (`base`).
    pub name: String,
    /// `fails` or `holds`.
    pub expected: String,
    /// `fails` or `holds`.
    pub observed: String,
    /// The command that replays it.
    pub replay: String,
}

impl MatrixRow {
    /// Whether the sweep and every scripted timeline did what the catalog expects.
    pub fn as_expected(&self) -> bool {
        self.expected == self.observed && self.scripts.iter().all(|s| s.expected == s.observed)
    }

    /// How many scripted timelines did what the catalog expects.
    fn scripts_as_expected(&self) -> usize {
        self.scripts
            .iter()
            .filter(|s| s.expected == s.observed)
            .count()
    }
}

/// The matrix as a Markdown table, followed by the list of unexpected results (each with its
/// replay command) when there are any.
pub fn matrix_markdown(rows: &[MatrixRow]) -> String {
    let mut out = String::from(
        "| race | title | doc | variant | expected | observed | failing / seeds | seeds to detect | timelines as expected | replay |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let surprise = if r.expected == r.observed {
            ""
        } else {
            " **(unexpected)**"
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {}{surprise} | {} / {} | {} | {} / {}{} | {} |",
            md_text(&r.race),
            md_text(&r.title),
            md_text(&r.document),
            md_text(&r.variant),
            md_text(&r.expected),
            md_text(&r.observed),
            r.failures,
            r.seeds_run,
            r.seeds_to_detect
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            r.scripts_as_expected(),
            r.scripts.len(),
            if r.scripts_as_expected() == r.scripts.len() {
                ""
            } else {
                " **(unexpected)**"
            },
            r.replay.as_deref().map_or_else(|| "-".to_string(), md_code),
        );
    }
    let surprises: Vec<String> = rows
        .iter()
        .flat_map(|r| {
            let sweep = (r.expected != r.observed).then(|| {
                format!(
                    "- {} {} random sweep: expected {}, observed {}{}",
                    md_text(&r.race),
                    md_text(&r.variant),
                    md_text(&r.expected),
                    md_text(&r.observed),
                    r.replay
                        .as_deref()
                        .map_or_else(String::new, |c| format!("; replay {}", md_code(c)))
                )
            });
            let scripts = r
                .scripts
                .iter()
                .filter(|s| s.expected != s.observed)
                .map(|s| {
                    format!(
                        "- {} {} timeline {}: expected {}, observed {}; replay {}",
                        md_text(&r.race),
                        md_text(&r.variant),
                        md_text(&s.name),
                        md_text(&s.expected),
                        md_text(&s.observed),
                        md_code(&s.replay)
                    )
                });
            sweep.into_iter().chain(scripts)
        })
        .collect();
    if !surprises.is_empty() {
        out.push_str("\n## Unexpected results\n\n");
        for s in surprises {
            out.push_str(&s);
            out.push('\n');
        }
    }
    out
}

/// The matrix as a JSON array (pretty, fields in declaration order).
pub fn matrix_json(rows: &[MatrixRow]) -> String {
    // Invariant: a MatrixRow holds only strings, integers, options and vectors of them, which
    // always serialise.
    serde_json::to_string_pretty(rows).expect("a matrix row serialises") + "\n"
}

/// The matrix as a self-contained HTML page (the report's `index.html`): the table, with each
/// row's failing traces linked, unexpected results in red.
pub fn matrix_html(title: &str, rows: &[MatrixRow]) -> String {
    let mut table = String::from(
        "<table id=\"matrix\"><thead><tr><th>race</th><th>title</th><th>doc</th><th>variant</th>\
         <th>expected</th><th>observed</th><th>failing / seeds</th><th>seeds to detect</th>\
         <th>timelines</th><th>failing traces</th><th>replay</th></tr></thead><tbody>\n",
    );
    for r in rows {
        let scripts: Vec<String> = r
            .scripts
            .iter()
            .map(|s| {
                let class = if s.expected == s.observed {
                    "ok"
                } else {
                    "unexpected"
                };
                format!(
                    r#"<span class="{class}" title="expected {}; replay: {}">{} {}</span>"#,
                    esc(&s.expected),
                    esc(&s.replay),
                    esc(&s.name),
                    esc(&s.observed)
                )
            })
            .collect();
        let traces: Vec<String> = r
            .timelines
            .iter()
            .map(|path| {
                let name = path.rsplit('/').next().unwrap_or(path);
                let name = name.strip_suffix(".html").unwrap_or(name);
                let md = path.strip_suffix(".html").map(|p| format!("{p}.md"));
                format!(
                    r#"<a href="{}">{}</a>{}"#,
                    esc(path),
                    esc(name),
                    md.map_or_else(String::new, |m| format!(
                        r#" (<a href="{}">md</a>)"#,
                        esc(&m)
                    ))
                )
            })
            .collect();
        let _ = writeln!(
            table,
            "<tr class=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{}\">{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            if r.as_expected() { "ok" } else { "unexpected" },
            esc(&r.race),
            esc(&r.title),
            esc(&r.document),
            esc(&r.variant),
            esc(&r.expected),
            if r.expected == r.observed {
                "ok"
            } else {
                "unexpected"
            },
            esc(&r.observed),
            r.failures,
            r.seeds_run,
            r.seeds_to_detect
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
            scripts.join("<br>"),
            traces.join("<br>"),
            r.replay
                .as_deref()
                .map_or_else(|| "-".to_string(), |c| format!("<code>{}</code>", esc(c))),
        );
    }
    table.push_str("</tbody></table>\n");
    let unexpected = rows.iter().filter(|r| !r.as_expected()).count();
    let summary = if unexpected == 0 {
        format!(
            "<p class=\"ok\">All {} rows did what the catalog expects.</p>",
            rows.len()
        )
    } else {
        format!(
            "<p class=\"unexpected\"><strong>{unexpected} of {} rows did not do what the catalog \
             expects.</strong></p>",
            rows.len()
        )
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title>\n<style>\n\
         body {{ font-family: system-ui, sans-serif; margin: 1.5em; color: #222; }}\n\
         table {{ border-collapse: collapse; font-size: .92em; }}\n\
         th, td {{ border: 1px solid #ddd; padding: .3em .5em; vertical-align: top; text-align: left; }}\n\
         th {{ background: #f4f4f4; }}\n\
         tr.unexpected {{ background: #fff0f0; }}\n\
         .unexpected {{ color: #b00; font-weight: bold; }}\n\
         .ok {{ color: #060; }}\n\
         code {{ font-size: .9em; }}\n\
         </style></head>\n<body>\n<h1>{t}</h1>\n{summary}\n{table}</body></html>\n",
        t = esc(title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(expected: &str, observed: &str) -> MatrixRow {
        MatrixRow {
            race: "R-002-01".into(),
            title: "a | <b>".into(),
            document: "002".into(),
            variant: "buggy".into(),
            expected: expected.into(),
            observed: observed.into(),
            seeds_run: 100,
            failures: 7,
            seeds_to_detect: Some(3),
            replay: Some("racelab replay R-002-01 --variant buggy --seed 2".into()),
            scripts: vec![ScriptRow {
                name: "base".into(),
                expected: "fails".into(),
                observed: "fails".into(),
                replay: "racelab replay R-002-01 --variant buggy --script base".into(),
            }],
            timelines: vec!["timelines/R-002-01-buggy-base.html".into()],
        }
    }

    #[test]
    fn the_markdown_matrix_escapes_cells_and_lists_surprises() {
        let md = matrix_markdown(&[row("fails", "fails"), row("fails", "holds")]);
        assert!(md.contains("a \\| \\<b\\>"), "{md}");
        assert_eq!(md.matches("**(unexpected)**").count(), 1);
        assert!(md.contains("`racelab replay R-002-01 --variant buggy --seed 2`"));
        assert!(md.contains("## Unexpected results"));
        assert!(md.contains("- R-002-01 buggy random sweep: expected fails, observed holds"));
        assert!(!matrix_markdown(&[row("fails", "fails")]).contains("Unexpected"));
    }

    #[test]
    fn the_json_matrix_has_every_field_and_reads_back() {
        let rows = vec![row("fails", "fails")];
        let text = matrix_json(&rows);
        let json: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        let r = &json[0];
        for field in [
            "race",
            "title",
            "document",
            "variant",
            "expected",
            "observed",
            "seeds_run",
            "failures",
            "seeds_to_detect",
            "replay",
            "scripts",
            "timelines",
        ] {
            assert!(r.get(field).is_some(), "missing {field}");
        }
        let back: Vec<MatrixRow> = serde_json::from_str(&text).expect("rows");
        assert_eq!(back, rows);
    }

    #[test]
    fn the_html_index_links_the_traces_and_escapes_everything() {
        let mut bad = row("fails", "holds");
        bad.scripts[0].observed = "holds".into();
        let page = matrix_html("racelab <matrix>", &[row("fails", "fails"), bad]);
        assert!(page.contains("racelab &lt;matrix&gt;"));
        assert!(page.contains("a | &lt;b&gt;"));
        assert!(!page.contains("<b>"));
        assert!(
            page.contains(
                r#"<a href="timelines/R-002-01-buggy-base.html">R-002-01-buggy-base</a>"#
            )
        );
        assert!(page.contains(r#"(<a href="timelines/R-002-01-buggy-base.md">md</a>)"#));
        assert!(page.contains("1 of 2 rows did not do what the catalog expects"));
    }
}
