//! A failing trace as a self-contained HTML page with an SVG sequence diagram.
//!
//! Lanes are columns (each process, then Redis and SQL); time flows down, one row per step of
//! the timeline. A request is an arrow from its process to its store, the reply a dashed arrow
//! back; an operation that never reached its store ends in a cross, a lost reply too. Faults
//! are red bands, notes grey italics, and the violating operations are drawn in red and bold.

use std::fmt::Write as _;

use racelab_core::{Fault, History, StoreOp, TimelineKind, Verdict};

const ROW_PX: usize = 30;
const LANE_PX: usize = 190;
const LEFT_PX: usize = 90;
const TOP_PX: usize = 50;
const LABEL_CHARS_MAX: usize = 64;

/// Renders the page. `title` heads it; `replay` is the command that reproduces the trace.
pub fn timeline_html(title: &str, history: &History, verdict: &Verdict, replay: &str) -> String {
    let mut lanes: Vec<String> = history
        .process_names
        .iter()
        .map(|(_, n)| n.clone())
        .collect();
    let redis_lane = lanes.len();
    lanes.push("Redis".into());
    let sql_lane = lanes.len();
    lanes.push("SQL".into());
    let lane_x = |lane: usize| LEFT_PX + lane * LANE_PX + LANE_PX / 2;
    let proc_lane = |p: racelab_core::ProcessId| {
        history
            .process_names
            .iter()
            .position(|(id, _)| *id == p)
            .unwrap_or(0)
    };
    let marked: Vec<usize> = verdict
        .violations
        .iter()
        .flat_map(|v| v.ops.iter().copied())
        .collect();
    let steps = history.timeline();
    let width = LEFT_PX + lanes.len() * LANE_PX + 280;
    let height = TOP_PX + (steps.len() + 1) * ROW_PX;

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="timeline" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="monospace" font-size="11">"#
    );
    svg.push_str(
        r##"<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="context-stroke"/></marker></defs>"##,
    );
    for (i, name) in lanes.iter().enumerate() {
        let x = lane_x(i);
        let store = i >= redis_lane;
        let _ = write!(
            svg,
            r##"<line class="lane" x1="{x}" y1="{y1}" x2="{x}" y2="{height}" stroke="{c}" stroke-width="{w}"/><text x="{x}" y="20" text-anchor="middle" font-weight="bold" font-size="13">{n}</text>"##,
            y1 = TOP_PX - 20,
            c = if store { "#446" } else { "#999" },
            w = if store { 3 } else { 1 },
            n = esc(name),
        );
    }
    for (row, step) in steps.iter().enumerate() {
        let y = TOP_PX + row * ROW_PX;
        let _ = write!(
            svg,
            r##"<text x="4" y="{}" fill="#555">T{} {}</text>"##,
            y + 4,
            step.step,
            step.at
        );
        match step.kind {
            TimelineKind::Op(i) => {
                let op = &history.ops[i];
                let from = lane_x(proc_lane(op.process));
                let to = lane_x(match op.op {
                    StoreOp::Sql(_) => sql_lane,
                    StoreOp::Kv(_) | StoreOp::Queue(_) => redis_lane,
                });
                let bad = marked.contains(&i);
                let (color, weight) = if bad {
                    ("#c00", "bold")
                } else {
                    ("#225", "normal")
                };
                let class = if bad { "op violation" } else { "op" };
                let full = format!(
                    "{} -> {}",
                    op.op,
                    op.result
                        .as_ref()
                        .map_or("never applied".to_string(), ToString::to_string)
                );
                let _ = write!(svg, r#"<g class="{class}"><title>{}</title>"#, esc(&full));
                let label_x = (from + to) / 2;
                let _ = write!(
                    svg,
                    r#"<text x="{label_x}" y="{}" text-anchor="middle" fill="{color}" font-weight="{weight}">{}</text>"#,
                    y - 3,
                    esc(&short(&op.op.to_string()))
                );
                match op.applied_at {
                    Some(_) => {
                        let _ = write!(
                            svg,
                            r#"<line x1="{from}" y1="{y}" x2="{to}" y2="{}" stroke="{color}" stroke-width="{}" marker-end="url(#arrow)"/>"#,
                            y + 6,
                            if bad { 2.5 } else { 1.2 }
                        );
                        let back_y = y + 14;
                        let lost = op.timed_out || op.completed_at.is_none();
                        let _ = write!(
                            svg,
                            r#"<line x1="{to}" y1="{}" x2="{from}" y2="{back_y}" stroke="{color}" stroke-dasharray="4 3" stroke-width="1" {}/>"#,
                            y + 8,
                            if lost {
                                ""
                            } else {
                                r#"marker-end="url(#arrow)""#
                            }
                        );
                        if lost {
                            let _ = write!(
                                svg,
                                r##"<text x="{}" y="{}" fill="#c00" font-size="14">✕</text>"##,
                                (from + to) / 2,
                                back_y
                            );
                        }
                        if let Some(r) = &op.result {
                            let _ = write!(
                                svg,
                                r##"<text x="{}" y="{}" fill="#363" font-size="10">{}</text>"##,
                                to.max(from) + 6,
                                y + 12,
                                esc(&short(&r.to_string()))
                            );
                        }
                    }
                    None => {
                        let mid = (from + to) / 2;
                        let _ = write!(
                            svg,
                            r##"<line x1="{from}" y1="{y}" x2="{mid}" y2="{}" stroke="{color}" stroke-width="1.2"/><text x="{mid}" y="{}" fill="#c00" font-size="14">✕</text>"##,
                            y + 3,
                            y + 8
                        );
                    }
                }
                svg.push_str("</g>");
            }
            TimelineKind::Fault(i) => {
                let fault = &history.faults[i].fault;
                let lane = match fault {
                    Fault::Pause { process, .. }
                    | Fault::Partition { process, .. }
                    | Fault::Heal { process, .. }
                    | Fault::Crash { process }
                    | Fault::Restart { process }
                    | Fault::Delay { process, .. }
                    | Fault::DropReply { process, .. } => proc_lane(*process),
                    Fault::Failover | Fault::RedisRestart => redis_lane,
                };
                let text = history.render_step(step);
                let text = text
                    .split_once("FAULT ")
                    .map_or(text.as_str(), |(_, t)| t)
                    .to_string();
                let _ = write!(
                    svg,
                    r##"<g class="fault"><rect x="{}" y="{}" width="{}" height="16" fill="#fdd" stroke="#c00"/><text x="{}" y="{}" fill="#a00" font-weight="bold">⚡ {}</text></g>"##,
                    lane_x(lane) - LANE_PX / 2 + 4,
                    y - 11,
                    LANE_PX - 8,
                    lane_x(lane) - LANE_PX / 2 + 8,
                    y + 1,
                    esc(&short(&text))
                );
            }
            TimelineKind::Note(i) => {
                let n = &history.notes[i];
                let text = history.render_step(step);
                let text = text
                    .split_once(&format!("{} ", history.name(n.process)))
                    .map_or(text.as_str(), |(_, t)| t)
                    .trim()
                    .to_string();
                let _ = write!(
                    svg,
                    r##"<text class="note" x="{}" y="{}" fill="#666" font-style="italic">{}</text>"##,
                    lane_x(proc_lane(n.process)) + 4,
                    y + 1,
                    esc(&short(&text))
                );
            }
        }
    }
    svg.push_str("</svg>");

    let verdict_class = if verdict.holds() { "held" } else { "violated" };
    format!(
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>
body {{ font-family: sans-serif; margin: 1.5em; color: #222; }}
pre {{ background: #f6f6f6; padding: .8em; white-space: pre-wrap; }}
.violated {{ color: #a00; }} .held {{ color: #060; }}
.legend span {{ margin-right: 1.5em; }}
</style></head>
<body>
<h1>{t}</h1>
<p class="{verdict_class}"><strong>{headline}</strong></p>
<pre id="explanation">{explanation}</pre>
<p>Replay: <code>{replay}</code></p>
<p class="legend"><span>→ request</span><span>⇠ reply (dashed)</span><span>✕ lost</span><span style="color:#a00">⚡ fault</span><span style="color:#c00;font-weight:bold">red: violating operation</span></p>
{svg}
</body></html>
"##,
        t = esc(title),
        headline = if verdict.holds() {
            "All invariants held."
        } else {
            "Invariant violated."
        },
        explanation = esc(&verdict.explanation()),
        replay = esc(replay),
    )
}

fn short(text: &str) -> String {
    if text.chars().count() <= LABEL_CHARS_MAX {
        return text.to_string();
    }
    let cut: String = text.chars().take(LABEL_CHARS_MAX - 1).collect();
    format!("{cut}…")
}

/// Escapes text for HTML and SVG content and attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_everywhere() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        let h = History {
            process_names: vec![(racelab_core::ProcessId(0), "<W_A>".into())],
            ..History::default()
        };
        let page = timeline_html("a <b> & c", &h, &Verdict::default(), "racelab replay 'x'");
        assert!(page.contains("a &lt;b&gt; &amp; c"));
        assert!(page.contains("&lt;W_A&gt;"));
        assert!(!page.contains("<W_A>"));
        assert!(page.contains("<svg"));
    }

    #[test]
    fn long_labels_are_shortened() {
        let long = "x".repeat(200);
        assert_eq!(short(&long).chars().count(), LABEL_CHARS_MAX);
        assert_eq!(short("short"), "short");
    }
}
