//! Text from outside (a client's username, tenant, path or header; an upstream's message) in
//! log lines. Written raw, a newline in such a value forges a whole log line and a 16 KiB value
//! floods the log, so every such value goes through [`clean`]: control characters, line and
//! paragraph separators and bidirectional overrides are escaped (`\n`, `\u{202e}`), the
//! backslash too (so an escape in the log is always ours), and the value is cut at
//! [`MAX_CHARS`] characters with an ellipsis.

use std::fmt;

/// Characters of one outside value written to a log line; longer values end in `…`.
pub const MAX_CHARS: usize = 256;

/// A value that displays escaped and bounded; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct Clean<'a>(&'a str);

/// `value`, for a log line.
pub fn clean(value: &str) -> Clean<'_> {
    Clean(value)
}

/// Characters that change how a log line reads without being printable themselves.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || c == '\\'
        || matches!(
            c,
            '\u{2028}' | '\u{2029}'                  // line and paragraph separators
                | '\u{200b}'..='\u{200f}'            // zero-width, LRM, RLM
                | '\u{202a}'..='\u{202e}'            // bidi embeddings and overrides
                | '\u{2066}'..='\u{2069}'            // bidi isolates
                | '\u{feff}' // byte-order mark
        )
}

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, c) in self.0.chars().enumerate() {
            if n == MAX_CHARS {
                return f.write_str("…");
            }
            if !needs_escape(c) {
                fmt::Write::write_char(f, c)?;
                continue;
            }
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                '\\' => f.write_str("\\\\")?,
                other => write!(f, "\\u{{{:x}}}", other as u32)?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_cannot_start_a_line() {
        let forged = "bob\n2030-01-01T00:00:00Z INFO login ok user=admin\r\u{1b}[31m";
        let out = clean(forged).to_string();
        assert!(!out.chars().any(char::is_control), "{out}");
        assert_eq!(
            out,
            "bob\\n2030-01-01T00:00:00Z INFO login ok user=admin\\r\\u{1b}[31m"
        );
        assert_eq!(clean("a\\nb").to_string(), "a\\\\nb", "a literal backslash");
        assert_eq!(
            clean("x\u{202e}y\u{2028}").to_string(),
            "x\\u{202e}y\\u{2028}"
        );
        assert_eq!(clean("NUL\0").to_string(), "NUL\\u{0}");
    }

    #[test]
    fn long_values_are_cut() {
        let long = "é".repeat(16 * 1024);
        let out = clean(&long).to_string();
        assert_eq!(out.chars().count(), MAX_CHARS + 1);
        assert!(out.ends_with('…'));
        let exact = "a".repeat(MAX_CHARS);
        assert_eq!(clean(&exact).to_string(), exact, "no ellipsis at the limit");
        assert_eq!(clean("alice").to_string(), "alice");
    }
}
