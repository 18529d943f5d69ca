//! A trace as a self-contained HTML page with an SVG sequence diagram.
//!
//! Lanes are columns: each process, then each store the trace uses (Redis, the queue, SQL).
//! Time flows down. Every step of the timeline (`T1..Tn`, the same numbers as the Markdown
//! timeline and `racelab replay`) has a row, placed at its invocation time; the moments in
//! between (when a store applied an operation, when its caller learnt the outcome) are placed
//! proportionally between the rows around them. So a request is an arrow from its process at
//! invocation down to its store at the moment the store applied it, and the reply a dashed
//! arrow back to the process at completion: a request that sat in the network for 25 s is a
//! long slanted arrow crossing everything that happened meanwhile, which is exactly what the
//! races are about. An operation that never reached its store, or whose reply was lost, ends
//! in a cross; a caller's timeout is an orange dot. Pauses, crashes and partitions are bands
//! along their process' lane; the violating operations are red and bold, their rows tinted,
//! and the oracle's explanation heads the page.
//!
//! The page has no scripts, no external resources and no fonts to fetch.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use racelab_core::{Fault, History, TimelineKind, TimelineStep, Timestamp};

use crate::escape::{html as esc, shorten};
use crate::trace::{
    Lane, StepText, Trace, fault_lanes, lane_name, lanes, marked_ops, partition_store, step_list,
    step_of_op, step_text, store_lane, violation_steps,
};

const ROW_PX: f64 = 24.0;
const TOP_PX: f64 = 56.0;
const GUTTER_PX: f64 = 118.0;
const LANE_PX: f64 = 150.0;
/// The advance of one character of the 11 px monospace font, for fitting labels.
const CHAR_PX: f64 = 6.7;
const TEXT_CHARS_MAX: usize = 150;
const LANE_LABEL_CHARS_MAX: usize = 21;
/// The least vertical drop of an arrow, so that one that lands in the same millisecond still
/// shows its direction.
const DROP_MIN_PX: f64 = 5.0;

const INK: &str = "#223";
const REPLY_INK: &str = "#667";
const BAD_INK: &str = "#c00";
const FAULT_INK: &str = "#b00";
const TIMEOUT_INK: &str = "#d70";

/// Renders the page.
pub fn timeline_html(trace: &Trace<'_>) -> String {
    let history = trace.history;
    let steps = history.timeline();
    let step_of = step_of_op(&steps);
    let marked = marked_ops(trace.verdict);

    let mut body = String::new();
    let _ = writeln!(body, "<h1>{}</h1>", esc(trace.title));
    if !trace.summary.is_empty() {
        let _ = writeln!(body, r#"<p class="summary">{}</p>"#, esc(trace.summary));
    }
    if !trace.invariant.is_empty() {
        let _ = writeln!(
            body,
            r#"<p class="invariant"><strong>Invariant:</strong> {}</p>"#,
            esc(trace.invariant)
        );
    }
    if trace.verdict.holds() {
        body.push_str(
            "<div id=\"verdict\" class=\"held\"><strong>All invariants held.</strong></div>\n",
        );
    } else {
        body.push_str("<div id=\"verdict\" class=\"violated\"><strong>Invariant violated.</strong>\n<ul id=\"explanation\">\n");
        for v in &trace.verdict.violations {
            let involved = violation_steps(&v.ops, &step_of);
            let steps_text = if involved.is_empty() {
                String::new()
            } else {
                format!(
                    r#" <span class="steps">(steps {})</span>"#,
                    step_list(&involved)
                )
            };
            let _ = writeln!(
                body,
                "<li><strong>{}</strong>: {}{steps_text}</li>",
                esc(&v.invariant),
                esc(&v.explanation)
            );
        }
        body.push_str("</ul></div>\n");
    }
    let _ = writeln!(
        body,
        r#"<p>Replay: <code id="replay">{}</code>{}</p>"#,
        esc(trace.replay),
        trace.trace_hash.map_or_else(String::new, |h| format!(
            r#" &middot; trace hash <code>{h:016x}</code>"#
        ))
    );
    body.push_str(LEGEND);
    body.push_str("<div class=\"diagram\">\n");
    body.push_str(&svg(history, &steps, &marked));
    body.push_str("\n</div>\n");

    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{}</title>\n<style>{STYLE}</style></head>\n<body>\n{body}\
         <p class=\"footer\">Rendered by racelab-reports. Hover an arrow for the full \
         operation.</p>\n</body></html>\n",
        esc(trace.title)
    )
}

const STYLE: &str = "
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: none; }
h1 { font-size: 1.35em; }
.summary { font-size: 1.05em; max-width: 70em; }
#verdict { padding: .6em 1em; border-radius: 4px; max-width: 80em; }
#verdict ul { margin: .4em 0 0 0; }
#verdict li { margin: .3em 0; }
.violated { background: #fff0f0; border-left: 4px solid #c00; }
.held { background: #f0fff0; border-left: 4px solid #080; }
.steps { color: #a00; white-space: nowrap; }
code { background: #f4f4f4; padding: 0 .25em; }
.legend span { margin-right: 1.6em; white-space: nowrap; }
.diagram { overflow-x: auto; border-top: 1px solid #ddd; margin-top: .5em; }
.footer { color: #888; font-size: .85em; }
svg text { white-space: pre; }
";

const LEGEND: &str = "<p class=\"legend\">\
<span>&rarr; request (lands when the store applied it)</span>\
<span>&#8672; reply (dashed, arrives at completion)</span>\
<span>&#10005; lost</span>\
<span style=\"color:#d70\">&#9679; caller timed out</span>\
<span style=\"color:#b00\">&#9889; fault</span>\
<span style=\"color:#c00;font-weight:bold\">red: the operations the violation involves</span>\
</p>\n";

/// Where lanes, rows and moments are drawn.
struct Layout {
    lanes: Vec<Lane>,
    /// `(time, y)` of every row, in row order (times never decrease).
    anchors: Vec<(u64, f64)>,
    text_x: f64,
    width: f64,
    height: f64,
}

impl Layout {
    fn new(history: &History, steps: &[TimelineStep], text_chars: usize) -> Layout {
        let lanes = lanes(history);
        let mut anchors: Vec<(u64, f64)> = steps
            .iter()
            .enumerate()
            .map(|(row, s)| (s.at.as_ms(), row_y(row)))
            .collect();
        // One more anchor after the last row, at the last moment anything happened, so that
        // replies and intervals after the last step still fall inside the picture.
        let end = last_moment(history);
        let last_y = anchors.last().map_or(TOP_PX, |(_, y)| *y);
        let last_at = anchors.last().map_or(0, |(at, _)| *at);
        anchors.push((end.max(last_at + 1), last_y + ROW_PX));
        let text_x = GUTTER_PX + lanes.len() as f64 * LANE_PX + 14.0;
        let width = text_x + text_chars as f64 * CHAR_PX + 24.0;
        let height = last_y + 2.0 * ROW_PX;
        Layout {
            lanes,
            anchors,
            text_x,
            width,
            height,
        }
    }

    fn lane_x(&self, lane: Lane) -> Option<f64> {
        self.lanes
            .iter()
            .position(|l| *l == lane)
            .map(|i| GUTTER_PX + i as f64 * LANE_PX + LANE_PX / 2.0)
    }

    /// The y of a moment: on the row of the last step at or before it, moved proportionally
    /// towards the next row.
    fn y_at(&self, at: Timestamp) -> f64 {
        let t = at.as_ms();
        let after = self.anchors.partition_point(|(a, _)| *a <= t);
        let Some(&(a0, y0)) = after.checked_sub(1).and_then(|i| self.anchors.get(i)) else {
            return self.anchors.first().map_or(TOP_PX, |(_, y)| *y);
        };
        match self.anchors.get(after) {
            Some(&(a1, y1)) if a1 > a0 => y0 + (y1 - y0) * (t - a0) as f64 / (a1 - a0) as f64,
            _ => y0,
        }
    }

    /// The y of the end of an interval that may be open (`None`: until the end).
    fn y_until(&self, at: Option<Timestamp>) -> f64 {
        at.map_or(self.height - ROW_PX / 2.0, |t| self.y_at(t))
    }
}

fn row_y(row: usize) -> f64 {
    TOP_PX + row as f64 * ROW_PX + ROW_PX / 2.0
}

fn last_moment(history: &History) -> u64 {
    let ops = history.ops.iter().flat_map(|o| {
        [Some(o.invoked_at), o.applied_at, o.completed_at]
            .into_iter()
            .flatten()
    });
    let faults = history.faults.iter().map(|f| match f.fault {
        Fault::Pause { duration, .. } => f.at + duration,
        _ => f.at,
    });
    let notes = history.notes.iter().map(|n| n.at);
    ops.chain(faults)
        .chain(notes)
        .map(Timestamp::as_ms)
        .max()
        .unwrap_or(0)
}

/// The text of a row in the right-hand column.
fn row_text(text: &StepText) -> String {
    match text {
        StepText::Op {
            who,
            what,
            result,
            fate,
        } => {
            if fate.is_empty() {
                format!("{who:<4} {what} → {result}")
            } else {
                format!("{who:<4} {what} → {result} ({fate})")
            }
        }
        StepText::Fault { what } => format!("⚡ FAULT {what}"),
        StepText::Note { who, what, .. } => format!("{who:<4} {what}"),
    }
}

fn svg(history: &History, steps: &[TimelineStep], marked: &BTreeMap<usize, Vec<String>>) -> String {
    let texts: Vec<StepText> = steps.iter().map(|s| step_text(history, s)).collect();
    let text_chars = texts
        .iter()
        .map(|t| row_text(t).chars().count())
        .max()
        .unwrap_or(0)
        .min(TEXT_CHARS_MAX);
    let l = Layout::new(history, steps, text_chars);
    let (w, h) = (l.width.ceil(), l.height.ceil());
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" id="timeline" role="img" aria-label="sequence diagram of the trace" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="DejaVu Sans Mono, Menlo, Consolas, monospace" font-size="11">"#
    );
    s.push_str("<defs>");
    for (id, color) in [
        ("req", INK),
        ("req-bad", BAD_INK),
        ("rep", REPLY_INK),
        ("rep-bad", BAD_INK),
    ] {
        let _ = write!(
            s,
            r#"<marker id="{id}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{color}"/></marker>"#
        );
    }
    s.push_str("</defs>\n");

    // Row backgrounds: zebra stripes, violating rows tinted.
    for (row, step) in steps.iter().enumerate() {
        let bad = matches!(step.kind, TimelineKind::Op(i) if marked.contains_key(&i));
        let fill = if bad {
            Some("#ffe3e3")
        } else if row % 2 == 1 {
            Some("#f7f7f9")
        } else {
            None
        };
        if let Some(fill) = fill {
            let _ = write!(
                s,
                r#"<rect class="row{}" x="0" y="{:.1}" width="{w}" height="{ROW_PX}" fill="{fill}"/>"#,
                if bad { " violation" } else { "" },
                row_y(row) - ROW_PX / 2.0
            );
        }
    }
    s.push('\n');

    // Lanes and their headings.
    for &lane in &l.lanes {
        let Some(x) = l.lane_x(lane) else { continue };
        let store = !matches!(lane, Lane::Process(_));
        let _ = write!(
            s,
            r##"<line class="lane" x1="{x}" y1="{:.1}" x2="{x}" y2="{h}" stroke="{}" stroke-width="{}"/><text x="{x}" y="22" text-anchor="middle" font-weight="bold" font-size="13" font-family="system-ui, sans-serif">{}</text><text x="{x}" y="38" text-anchor="middle" fill="#888" font-size="10" font-family="system-ui, sans-serif">{}</text>"##,
            TOP_PX - 12.0,
            if store { "#557" } else { "#aaa" },
            if store { 3 } else { 1 },
            esc(&shorten(&lane_name(history, lane), LANE_LABEL_CHARS_MAX)),
            if store { "store" } else { "process" }
        );
    }
    let _ = write!(
        s,
        r##"<text x="6" y="22" font-weight="bold" font-size="12" font-family="system-ui, sans-serif">step / time</text><text x="{:.1}" y="22" font-weight="bold" font-size="12" font-family="system-ui, sans-serif">what happened</text>"##,
        l.text_x
    );
    s.push('\n');

    intervals(&mut s, history, &l);

    for (row, (step, text)) in steps.iter().zip(&texts).enumerate() {
        let y = row_y(row);
        let bad = matches!(step.kind, TimelineKind::Op(i) if marked.contains_key(&i));
        let _ = write!(
            s,
            r##"<text class="step" x="6" y="{:.1}" fill="#444"{}>T{} <tspan fill="#777">{}</tspan></text>"##,
            y + 4.0,
            if bad {
                r##" font-weight="bold" fill="#c00""##
            } else {
                ""
            },
            step.step,
            step.at
        );
        match step.kind {
            TimelineKind::Op(i) => op(&mut s, history, &l, i, step.step, y, marked.get(&i)),
            TimelineKind::Fault(i) => fault(&mut s, history, &l, i, y, text),
            TimelineKind::Note(i) => {
                let note = &history.notes[i];
                if let Some(x) = l.lane_x(Lane::Process(note.process)) {
                    let alarm = matches!(text, StepText::Note { alarm: true, .. });
                    let _ = write!(
                        s,
                        r#"<circle class="note" cx="{x}" cy="{y:.1}" r="4" fill="{}"><title>{}</title></circle>"#,
                        if alarm { FAULT_INK } else { "#888" },
                        esc(&row_text(text))
                    );
                }
            }
        }
        // The right-hand column: the step in words.
        let full = row_text(text);
        let shown = shorten(&full, TEXT_CHARS_MAX);
        let style = match (text, bad) {
            (_, true) => r##" fill="#c00" font-weight="bold""##,
            (StepText::Fault { .. }, _) => r##" fill="#b00""##,
            (StepText::Note { alarm: true, .. }, _) => r##" fill="#b00" font-style="italic""##,
            (StepText::Note { .. }, _) => r##" fill="#555" font-style="italic""##,
            (StepText::Op { .. }, _) => "",
        };
        let _ = write!(
            s,
            r#"<text class="what" x="{:.1}" y="{:.1}"{style}>{}{}</text>"#,
            l.text_x,
            y + 4.0,
            esc(&shown),
            if shown == full {
                String::new()
            } else {
                format!("<title>{}</title>", esc(&full))
            }
        );
        s.push('\n');
    }
    s.push_str("</svg>");
    s
}

/// Pauses, crashes (until the restart) and partitions (until they heal) as bands along the
/// process' lane.
fn intervals(s: &mut String, history: &History, l: &Layout) {
    for (i, f) in history.faults.iter().enumerate() {
        let later = || history.faults.iter().skip(i + 1);
        let (process, end, color, what) = match &f.fault {
            Fault::Pause { process, duration } => (
                *process,
                Some(f.at + *duration),
                "#f39c12",
                format!("{} paused for {duration}", history.name(*process)),
            ),
            Fault::Crash { process } => (
                *process,
                later()
                    .find(|g| g.fault == Fault::Restart { process: *process })
                    .map(|g| g.at),
                "#555",
                format!("{} is down (crashed)", history.name(*process)),
            ),
            Fault::Partition { process, store } => (
                *process,
                later()
                    .find(|g| {
                        g.fault
                            == Fault::Heal {
                                process: *process,
                                store: *store,
                            }
                    })
                    .map(|g| g.at),
                FAULT_INK,
                format!("{} cut off from {store:?}", history.name(*process)),
            ),
            Fault::Heal { .. }
            | Fault::Restart { .. }
            | Fault::Failover
            | Fault::RedisRestart
            | Fault::Delay { .. }
            | Fault::DropReply { .. }
            | Fault::Clock { .. } => continue,
        };
        let Some(x) = l.lane_x(Lane::Process(process)) else {
            continue;
        };
        let (y0, y1) = (l.y_at(f.at), l.y_until(end));
        let _ = write!(
            s,
            r#"<rect class="interval" x="{:.1}" y="{y0:.1}" width="10" height="{:.1}" fill="{color}" fill-opacity="0.28" stroke="{color}" stroke-opacity="0.6" rx="2"><title>{}</title></rect>"#,
            x - 5.0,
            (y1 - y0).max(2.0),
            esc(&what)
        );
    }
    s.push('\n');
}

fn op(
    s: &mut String,
    history: &History,
    l: &Layout,
    index: usize,
    step: usize,
    y: f64,
    invariants: Option<&Vec<String>>,
) {
    let record = &history.ops[index];
    let (Some(px), Some(sx)) = (
        l.lane_x(Lane::Process(record.process)),
        l.lane_x(store_lane(&record.op)),
    ) else {
        return;
    };
    let bad = invariants.is_some();
    let (ink, reply_ink, req, rep, width) = if bad {
        (BAD_INK, BAD_INK, "req-bad", "rep-bad", 2.4)
    } else {
        (INK, REPLY_INK, "req", "rep", 1.2)
    };
    let mut title = format!("T{step} {} {} → ", history.name(record.process), record.op);
    match (&record.result, record.applied_at) {
        (Some(r), Some(at)) => {
            let _ = write!(title, "{r} (applied {at}");
            if record.timed_out {
                title.push_str(", reply lost: caller timed out");
            } else if let Some(done) = record.completed_at {
                let _ = write!(title, ", reply at {done}");
            }
            title.push(')');
        }
        _ => {
            title.push_str("never applied");
            if record.timed_out {
                title.push_str(" (caller timed out)");
            }
        }
    }
    if let Some(names) = invariants {
        let _ = write!(title, " — involved in the {} violation", names.join(", "));
    }
    let _ = write!(
        s,
        r#"<g class="op{}" data-step="T{step}"><title>{}</title>"#,
        if bad { " violation" } else { "" },
        esc(&title)
    );
    let mid = (px + sx) / 2.0;
    let mut timeout_at = None;
    match record.applied_at {
        Some(applied) => {
            let ya = l.y_at(applied).max(y + DROP_MIN_PX);
            let _ = write!(
                s,
                r#"<line x1="{px}" y1="{y:.1}" x2="{sx}" y2="{ya:.1}" stroke="{ink}" stroke-width="{width}" marker-end="url(#{req})"/>"#
            );
            match (record.completed_at, record.timed_out) {
                (Some(done), false) => {
                    let yc = l.y_at(done).max(ya + DROP_MIN_PX);
                    let _ = write!(
                        s,
                        r#"<line x1="{sx}" y1="{ya:.1}" x2="{px}" y2="{yc:.1}" stroke="{reply_ink}" stroke-width="1" stroke-dasharray="4 3" marker-end="url(#{rep})"/>"#
                    );
                }
                (done, timed_out) => {
                    // The reply never arrived: lost on the way, or the caller is gone.
                    let yl = ya + DROP_MIN_PX;
                    let _ = write!(
                        s,
                        r#"<line x1="{sx}" y1="{ya:.1}" x2="{mid}" y2="{yl:.1}" stroke="{reply_ink}" stroke-width="1" stroke-dasharray="4 3"/>"#
                    );
                    cross(s, mid, yl);
                    if timed_out {
                        timeout_at = done;
                    }
                }
            }
        }
        None => {
            let yl = y + DROP_MIN_PX;
            let lost_x = px + (sx - px) * 0.6;
            let _ = write!(
                s,
                r#"<line x1="{px}" y1="{y:.1}" x2="{lost_x:.1}" y2="{yl:.1}" stroke="{ink}" stroke-width="{width}"/>"#
            );
            cross(s, lost_x, yl);
            if record.timed_out {
                timeout_at = record.completed_at;
            }
        }
    }
    if let Some(done) = timeout_at {
        let yt = l.y_at(done).max(y + DROP_MIN_PX);
        let _ = write!(
            s,
            r#"<circle class="timeout" cx="{px}" cy="{yt:.1}" r="3.5" fill="{TIMEOUT_INK}"><title>T{step}: the caller timed out at {done}</title></circle>"#
        );
    }
    // The operation's label rides on the request, from the process towards the store.
    let room = (((sx - px).abs() - 14.0) / CHAR_PX).max(10.0) as usize;
    let label = shorten(&record.op.to_string(), room);
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" fill="{ink}"{}>{}</text>"#,
        px + 7.0,
        y - 4.0,
        if bad { r#" font-weight="bold""# } else { "" },
        esc(&label)
    );
    s.push_str("</g>");
}

fn cross(s: &mut String, x: f64, y: f64) {
    let d = 3.5;
    let _ = write!(
        s,
        r#"<path class="lost" d="M{:.1},{:.1} L{:.1},{:.1} M{:.1},{:.1} L{:.1},{:.1}" stroke="{BAD_INK}" stroke-width="1.8"/>"#,
        x - d,
        y - d,
        x + d,
        y + d,
        x - d,
        y + d,
        x + d,
        y - d
    );
}

fn fault(s: &mut String, history: &History, l: &Layout, index: usize, y: f64, text: &StepText) {
    let f = &history.faults[index].fault;
    let xs: Vec<f64> = fault_lanes(f)
        .into_iter()
        .filter_map(|lane| l.lane_x(lane))
        .collect();
    let (Some(&x0), Some(&x1)) = (
        xs.iter().min_by(|a, b| a.total_cmp(b)),
        xs.iter().max_by(|a, b| a.total_cmp(b)),
    ) else {
        return;
    };
    let _ = write!(s, r#"<g class="fault">"#);
    // A partition (and its healing) is drawn as the cut link between process and store.
    if let Some(store_x) = partition_store(f).and_then(|lane| l.lane_x(lane)) {
        let heal = matches!(f, Fault::Heal { .. });
        let _ = write!(
            s,
            r#"<line x1="{x0}" y1="{y:.1}" x2="{store_x}" y2="{y:.1}" stroke="{}" stroke-width="1.5" stroke-dasharray="{}"/>"#,
            if heal { "#080" } else { FAULT_INK },
            if heal { "2 4" } else { "7 4" }
        );
    }
    let label = match text {
        StepText::Fault { what } => what.as_str(),
        StepText::Op { .. } | StepText::Note { .. } => "fault",
    };
    // The label box covers the fault's lanes, and stretches over the lanes to its right (the
    // row has nothing else on it) when the text needs the room.
    let left = x0 - LANE_PX / 2.0 + 8.0;
    let covering = (x1 - x0) + LANE_PX - 16.0;
    let room = (l.text_x - 14.0 - left).max(covering);
    let natural = label.chars().count() as f64 * CHAR_PX + 28.0;
    let box_w = natural.clamp(covering, room);
    let chars = ((box_w - 28.0) / CHAR_PX).max(6.0) as usize;
    let _ = write!(
        s,
        r##"<rect x="{left:.1}" y="{:.1}" width="{box_w:.1}" height="16" rx="3" fill="#fde4e4" stroke="{FAULT_INK}"/><text x="{:.1}" y="{:.1}" fill="{FAULT_INK}" font-weight="bold">⚡ {}</text></g>"##,
        y - 8.0,
        left + 4.0,
        y + 4.0,
        esc(&shorten(label, chars))
    );
}

#[cfg(test)]
mod tests {
    use racelab_core::Verdict;

    use super::*;
    use crate::trace::tests::sample;

    fn page(history: &History, verdict: &Verdict) -> String {
        timeline_html(&Trace {
            title: "R-X <buggy> & \"co\"",
            summary: "W_A's lock <expires>",
            invariant: "I-MX: 'one' holder",
            history,
            verdict,
            replay: "racelab replay R-X --variant buggy --script 'a<b'",
            trace_hash: Some(0xabc),
        })
    }

    #[test]
    fn every_text_is_escaped() {
        let (h, v) = sample();
        let p = page(&h, &v);
        assert!(p.contains("R-X &lt;buggy&gt; &amp; &quot;co&quot;"));
        assert!(p.contains("&lt;W_A&gt;"));
        assert!(p.contains("lock:&lt;wo-1&gt; &quot;W_A&quot; &amp; &#39;x&#39;"));
        assert!(p.contains("--script &#39;a&lt;b&#39;"));
        for raw in ["<W_A>", "<wo-1>", "<buggy>", "<expires>", "a<b"] {
            assert!(!p.contains(raw), "{raw} is not escaped");
        }
    }

    #[test]
    fn the_diagram_has_lanes_arrows_faults_and_marked_violations() {
        let (h, v) = sample();
        let p = page(&h, &v);
        assert!(p.contains(r#"<svg xmlns="http://www.w3.org/2000/svg" id="timeline""#));
        // Two processes and two stores.
        assert_eq!(p.matches(r#"class="lane""#).count(), 4);
        // Four operations, the first two involved in the violation.
        assert_eq!(p.matches(r#"<g class="op"#).count(), 4);
        assert_eq!(p.matches(r#"<g class="op violation""#).count(), 2);
        assert!(p.contains("(steps T1, T3)"));
        // The pause is a marker and a band; the lost request and reply are crosses.
        assert_eq!(p.matches(r#"<g class="fault">"#).count(), 1);
        assert!(p.contains("paused for 4s"));
        assert_eq!(p.matches(r#"class="lost""#).count(), 2);
        assert_eq!(p.matches(r#"class="timeout""#).count(), 2);
        assert!(p.contains("trace hash <code>0000000000000abc</code>"));
    }

    #[test]
    fn a_request_lands_where_the_store_applied_it() {
        let (h, v) = sample();
        let steps = h.timeline();
        let l = Layout::new(&h, &steps, 40);
        // W_B's SET (invoked at 5 ms, step 3) was applied at 6 s, after the last step at
        // 11 ms: below every row.
        let applied = l.y_at(Timestamp::from_ms(6_000));
        assert!(applied > row_y(steps.len() - 1), "{applied}");
        // Times between two rows fall between them.
        let y = l.y_at(Timestamp::from_ms(4));
        assert!(y > row_y(1) && y < row_y(2), "{y}");
        assert!(!page(&h, &v).contains("NaN"));
    }

    #[test]
    fn an_empty_history_still_makes_a_page() {
        let p = page(&History::default(), &Verdict::default());
        assert!(p.contains("All invariants held."));
        assert!(p.contains("<svg") && p.ends_with("</html>\n"));
        assert!(!p.contains("NaN"));
    }
}
