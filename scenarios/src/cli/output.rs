//! Progress bars on stderr (only on a terminal, never under CI or with `--json`) and printing
//! above them.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressStyle};

/// Whether to draw a progress bar: not for JSON output, not when stderr is no terminal, not
/// under CI.
pub(super) fn show_progress(json: bool) -> bool {
    !json && std::io::stderr().is_terminal() && std::env::var_os("CI").is_none()
}

/// A bar of `len` steps drawn with `template`, if [`show_progress`] says so.
pub(super) fn progress_bar(json: bool, len: u64, template: &str) -> Option<ProgressBar> {
    show_progress(json).then(|| {
        let bar = ProgressBar::new(len);
        bar.set_style(
            ProgressStyle::with_template(template)
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    })
}

/// Prints `text` on stdout, above the bar if there is one.
pub(super) fn print_above(bar: Option<&ProgressBar>, text: &str) {
    match bar {
        Some(b) => b.suspend(|| out!("{text}")),
        None => out!("{text}"),
    }
}

/// Removes the bar, if there is one.
pub(super) fn clear(bar: Option<ProgressBar>) {
    if let Some(b) = bar {
        b.finish_and_clear();
    }
}

/// A spinner counting seeds for a sweep bounded by time rather than by a seed count, if
/// [`show_progress`] says so.
pub(super) fn spinner(json: bool) -> Option<ProgressBar> {
    show_progress(json).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(
            ProgressStyle::with_template("{msg:<22} {spinner} {pos} seeds ({elapsed})")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(std::time::Duration::from_millis(200));
        bar
    })
}
