//! `racelab report` writes the matrix and HTML timelines, and a real headless browser renders
//! a timeline page with its SVG.

use std::path::{Path, PathBuf};
use std::process::Command;

use racelab_scenarios::catalog;
use racelab_scenarios::report::write_report;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("racelab-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn chromium() -> Option<PathBuf> {
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH")?
                .to_str()?
                .split(':')
                .map(|dir| Path::new(dir).join(name))
                .find(|p| p.is_file())
        })
}

#[test]
fn the_report_writes_the_matrix_and_a_timeline_per_failing_trace() {
    let races: Vec<_> = catalog()
        .into_iter()
        .filter(|r| r.id == "R-002-01")
        .collect();
    let out = scratch("report");
    let written = write_report(&races, &out, 30, |_, _| {}).expect("the report is written");
    assert_eq!(written.rows.len(), 3, "one row per variant");
    assert!(
        written.rows.iter().all(|r| r.expected == r.observed),
        "{:?}",
        written.rows
    );
    let md = std::fs::read_to_string(out.join("matrix.md")).expect("matrix.md");
    assert!(md.contains("| R-002-01 |") && md.contains("racelab replay R-002-01 --variant buggy"));
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("matrix.json")).expect("matrix.json"),
    )
    .expect("JSON");
    assert_eq!(json.as_array().map(Vec::len), Some(3));
    let base = out.join("timelines/R-002-01-buggy-base.md");
    let text = std::fs::read_to_string(&base).expect("the base timeline in Markdown");
    assert!(
        text.contains("| T1 |") && text.contains("I-MX violated"),
        "{text}"
    );
    assert!(
        !out.join("timelines/R-002-01-correct-base.html").exists(),
        "a passing trace gets no page"
    );
}

#[test]
fn a_timeline_page_renders_in_a_headless_browser() {
    let Some(browser) = chromium() else {
        let msg = "chromium is not installed: the HTML timeline was NOT rendered in a browser \
                   (install it with `apt-get install chromium`)";
        assert!(
            std::env::var_os("RACELAB_REQUIRE_SERVICES").is_none_or(|v| v != "1"),
            "{msg}"
        );
        eprintln!("\n!!! SKIPPED: {msg}\n");
        return;
    };
    let races: Vec<_> = catalog()
        .into_iter()
        .filter(|r| r.id == "R-002-01")
        .collect();
    let out = scratch("render");
    write_report(&races, &out, 5, |_, _| {}).expect("the report is written");
    let page = out.join("timelines/R-002-01-buggy-base.html");
    let profile = out.join("chromium-profile");
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ];
    let dom = Command::new(&browser)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stderr(std::process::Stdio::null())
        .output()
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<svg") && dom.contains(r#"id="timeline""#),
        "no SVG in the rendered DOM:\n{dom}"
    );
    assert!(
        dom.contains("op violation"),
        "the violating operations are not marked"
    );
    let shot = out.join("timeline.png");
    let status = Command::new(&browser)
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--window-size=1400,1200")
        .arg(format!("file://{}", page.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("chromium runs");
    assert!(status.success());
    let png = std::fs::metadata(&shot).expect("a screenshot").len();
    assert!(
        png > 10_000,
        "the screenshot is suspiciously small ({png} bytes)"
    );
    eprintln!(
        "rendered {} in {} (screenshot {} bytes)",
        page.display(),
        browser.display(),
        png
    );
}
