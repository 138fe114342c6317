//! A reader for the JSON files MCP clients keep their servers in, which keeps
//! where every value is.
//!
//! VS Code's and Zed's `settings.json` are JSON with comments (`//`, `/* */`)
//! and trailing commas; Claude's and Cursor's files are plain JSON, which is a
//! subset. `corral config import` reads them all with this one parser, and
//! `corral mcp install|uninstall` edits them as text at the byte offsets it
//! records, so that everything it did not touch (comments, key order,
//! indentation) stays byte for byte as the user wrote it.
//!
//! Invariant: an error names a position and what was expected there, never
//! the text it found (a client's file may hold tokens).

use std::ops::Range;

/// How deep arrays and objects may nest: a bound on recursion, far above any real settings file.
const MAX_DEPTH: usize = 128;

/// A value and the bytes it spans in the text.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Value {
    pub(crate) kind: Kind,
    /// From the first byte of the value to just after its last (`{` to `}` for an object).
    pub(crate) span: Range<usize>,
}

/// What a value is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    /// The number as written (`1`, `2.5`, `1e3`).
    Number(String),
    String(String),
    Array(Vec<Value>),
    /// Members in file order; a repeated key is kept twice (lookups take the last, like `JSON.parse`).
    Object(Vec<Member>),
}

/// One `"key": value` of an object.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Member {
    pub(crate) key: String,
    /// The key with its quotes.
    pub(crate) key_span: Range<usize>,
    pub(crate) value: Value,
}

/// Why a file is not JSON: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ParseError {
    /// 1-based line.
    pub(crate) line: usize,
    /// 1-based column, in characters.
    pub(crate) column: usize,
    pub(crate) message: String,
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)
    }
}

impl Value {
    /// The members when this is an object.
    pub(crate) fn members(&self) -> Option<&[Member]> {
        match &self.kind {
            Kind::Object(members) => Some(members),
            _ => None,
        }
    }

    /// The value of `key` when this is an object that has it (the last one, if repeated).
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.members()?
            .iter()
            .rev()
            .find(|member| member.key == key)
            .map(|member| &member.value)
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::String(text) => Some(text),
            _ => None,
        }
    }

    /// What the value is, for messages: "a string", "an object".
    pub(crate) fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Null => "null",
            Kind::Bool(_) => "a boolean",
            Kind::Number(_) => "a number",
            Kind::String(_) => "a string",
            Kind::Array(_) => "an array",
            Kind::Object(_) => "an object",
        }
    }
}

/// Parse `text` (one value, usually an object), allowing comments, trailing commas and a BOM.
pub(crate) fn parse(text: &str) -> Result<Value, ParseError> {
    let mut parser = Parser {
        text,
        bytes: text.as_bytes(),
        at: 0,
    };
    if text.starts_with('\u{feff}') {
        parser.at = '\u{feff}'.len_utf8();
    }
    parser.skip_trivia()?;
    if parser.at == parser.bytes.len() {
        return Err(parser.error_at(parser.at, "the file is empty; expected a JSON object"));
    }
    let value = parser.value(0)?;
    parser.skip_trivia()?;
    if parser.at < parser.bytes.len() {
        return Err(parser.error_at(parser.at, "expected the end of the file after the top-level value"));
    }
    Ok(value)
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let mut start = offset;
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// Skip whitespace and comments from `at`; the offset of the next meaningful byte (or the end).
///
/// The text must be one this module parsed; an unterminated block comment ends at the end.
pub(crate) fn skip_trivia(text: &str, mut at: usize) -> usize {
    let bytes = text.as_bytes();
    loop {
        match bytes.get(at) {
            Some(b' ' | b'\t' | b'\n' | b'\r') => at += 1,
            Some(b'/') if bytes.get(at + 1) == Some(&b'/') => {
                at = text[at..].find('\n').map_or(bytes.len(), |index| at + index);
            }
            Some(b'/') if bytes.get(at + 1) == Some(&b'*') => {
                at = text[at + 2..]
                    .find("*/")
                    .map_or(bytes.len(), |index| at + 2 + index + 2);
            }
            _ => return at,
        }
    }
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn error_at(&self, offset: usize, message: &str) -> ParseError {
        let (line, column) = line_column(self.text, offset);
        ParseError {
            line,
            column,
            message: message.to_owned(),
        }
    }

    fn skip_trivia(&mut self) -> Result<(), ParseError> {
        loop {
            match self.bytes.get(self.at) {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.at += 1,
                Some(b'/') if self.bytes.get(self.at + 1) == Some(&b'/') => {
                    self.at = self.text[self.at..]
                        .find('\n')
                        .map_or(self.bytes.len(), |index| self.at + index);
                }
                Some(b'/') if self.bytes.get(self.at + 1) == Some(&b'*') => match self.text[self.at + 2..].find("*/") {
                    Some(index) => self.at = self.at + 2 + index + 2,
                    None => return Err(self.error_at(self.at, "unterminated `/*` comment")),
                },
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > MAX_DEPTH {
            return Err(self.error_at(self.at, "values nest too deeply"));
        }
        let start = self.at;
        let kind = match self.bytes.get(self.at) {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Kind::String(self.string()?),
            Some(b'-' | b'0'..=b'9') => Kind::Number(self.number()?),
            Some(b't') if self.bytes[self.at..].starts_with(b"true") => {
                self.at += 4;
                Kind::Bool(true)
            }
            Some(b'f') if self.bytes[self.at..].starts_with(b"false") => {
                self.at += 5;
                Kind::Bool(false)
            }
            Some(b'n') if self.bytes[self.at..].starts_with(b"null") => {
                self.at += 4;
                Kind::Null
            }
            None => return Err(self.error_at(self.at, "unexpected end of the file; expected a value")),
            Some(_) => {
                return Err(self.error_at(
                    self.at,
                    "expected a value (an object, array, string, number, true, false or null)",
                ));
            }
        };
        Ok(Value {
            kind,
            span: start..self.at,
        })
    }

    fn object(&mut self, depth: usize) -> Result<Kind, ParseError> {
        self.at += 1; // `{`
        let mut members = Vec::new();
        loop {
            self.skip_trivia()?;
            match self.bytes.get(self.at) {
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Kind::Object(members));
                }
                Some(b'"') => {}
                None => return Err(self.error_at(self.at, "unexpected end of the file; expected `}`")),
                Some(_) => return Err(self.error_at(self.at, "expected a key in double quotes or `}`")),
            }
            let key_start = self.at;
            let key = self.string()?;
            let key_span = key_start..self.at;
            self.skip_trivia()?;
            if self.bytes.get(self.at) != Some(&b':') {
                return Err(self.error_at(self.at, "expected `:` after the key"));
            }
            self.at += 1;
            self.skip_trivia()?;
            let value = self.value(depth + 1)?;
            members.push(Member { key, key_span, value });
            self.skip_trivia()?;
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b'}') => {}
                None => return Err(self.error_at(self.at, "unexpected end of the file; expected `,` or `}`")),
                Some(_) => return Err(self.error_at(self.at, "expected `,` or `}` after a member")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Kind, ParseError> {
        self.at += 1; // `[`
        let mut items = Vec::new();
        loop {
            self.skip_trivia()?;
            if self.bytes.get(self.at) == Some(&b']') {
                self.at += 1;
                return Ok(Kind::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_trivia()?;
            match self.bytes.get(self.at) {
                Some(b',') => self.at += 1,
                Some(b']') => {}
                None => return Err(self.error_at(self.at, "unexpected end of the file; expected `,` or `]`")),
                Some(_) => return Err(self.error_at(self.at, "expected `,` or `]` after an item")),
            }
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let start = self.at;
        self.at += 1; // `"`
        let mut out = String::new();
        loop {
            let Some(&byte) = self.bytes.get(self.at) else {
                return Err(self.error_at(start, "unterminated string"));
            };
            match byte {
                b'"' => {
                    self.at += 1;
                    return Ok(out);
                }
                b'\\' => {
                    let escape_at = self.at;
                    self.at += 1;
                    let Some(&escaped) = self.bytes.get(self.at) else {
                        return Err(self.error_at(start, "unterminated string"));
                    };
                    self.at += 1;
                    match escaped {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => out.push(self.unicode_escape(escape_at)?),
                        _ => return Err(self.error_at(escape_at, "invalid escape in a string")),
                    }
                }
                0x00..=0x1f => {
                    return Err(self.error_at(self.at, "a control character (such as a line break) in a string"));
                }
                _ => {
                    // A whole UTF-8 character: `text` is a str, so `at` is on a boundary here.
                    let rest = &self.text[self.at..];
                    let next = rest.find(['"', '\\']).unwrap_or(rest.len());
                    let chunk = &rest[..next];
                    if let Some(control) = chunk.bytes().position(|byte| byte < 0x20) {
                        out.push_str(&chunk[..control]);
                        self.at += control;
                    } else {
                        out.push_str(chunk);
                        self.at += next;
                    }
                }
            }
        }
    }

    /// After `\u`: four hex digits, and a low surrogate's `\uXXXX` after a high one.
    fn unicode_escape(&mut self, escape_at: usize) -> Result<char, ParseError> {
        let high = self.hex4(escape_at)?;
        if (0xd800..0xdc00).contains(&high) {
            if self.bytes.get(self.at) == Some(&b'\\') && self.bytes.get(self.at + 1) == Some(&b'u') {
                self.at += 2;
                let low = self.hex4(escape_at)?;
                if (0xdc00..0xe000).contains(&low) {
                    let code = 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
                    return char::from_u32(code).ok_or_else(|| self.error_at(escape_at, "invalid `\\u` escape"));
                }
            }
            return Err(self.error_at(escape_at, "a lone surrogate in a `\\u` escape"));
        }
        char::from_u32(high).ok_or_else(|| self.error_at(escape_at, "a lone surrogate in a `\\u` escape"))
    }

    fn hex4(&mut self, escape_at: usize) -> Result<u32, ParseError> {
        let digits = self
            .text
            .get(self.at..self.at + 4)
            .filter(|digits| digits.bytes().all(|byte| byte.is_ascii_hexdigit()))
            .ok_or_else(|| self.error_at(escape_at, "expected four hex digits after `\\u`"))?;
        let value = u32::from_str_radix(digits, 16).map_err(|_| self.error_at(escape_at, "invalid `\\u` escape"))?;
        self.at += 4;
        Ok(value)
    }

    fn number(&mut self) -> Result<String, ParseError> {
        let start = self.at;
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        let digits = |parser: &mut Self| {
            let from = parser.at;
            while parser.bytes.get(parser.at).is_some_and(u8::is_ascii_digit) {
                parser.at += 1;
            }
            parser.at > from
        };
        if !digits(self) {
            return Err(self.error_at(start, "invalid number"));
        }
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            if !digits(self) {
                return Err(self.error_at(start, "invalid number"));
            }
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            if !digits(self) {
                return Err(self.error_at(start, "invalid number"));
            }
        }
        Ok(self.text[start..self.at].to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_trailing_commas_and_spans() {
        let text = "\u{feff}{\n  // a comment\n  \"a\": [1, 2.5e3, \"x\\u00e9\\ud83d\\ude00\",], /* b */ \"b\": {\"c\": null,},\n}";
        let value = parse(text).expect("parses");
        let members = value.members().expect("an object");
        assert_eq!(members.len(), 2);
        assert_eq!(&text[members[0].key_span.clone()], "\"a\"");
        let Kind::Array(items) = &members[0].value.kind else {
            panic!("an array")
        };
        assert_eq!(items[1].kind, Kind::Number("2.5e3".to_owned()));
        assert_eq!(items[2].kind, Kind::String("xé😀".to_owned()));
        assert_eq!(&text[members[1].value.span.clone()], "{\"c\": null,}");
        assert_eq!(
            value.get("b").and_then(|b| b.get("c")).map(|c| &c.kind),
            Some(&Kind::Null)
        );
    }

    #[test]
    fn errors_name_the_position_and_never_the_text() {
        let cases = [
            (
                "{\n  \"a\": \"sk-secret\"\n  \"b\": 1\n}",
                3,
                3,
                "expected `,` or `}` after a member",
            ),
            ("{\"a\": \"sk-secret", 1, 7, "unterminated string"),
            ("", 1, 1, "the file is empty; expected a JSON object"),
            (
                "{\"a\": tru}",
                1,
                7,
                "expected a value (an object, array, string, number, true, false or null)",
            ),
            ("{} x", 1, 4, "expected the end of the file after the top-level value"),
            ("{\"é\": /* never closed", 1, 7, "unterminated `/*` comment"),
        ];
        for (text, line, column, message) in cases {
            let error = parse(text).expect_err(text);
            assert_eq!(
                (error.line, error.column, error.message.as_str()),
                (line, column, message),
                "{text:?}"
            );
            assert!(!error.to_string().contains("sk-secret"));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let text = "[".repeat(100_000);
        let error = parse(&text).expect_err("too deep");
        assert_eq!(error.message, "values nest too deeply");
    }

    #[test]
    fn trivia_skipping_matches_the_parser() {
        let text = "  // x\n /* y */ ,";
        assert_eq!(skip_trivia(text, 0), text.len() - 1);
        assert_eq!(line_column("ab\ncé\nd", 6), (2, 3));
    }
}
