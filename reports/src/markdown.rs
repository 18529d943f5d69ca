//! A trace as the documents write it: a T1..Tn table (time, who, what, result), the violating
//! operations marked, then the oracle's explanation and the replay command.

use std::fmt::Write as _;

use racelab_core::TimelineKind;

use crate::escape::{md_code, md_text};
use crate::trace::{
    StepText, Trace, marked_ops, step_list, step_of_op, step_text, violation_steps,
};

/// Renders the Markdown timeline.
pub fn timeline_markdown(trace: &Trace<'_>) -> String {
    let history = trace.history;
    let steps = history.timeline();
    let marked = marked_ops(trace.verdict);
    let mut out = format!("# {}\n\n", md_text(trace.title));
    if !trace.summary.is_empty() {
        let _ = write!(out, "{}\n\n", md_text(trace.summary));
    }
    if !trace.invariant.is_empty() {
        let _ = write!(out, "**Invariant:** {}\n\n", md_text(trace.invariant));
    }
    out.push_str("| step | time | who | what | result |\n|---|---|---|---|---|\n");
    for step in &steps {
        let bad = matches!(step.kind, TimelineKind::Op(i) if marked.contains_key(&i));
        let (who, what, result) = match step_text(history, step) {
            StepText::Op {
                who,
                what,
                result,
                fate,
            } => {
                let what = if bad {
                    format!("**{}**", md_code(&what))
                } else {
                    md_code(&what)
                };
                let result = if fate.is_empty() {
                    md_code(&result)
                } else {
                    format!("{} ({})", md_code(&result), md_text(&fate))
                };
                (md_code(&who), what, result)
            }
            StepText::Fault { what } => (
                String::new(),
                format!("⚡ FAULT {}", md_code(&what)),
                String::new(),
            ),
            StepText::Note { who, what, alarm } => {
                let what = if alarm {
                    format!("**{}**", md_text(&what))
                } else {
                    format!("_{}_", md_text(&what))
                };
                (md_code(&who), what, String::new())
            }
        };
        let label = if bad {
            format!("**T{}** ⚠", step.step)
        } else {
            format!("T{}", step.step)
        };
        let _ = writeln!(out, "| {label} | {} | {who} | {what} | {result} |", step.at);
    }
    out.push('\n');
    if trace.verdict.holds() {
        out.push_str("**Verdict:** all invariants held.\n");
    } else {
        out.push_str("**Verdict:** violated (⚠ marks the operations involved).\n\n");
        let step_of = step_of_op(&steps);
        for v in &trace.verdict.violations {
            let involved = violation_steps(&v.ops, &step_of);
            let steps_text = if involved.is_empty() {
                String::new()
            } else {
                format!(" (steps {})", step_list(&involved))
            };
            let _ = writeln!(
                out,
                "- **{}** violated: {}{steps_text}",
                md_text(&v.invariant),
                md_text(&v.explanation)
            );
        }
    }
    let _ = write!(out, "\nReplay: {}\n", md_code(trace.replay));
    if let Some(hash) = trace.trace_hash {
        let _ = writeln!(out, "\nTrace hash: `{hash:016x}`");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::tests::sample;

    #[test]
    fn the_table_reads_like_the_documents_and_marks_the_violation() {
        let (h, v) = sample();
        let md = timeline_markdown(&Trace {
            title: "R-X buggy | base",
            summary: "",
            invariant: "I-MX",
            history: &h,
            verdict: &v,
            replay: "racelab replay R-X --variant buggy --script base",
            trace_hash: None,
        });
        assert!(md.starts_with("# R-X buggy \\| base\n"), "{md}");
        assert!(md.contains(
            "| **T1** ⚠ | 00:00.000 | `<W_A>` | **`SET lock:<wo-1> \"W_A\" & 'x' NX PX 20000`** | `OK` (applied 00:00.001) |"
        ), "{md}");
        assert!(
            md.contains("| T2 | 00:00.003 |  | ⚡ FAULT `pause(<W_A>, 4s)` |  |"),
            "{md}"
        );
        assert!(md.contains("`never applied` (caller timed out)"), "{md}");
        assert!(
            md.contains("| T6 | 00:00.011 | `W_B` | _skips s-1: already applied_ |  |"),
            "{md}"
        );
        assert!(
            md.contains("- **I-MX** violated: both \\<W_A\\> and W_B hold \"wo-1\" (steps T1, T3)"),
            "{md}"
        );
        assert!(md.contains("Replay: `racelab replay R-X --variant buggy --script base`"));
        // Every table row has the same number of cells.
        for line in md.lines().filter(|l| l.starts_with("| ")) {
            assert_eq!(line.replace("\\|", "").matches('|').count(), 6, "{line}");
        }
    }
}
