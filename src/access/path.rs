//! The request path as access rules see it. Matching a raw path would be a way around the
//! rules (`/public/../admin` is not under `/public`), so the path is normalised first:
//!
//! * only the path counts: the query (`?…`) and a fragment are cut off;
//! * percent-escapes are decoded once (`%61` is `a`, `%2e%2e` is `..`; `%252F` is the text
//!   `%2F`, as a backend that decodes once sees it);
//! * `.` and `..` segments are removed (RFC 3986 §5.2.4; `..` never climbs above `/`), and
//!   empty segments (`//`) collapse; a trailing `/` is kept;
//! * paths are compared case-sensitively.
//!
//! Some paths read differently to different backends: an encoded slash `%2F`, a backslash
//! (raw or `%5C`) and `;` path parameters (`/public/..;/admin` is `/admin` to Tomcat). Such a
//! path is normalised in two readings, with them as plain characters and with them as
//! separators (parameters cut off); a rule that looks at the path must give the same answer for
//! both, or the request is *unclear*. A path that cannot be normalised at all (a bad escape, a
//! NUL or other control character, bytes that are not UTF-8 once decoded, not starting with
//! `/`, longer than [`MAX_PATH`]) is unclear too. An unclear request never matches a bypass or
//! allow rule by accident: the first rule whose other keys match and whose answer depends on
//! the unclear part decides `deny` (see `Rules::find`).
//!
//! Already normal paths (the common case) are borrowed as they are; the others are written
//! into buffers on the stack, so no path costs an allocation.

/// The longest normalised path a rule is matched against; longer ones are unclear.
pub const MAX_PATH: usize = 4096;

/// Why a request cannot be matched with certainty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unclear {
    /// The path does not start with `/`.
    NotAbsolute,
    /// A `%` not followed by two hex digits.
    BadEscape,
    /// A NUL or other control character, raw or encoded.
    Control,
    /// Decoded bytes that are not UTF-8.
    NotUtf8,
    /// Longer than [`MAX_PATH`] once normalised.
    TooLong,
    /// `%2F`, `\` or `;` make the rule's answer depend on how the backend reads them.
    Ambiguous,
    /// The rule names networks and the client's address is not known.
    NoClientAddress,
}

impl Unclear {
    pub fn as_str(self) -> &'static str {
        match self {
            Unclear::NotAbsolute => "the path does not start with '/'",
            Unclear::BadEscape => "the path holds a '%' not followed by two hex digits",
            Unclear::Control => "the path holds a NUL or another control character",
            Unclear::NotUtf8 => "the decoded path is not UTF-8",
            Unclear::TooLong => "the path is too long to normalise",
            Unclear::Ambiguous => {
                "the path holds %2F, '\\' or ';', and the rule's answer depends on whether a backend reads them as separators"
            }
            Unclear::NoClientAddress => "the client's address is not known",
        }
    }
}

/// The normalised path, in one reading or two.
#[derive(Debug, Clone, Copy)]
pub enum Paths<'a> {
    /// Every backend reads it the same way.
    One(&'a str),
    /// As plain characters, and as separators: they differ.
    Two(&'a str, &'a str),
    /// It cannot be normalised.
    Unclear(Unclear),
}

/// How `%2F`, `\` and `;` are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// As ordinary characters (`%2F` stays the text `%2F`).
    Literal,
    /// `%2F` and `\` as `/`, and `;…` up to the next separator cut off.
    Separator,
}

/// The path part of a request target: up to `?` or `#`.
pub fn path_part(raw: &str) -> &str {
    raw.find(['?', '#']).map_or(raw, |i| &raw[..i])
}

/// Is `p` already what normalisation would make of it, in both readings?
fn is_normal(p: &str) -> bool {
    if !p.starts_with('/')
        || p.len() > MAX_PATH
        || p.bytes()
            .any(|b| b.is_ascii_control() || b == b'%' || b == b'\\' || b == b';')
    {
        return false;
    }
    let mut segs = p[1..].split('/').peekable();
    while let Some(seg) = segs.next() {
        let last = segs.peek().is_none();
        if seg == "." || seg == ".." || (seg.is_empty() && !last && p.len() > 1) {
            return false;
        }
    }
    true
}

struct Buf {
    bytes: [u8; MAX_PATH],
    len: usize,
}

impl Buf {
    fn new() -> Self {
        Buf {
            bytes: [0; MAX_PATH],
            len: 0,
        }
    }
    fn push(&mut self, b: u8) -> Result<(), Unclear> {
        let slot = self.bytes.get_mut(self.len).ok_or(Unclear::TooLong)?;
        *slot = b;
        self.len += 1;
        Ok(())
    }
    fn filled(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
    fn ends_with_slash(&self) -> bool {
        self.filled().last() == Some(&b'/')
    }
    fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }
    /// Ends the segment that starts at `start`: drops it if it is `.`, drops it and the one
    /// before if it is `..`.
    fn close_segment(&mut self, start: usize) {
        match self.filled().get(start..) {
            Some(b".") => self.truncate(start),
            Some(b"..") => {
                self.truncate(start.saturating_sub(1));
                let keep = self
                    .filled()
                    .iter()
                    .rposition(|&b| b == b'/')
                    .map_or(0, |i| i + 1);
                self.truncate(keep);
                if self.len == 0 {
                    self.len = 1;
                    self.bytes[0] = b'/';
                }
            }
            _ => {}
        }
    }
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Normalises the path `p` (no query) into `out` in one reading.
fn normalise(p: &str, reading: Reading, out: &mut Buf) -> Result<(), Unclear> {
    out.len = 0;
    if p.is_empty() {
        return out.push(b'/');
    }
    let bytes = p.as_bytes();
    if bytes[0] != b'/' {
        return Err(Unclear::NotAbsolute);
    }
    out.push(b'/')?;
    let mut start = out.len;
    let mut in_params = false;
    let mut i = 1;
    while i < bytes.len() {
        let (byte, encoded) = if bytes[i] == b'%' {
            let hi = bytes.get(i + 1).copied().and_then(hex);
            let lo = bytes.get(i + 2).copied().and_then(hex);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(Unclear::BadEscape);
            };
            i += 3;
            (hi << 4 | lo, true)
        } else {
            i += 1;
            (bytes[i - 1], false)
        };
        if byte.is_ascii_control() {
            return Err(Unclear::Control);
        }
        let separator = (byte == b'/' && !encoded)
            || (reading == Reading::Separator && (byte == b'/' || byte == b'\\'));
        if separator {
            out.close_segment(start);
            if !out.ends_with_slash() {
                out.push(b'/')?;
            }
            start = out.len;
            in_params = false;
        } else if in_params {
        } else if reading == Reading::Separator && byte == b';' {
            in_params = true;
        } else if byte == b'/' {
            for b in *b"%2F" {
                out.push(b)?;
            }
        } else {
            out.push(byte)?;
        }
    }
    out.close_segment(start);
    std::str::from_utf8(out.filled())
        .map(|_| ())
        .map_err(|_| Unclear::NotUtf8)
}

/// Room for the two readings of a path that is not already normal.
pub struct Scratch {
    literal: Buf,
    separator: Buf,
}

impl Scratch {
    pub fn new() -> Self {
        Scratch {
            literal: Buf::new(),
            separator: Buf::new(),
        }
    }

    /// The normalised readings of `p`, a path without its query.
    pub fn paths<'a>(&'a mut self, p: &'a str) -> Paths<'a> {
        if let Err(why) = normalise(p, Reading::Literal, &mut self.literal) {
            return Paths::Unclear(why);
        }
        if let Err(why) = normalise(p, Reading::Separator, &mut self.separator) {
            return Paths::Unclear(why);
        }
        let (a, b) = (self.literal.filled(), self.separator.filled());
        match (std::str::from_utf8(a), std::str::from_utf8(b)) {
            (Ok(a), Ok(b)) if a == b => Paths::One(a),
            (Ok(a), Ok(b)) => Paths::Two(a, b),
            _ => Paths::Unclear(Unclear::NotUtf8),
        }
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// Calls `f` with the normalised readings of the raw request path `raw`; an already normal
/// path is passed as it is, without touching the scratch buffers.
pub fn with_paths<R>(raw: &str, f: impl FnOnce(Paths<'_>) -> R) -> R {
    let p = path_part(raw);
    if is_normal(p) {
        return f(Paths::One(p));
    }
    let mut scratch = Scratch::new();
    f(scratch.paths(p))
}

/// The readings of `raw` as owned text, for `edgeauth access check` and tests.
pub fn readings(raw: &str) -> Result<Vec<String>, Unclear> {
    with_paths(raw, |paths| match paths {
        Paths::One(a) => Ok(vec![a.to_owned()]),
        Paths::Two(a, b) => Ok(vec![a.to_owned(), b.to_owned()]),
        Paths::Unclear(why) => Err(why),
    })
}
