//! Text helpers every renderer and backend shares: one XML/HTML escaper, bounded truncation for
//! messages, and the cleaned tail of a console log.

/// Escape text for XML and HTML (element content and quoted attributes). Control characters
/// other than tab and newline are dropped: XML 1.0 cannot carry them, and the guest controls
/// much of what is escaped here.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Text for a terminal: every control character but newline and tab (ESC above all: an OSC or
/// CSI sequence from a guest could retitle the window, hide lines or worse) and every bidi
/// override is shown as a visible `\u{..}` escape instead. Guest strings reach `run`'s output
/// and `report diff`'s (issue 19, item 8).
pub fn for_terminal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\t' => out.push(c),
            c if c.is_control() || is_bidi_control(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Unicode's explicit directional formatting characters (they reorder what a reader sees).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200e}' | '\u{200f}' | '\u{061c}')
}

/// Text for one line of Markdown (a table cell, a list item, a heading): HTML's specials become
/// entities (no raw `<script>` or `<img onerror>` reaches a page that renders the file), the
/// characters Markdown gives meaning to are backslash-escaped (no link, image, table break or
/// emphasis made from a guest's string), newlines become spaces and control characters go.
pub fn md_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            // Links and images need [ ], code spans `, tables |, emphasis * and ~; an
            // underscore inside a word is literal in CommonMark's GFM, and ids are full of them.
            '\\' | '`' | '*' | '[' | ']' | '|' | '~' => {
                out.push('\\');
                out.push(c);
            }
            '\n' | '\r' | '\t' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {}
            c => out.push(c),
        }
    }
    out
}

/// At most `n` bytes of `s` (on a character boundary), with an ellipsis when cut.
pub fn truncate(s: &str, n: usize) -> String {
    if s.len() <= n {
        return s.to_string();
    }
    let mut end = n;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

/// The last `lines` non-empty lines of a log, without terminal escape sequences or control
/// bytes. Reads at most the last 256 KiB: a console can be large, and the guest writes it.
pub fn read_tail(path: &std::path::Path, lines: usize) -> String {
    use std::io::{Read, Seek, SeekFrom};
    const MAX: u64 = 256 << 10;
    let Ok(mut f) = std::fs::File::open(path) else { return String::new() };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > MAX && f.seek(SeekFrom::Start(len - MAX)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if f.take(MAX).read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let clean = strip_control(&text);
    let all: Vec<&str> = clean.lines().filter(|l| !l.trim().is_empty()).collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Remove ANSI escape sequences and control characters (tab and newline are kept).
pub fn strip_control(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ params final-byte; other escapes: ESC + one char.
            if chars.peek() == Some(&'[') {
                chars.next();
                for n in chars.by_ref() {
                    if ('@'..='~').contains(&n) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\n' || c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_covers_markup_quotes_and_controls() {
        assert_eq!(xml_escape("<a href=\"x\">it's & \u{7}</a>"), "&lt;a href=&quot;x&quot;&gt;it&apos;s &amp; &lt;/a&gt;");
        assert_eq!(xml_escape("a\tb\nc"), "a\tb\nc");
    }

    /// Issue 19, item 8.
    #[test]
    fn terminal_and_markdown_text_carry_no_live_markup() {
        let evil = "host\x1b]0;PWN\x07name\u{202e}txt.exe\r\n<script>alert(1)</script>";
        let t = for_terminal(evil);
        assert!(!t.chars().any(|c| c == '\x1b' || c == '\x07' || c == '\r' || c == '\u{202e}'), "{t:?}");
        assert!(t.contains("\\u{1b}]0;PWN\\u{7}name\\u{202e}") && t.ends_with('>'), "{t}");
        let m = md_escape("<img src=x onerror=alert(1)> [click](javascript:x) | a *b* `c`\nnext");
        assert!(!m.contains('<') && !m.contains('>') && !m.contains('\n'), "{m}");
        assert_eq!(m, "&lt;img src=x onerror=alert(1)&gt; \\[click\\](javascript:x) \\| a \\*b\\* \\`c\\` next");
    }

    #[test]
    fn truncation_is_bounded_and_says_so() {
        assert_eq!(truncate("short", 10), "short");
        let t = truncate(&"é".repeat(100), 5);
        assert!(t.starts_with("éé…") && t.contains("200 bytes"), "{t}");
    }

    #[test]
    fn tail_strips_escapes_and_keeps_the_last_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.log");
        std::fs::write(&p, "a\n\x1bc\x1b[?7l\x1b[2JSeaBIOS\r\nb\nc\n").unwrap();
        assert_eq!(read_tail(&p, 2), "b\nc");
        assert_eq!(read_tail(&p, 10), "a\nSeaBIOS\nb\nc");
        assert_eq!(read_tail(&d.path().join("none"), 3), "");
    }
}
