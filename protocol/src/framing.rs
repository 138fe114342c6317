//! Framing of JSON-RPC messages on a byte stream, detected per connection.
//!
//! Two framings are spoken, chosen by the first bytes a front-end sends:
//! - [`Framing::ContentLength`]: LSP base protocol headers
//!   (`Content-Length: N\r\n\r\n` then N bytes), so that `vscode-jsonrpc`,
//!   Emacs `jsonrpc.el` and Neovim's `vim.lsp.rpc` connect unchanged;
//! - [`Framing::Lines`]: one JSON message per line (`\n`, optional `\r`).
//!
//! The decoder is runtime-free: feed it bytes as they arrive and pull
//! complete frames. Every frame is bounded by a maximum size so a peer cannot
//! make the other side buffer without limit.

use std::fmt;

/// How messages are delimited on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// LSP-style `Content-Length` headers.
    ContentLength,
    /// One JSON message per line.
    Lines,
}

impl fmt::Display for Framing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ContentLength => "content-length",
            Self::Lines => "lines",
        })
    }
}

/// Why a byte stream could not be cut into messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A message (or its header block) is larger than allowed.
    #[error("message of {size} bytes or more exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Bytes seen (or announced) so far.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The first bytes are neither JSON nor a `Content-Length` header.
    #[error("unrecognized framing: expected a JSON message or a `Content-Length:` header, got {first_bytes:?}")]
    Unrecognized {
        /// The first bytes received, for the error message.
        first_bytes: String,
    },
    /// A header block is malformed.
    #[error("malformed header: {0}")]
    BadHeader(String),
}

/// Largest header block accepted in `Content-Length` framing.
const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Decide the framing from the first bytes of a connection.
///
/// Returns `Ok(None)` while only whitespace has arrived. JSON starts with
/// `{` or `[`; anything starting with an ASCII letter is taken as a header
/// block (validated by the decoder).
pub fn detect(prefix: &[u8]) -> Result<Option<Framing>, FrameError> {
    let Some(first) = prefix.iter().find(|b| !b.is_ascii_whitespace()) else {
        return Ok(None);
    };
    match first {
        b'{' | b'[' => Ok(Some(Framing::Lines)),
        b if b.is_ascii_alphabetic() => Ok(Some(Framing::ContentLength)),
        _ => Err(FrameError::Unrecognized {
            first_bytes: String::from_utf8_lossy(&prefix[..prefix.len().min(32)]).into_owned(),
        }),
    }
}

/// Incremental decoder: feed bytes, take complete message bodies.
#[derive(Debug)]
pub struct FrameDecoder {
    framing: Framing,
    buf: Vec<u8>,
    /// Bytes of `buf` before this offset are already consumed.
    start: usize,
    /// In line mode, where the search for `\n` resumes (relative to `start`).
    scanned: usize,
    /// In header mode, the body length once the header block is parsed.
    pending_body: Option<usize>,
    max_message: usize,
}

impl FrameDecoder {
    /// A decoder for `framing` that refuses messages above `max_message` bytes.
    pub fn new(framing: Framing, max_message: usize) -> Self {
        Self {
            framing,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            pending_body: None,
            max_message,
        }
    }

    /// The framing this decoder speaks.
    pub fn framing(&self) -> Framing {
        self.framing
    }

    /// Append received bytes.
    pub fn feed(&mut self, data: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            // An idle connection does not keep the room its largest message took.
            self.buf.shrink_to(64 * 1024);
        } else if self.start > 64 * 1024 && self.start > self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Bytes fed but not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// The next complete message body, if one has arrived.
    ///
    /// After an error the stream cannot be resynchronised: close the connection.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        match self.framing {
            Framing::Lines => self.next_line(),
            Framing::ContentLength => self.next_content_length(),
        }
    }

    fn next_line(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            let pending = &self.buf[self.start..];
            let Some(pos) = memchr::memchr(b'\n', &pending[self.scanned..]) else {
                self.scanned = pending.len();
                if pending.len() > self.max_message {
                    return Err(FrameError::TooLarge {
                        size: pending.len(),
                        limit: self.max_message,
                    });
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            let mut line = &pending[..end];
            if line.last() == Some(&b'\r') {
                line = &line[..line.len() - 1];
            }
            if line.len() > self.max_message {
                return Err(FrameError::TooLarge {
                    size: line.len(),
                    limit: self.max_message,
                });
            }
            let is_blank = line.iter().all(u8::is_ascii_whitespace);
            let frame = (!is_blank).then(|| line.to_vec());
            self.start += end + 1;
            self.scanned = 0;
            if let Some(frame) = frame {
                return Ok(Some(frame));
            }
        }
    }

    fn next_content_length(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.pending_body.is_none() {
            let pending = &self.buf[self.start..];
            // Tolerate stray newlines between messages.
            let skipped = pending.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
            self.start += skipped;
            let pending = &self.buf[self.start..];
            let Some((header_len, body_offset)) = find_header_end(pending) else {
                if pending.len() > MAX_HEADER_BYTES {
                    return Err(FrameError::TooLarge {
                        size: pending.len(),
                        limit: MAX_HEADER_BYTES,
                    });
                }
                return Ok(None);
            };
            let length = parse_content_length(&pending[..header_len])?;
            if length > self.max_message {
                return Err(FrameError::TooLarge {
                    size: length,
                    limit: self.max_message,
                });
            }
            self.start += body_offset;
            self.pending_body = Some(length);
        }
        let length = self.pending_body.unwrap_or_default();
        if self.buf.len() - self.start < length {
            return Ok(None);
        }
        let body = self.buf[self.start..self.start + length].to_vec();
        self.start += length;
        self.pending_body = None;
        Ok(Some(body))
    }
}

/// Position of the end of the header block: (length of the headers, offset of the body).
fn find_header_end(data: &[u8]) -> Option<(usize, usize)> {
    let crlf = memchr::memmem::find(data, b"\r\n\r\n").map(|p| (p, p + 4));
    // A bare `\n\n` counts only if it comes first, so it is looked for only before the
    // CRLF blank line (never in the body): one found there is the end.
    let before = crlf.map_or(data.len(), |(p, _)| p + 1);
    memchr::memmem::find(&data[..before], b"\n\n")
        .map(|p| (p, p + 2))
        .or(crlf)
}

fn parse_content_length(headers: &[u8]) -> Result<usize, FrameError> {
    let text = std::str::from_utf8(headers).map_err(|_| FrameError::BadHeader("headers are not UTF-8".to_owned()))?;
    let mut length = None;
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(FrameError::BadHeader(format!("expected `Name: value`, got {line:?}")));
        };
        if name.trim().eq_ignore_ascii_case("content-length") {
            let parsed = value
                .trim()
                .parse::<usize>()
                .map_err(|_| FrameError::BadHeader(format!("Content-Length is not a number: {:?}", value.trim())))?;
            length = Some(parsed);
        }
    }
    length.ok_or_else(|| FrameError::BadHeader("no Content-Length header".to_owned()))
}

/// Append one message in `framing` to `out`.
pub fn encode(framing: Framing, body: &[u8], out: &mut Vec<u8>) {
    match framing {
        Framing::Lines => {
            out.extend_from_slice(body);
            out.push(b'\n');
        }
        Framing::ContentLength => {
            out.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            out.extend_from_slice(body);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(framing: Framing, chunks: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut decoder = FrameDecoder::new(framing, 1024);
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.feed(chunk);
            while let Some(frame) = decoder.next_frame().expect("valid stream") {
                out.push(frame);
            }
        }
        out
    }

    #[test]
    fn the_header_block_ends_at_the_first_blank_line_of_either_kind() {
        assert_eq!(find_header_end(b"Content-Length: 2\r\n\r\n{}"), Some((17, 21)));
        assert_eq!(find_header_end(b"Content-Length: 2\n\n{}"), Some((17, 19)));
        // A body's blank lines are not the header's end.
        assert_eq!(find_header_end(b"Content-Length: 4\r\n\r\n\n\n\n\n"), Some((17, 21)));
        assert_eq!(find_header_end(b"A: 1\n\nB: 2\r\n\r\n"), Some((4, 6)));
        assert_eq!(find_header_end(b"A: 1\r\nB: 2\r\n"), None);
        assert_eq!(find_header_end(b""), None);
    }

    #[test]
    fn detects_framing_from_first_non_blank_byte() {
        assert_eq!(detect(b"  \r\n"), Ok(None));
        assert_eq!(detect(b"\n{\"jsonrpc\""), Ok(Some(Framing::Lines)));
        assert_eq!(detect(b"[{}]"), Ok(Some(Framing::Lines)));
        assert_eq!(detect(b"Content-Length: 3"), Ok(Some(Framing::ContentLength)));
        assert!(matches!(detect(b"\x00\x01"), Err(FrameError::Unrecognized { .. })));
    }

    #[test]
    fn lines_split_across_reads_and_blank_lines_skipped() {
        let frames = decode_all(Framing::Lines, &[b"{\"a\":", b"1}\r\n\n{\"b\"", b":2}\n"]);
        assert_eq!(frames, vec![b"{\"a\":1}".to_vec(), b"{\"b\":2}".to_vec()]);
    }

    #[test]
    fn content_length_split_across_reads() {
        let frames = decode_all(
            Framing::ContentLength,
            &[
                b"Content-Length: 7\r\nContent-Type: x\r",
                b"\n\r\n{\"a\":1}Content-Length:",
                b" 2\r\n\r\n{}",
            ],
        );
        assert_eq!(frames, vec![b"{\"a\":1}".to_vec(), b"{}".to_vec()]);
    }

    #[test]
    fn oversized_messages_are_refused_before_buffering_them() {
        let mut decoder = FrameDecoder::new(Framing::ContentLength, 16);
        decoder.feed(b"Content-Length: 1000000\r\n\r\n");
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::TooLarge {
                size: 1_000_000,
                limit: 16
            })
        );
        let mut decoder = FrameDecoder::new(Framing::Lines, 16);
        decoder.feed(&[b'x'; 17]);
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn bad_headers_are_named() {
        let mut decoder = FrameDecoder::new(Framing::ContentLength, 16);
        decoder.feed(b"Content-Length: abc\r\n\r\n");
        assert_eq!(
            decoder.next_frame(),
            Err(FrameError::BadHeader(
                "Content-Length is not a number: \"abc\"".to_owned()
            ))
        );
        let mut decoder = FrameDecoder::new(Framing::ContentLength, 16);
        decoder.feed(b"Hello there\r\n\r\n");
        assert!(matches!(decoder.next_frame(), Err(FrameError::BadHeader(_))));
    }

    #[test]
    fn encode_round_trips_through_decoder() {
        for framing in [Framing::Lines, Framing::ContentLength] {
            let mut wire = Vec::new();
            encode(framing, b"{\"x\":1}", &mut wire);
            encode(framing, b"{}", &mut wire);
            assert_eq!(
                decode_all(framing, &[&wire]),
                vec![b"{\"x\":1}".to_vec(), b"{}".to_vec()]
            );
        }
    }
}
