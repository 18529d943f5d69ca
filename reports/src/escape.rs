//! Escaping for the three output languages. Operation text comes from the stores' vocabulary
//! and contains quotes, `<`, `>`, `|` and backticks (`SET k "v"`, `WHERE balance >= 5`), so
//! every piece of it goes through one of these before it reaches a page.

/// Escapes text for HTML and SVG content and attribute values (double- or single-quoted).
/// Control characters other than newline and tab, which HTML forbids, become U+FFFD.
pub(crate) fn html(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text for a Markdown table cell or heading: every character CommonMark could read as
/// markup is backslash-escaped (`_` only where it could open or close emphasis, so `qty_0` and
/// `W_A` stay readable in the raw file), and line breaks become spaces.
pub(crate) fn md_text(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len() + 8);
    for (i, &c) in chars.iter().enumerate() {
        match c {
            '\\' | '`' | '*' | '[' | ']' | '<' | '>' | '|' | '&' | '#' | '~' | '!' | '$' => {
                out.push('\\');
                out.push(c);
            }
            '_' => {
                let word = |j: Option<usize>| {
                    j.and_then(|j| chars.get(j))
                        .is_some_and(|c| c.is_alphanumeric())
                };
                if !(word(i.checked_sub(1)) && word(Some(i + 1))) {
                    out.push('\\');
                }
                out.push('_');
            }
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Text as a Markdown code span that is safe inside a table cell: the fence is longer than any
/// run of backticks in the text, and `|` is escaped (GitHub-flavoured tables split on it even
/// inside code spans).
pub(crate) fn md_code(text: &str) -> String {
    let text: String = text
        .chars()
        .map(|c| match c {
            '\n' | '\r' => ' ',
            c if c.is_control() => '\u{FFFD}',
            c => c,
        })
        .collect();
    let mut longest = 0;
    let mut run = 0;
    for c in text.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    let fence = "`".repeat(longest + 1);
    let pad = if text.starts_with('`') || text.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{}{pad}{fence}", text.replace('|', "\\|"))
}

/// At most `max` characters of `text`, with an ellipsis when it was cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_escapes_markup_quotes_and_control_characters() {
        assert_eq!(
            html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
        assert_eq!(html("a\u{0}b\nc"), "a\u{FFFD}b\nc");
    }

    #[test]
    fn markdown_text_escapes_markup_but_keeps_identifiers_readable() {
        assert_eq!(md_text("W_A sets qty_0"), "W_A sets qty_0");
        assert_eq!(md_text("_x_ *y* <b> a|b"), "\\_x\\_ \\*y\\* \\<b\\> a\\|b");
        assert_eq!(md_text("two\nlines"), "two lines");
        assert_eq!(md_text("$inc and $x$"), "\\$inc and \\$x\\$");
    }

    #[test]
    fn markdown_code_spans_survive_backticks_and_pipes() {
        assert_eq!(md_code("SET k \"v\""), "`SET k \"v\"`");
        assert_eq!(md_code("a`b"), "``a`b``");
        assert_eq!(md_code("`x`"), "`` `x` ``");
        assert_eq!(md_code("a | b"), "`a \\| b`");
    }

    #[test]
    fn long_text_is_shortened_with_an_ellipsis() {
        assert_eq!(shorten(&"x".repeat(200), 64).chars().count(), 64);
        assert!(shorten(&"x".repeat(200), 64).ends_with('…'));
        assert_eq!(shorten("short", 64), "short");
    }
}
