//! The documents' own acceptance tests and whether each can detect the race it was written
//! for (a test that passes on the Buggy variant cannot).

use serde::{Deserialize, Serialize};

use crate::escape;

/// One of the documents' tests, run against each variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocTestRow {
    /// `AC-001-1`.
    pub id: String,
    /// The test's name in the document.
    pub name: String,
    /// The race it was written for.
    pub race: String,
    /// What it does.
    pub setting: String,
    /// Whether it passes on Buggy, DocFix and Correct.
    pub passes: [bool; 3],
}

impl DocTestRow {
    /// Whether it fails on Buggy (can detect its race).
    pub fn detects(&self) -> bool {
        !self.passes[0]
    }

    fn finding(&self) -> String {
        if self.detects() {
            "detects the race".to_string()
        } else {
            format!("passes on buggy code: cannot detect {}", self.race)
        }
    }
}

fn word(passes: bool) -> &'static str {
    if passes { "passes" } else { "fails" }
}

/// A Markdown section.
pub fn doc_tests_markdown(rows: &[DocTestRow]) -> String {
    let mut out = String::from(
        "## The documents' own tests\n\nEach test of documents 001 and 003, run against every \
         variant of the race it was written for.\n\n| test | name | race | buggy | docfix | \
         correct | finding |\n|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            escape::md_text(&r.id),
            escape::md_code(&r.name),
            escape::md_text(&r.race),
            word(r.passes[0]),
            word(r.passes[1]),
            word(r.passes[2]),
            escape::md_text(&r.finding()),
        ));
    }
    out
}

/// An HTML section (a table), for the report's index page.
pub fn doc_tests_html(rows: &[DocTestRow]) -> String {
    let mut out = String::from(
        "<h2>The documents' own tests</h2>\n<table>\n<tr><th>test</th><th>name</th><th>race</th>\
         <th>buggy</th><th>docfix</th><th>correct</th><th>finding</th></tr>\n",
    );
    for r in rows {
        out.push_str(&format!(
            "<tr title=\"{}\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td></tr>\n",
            escape::html(&r.setting),
            escape::html(&r.id),
            escape::html(&r.name),
            escape::html(&r.race),
            word(r.passes[0]),
            word(r.passes[1]),
            word(r.passes[2]),
            escape::html(&r.finding()),
        ));
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(buggy: bool) -> DocTestRow {
        DocTestRow {
            id: "AC-001-1".into(),
            name: "test_concurrent_updates".into(),
            race: "R-001-01".into(),
            setting: "50 <coroutines>".into(),
            passes: [buggy, true, true],
        }
    }

    #[test]
    fn a_test_passing_on_buggy_code_is_reported_blind() {
        let md = doc_tests_markdown(&[row(true), row(false)]);
        assert!(md.contains("cannot detect R-001-01"));
        assert!(md.contains("detects the race"));
        let html = doc_tests_html(&[row(true)]);
        assert!(html.contains("50 &lt;coroutines&gt;"));
    }
}
