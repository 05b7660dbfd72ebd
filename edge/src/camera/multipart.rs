//! Splitting an HTTP `multipart/x-mixed-replace` camera stream into its parts (the JPEG frames).
//!
//! Written here rather than taken from a crate: the multipart crates (`multer`, `multipart`) parse
//! `multipart/form-data` uploads that end, and want a `Content-Disposition` per part; a camera stream never
//! ends and its parts carry only `Content-Type` and, often, `Content-Length`. Cameras also differ in the
//! details this parser tolerates: the boundary with or without its leading `--`, parts with or without
//! `Content-Length`, bare `\n` line ends, and padding between parts.

use bytes::{Buf, Bytes, BytesMut};

/// The largest part accepted; a larger one is skipped as corrupt (a camera streaming garbage must not make
/// the edge buffer without bound).
pub const MAX_PART: usize = 32 << 20;

/// A parsed piece of the stream.
#[derive(Debug, PartialEq, Eq)]
pub enum Part {
    /// A whole part's body.
    Body(Bytes),
    /// A part that could not be taken (too large, bad headers); the parser has resynchronised on the next
    /// boundary.
    Corrupt(String),
}

/// Incremental parser: feed it the body's chunks, take the parts out.
pub struct Parser {
    /// The delimiter, `--<boundary>`.
    delimiter: Vec<u8>,
    buf: BytesMut,
    state: State,
    /// How far the buffer was already searched for the next delimiter (bodies without `Content-Length`),
    /// so each byte is scanned about once however the body arrives.
    searched: usize,
}

enum State {
    /// Looking for a delimiter line.
    Delimiter,
    /// After the delimiter: reading headers.
    Headers,
    /// Reading a body of known length.
    Sized(usize),
    /// Reading a body up to the next delimiter.
    Unsized,
}

impl Parser {
    /// A parser for the boundary from the `Content-Type` header (with or without a leading `--`).
    pub fn new(boundary: &str) -> Self {
        let b = boundary.trim().trim_matches('"');
        let b = b.strip_prefix("--").unwrap_or(b);
        Self {
            delimiter: format!("--{b}").into_bytes(),
            buf: BytesMut::new(),
            state: State::Delimiter,
            searched: 0,
        }
    }

    /// Adds received bytes.
    pub fn feed(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// Bytes held while waiting for the rest of a part.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete part, if the buffer holds one.
    pub fn next_part(&mut self) -> Option<Part> {
        loop {
            match self.state {
                State::Delimiter => {
                    let at = find(&self.buf, &self.delimiter)?;
                    // Skip to the end of the delimiter line.
                    let after = at + self.delimiter.len();
                    let eol = find(&self.buf[after..], b"\n")?;
                    self.buf.advance(after + eol + 1);
                    self.state = State::Headers;
                }
                State::Headers => {
                    let (end, len) = header_end(&self.buf)?;
                    let headers = String::from_utf8_lossy(&self.buf[..end]).to_string();
                    self.buf.advance(end + len);
                    match content_length(&headers) {
                        Some(Ok(n)) if n > MAX_PART => {
                            self.state = State::Delimiter;
                            return Some(Part::Corrupt(format!(
                                "part of {n} bytes is larger than the {MAX_PART}-byte limit"
                            )));
                        }
                        Some(Ok(n)) => self.state = State::Sized(n),
                        Some(Err(v)) => {
                            self.state = State::Delimiter;
                            return Some(Part::Corrupt(format!("bad Content-Length {v:?}")));
                        }
                        None => self.state = State::Unsized,
                    }
                }
                State::Sized(n) => {
                    if self.buf.len() < n {
                        return None;
                    }
                    let body = self.buf.split_to(n).freeze();
                    self.state = State::Delimiter;
                    return Some(Part::Body(body));
                }
                State::Unsized => {
                    let from = self.searched.saturating_sub(self.delimiter.len());
                    let found = find(&self.buf[from..], &self.delimiter).map(|i| i + from);
                    self.searched = self.buf.len();
                    let Some(at) = found else {
                        if self.buf.len() > MAX_PART {
                            self.buf.clear();
                            self.searched = 0;
                            self.state = State::Delimiter;
                            return Some(Part::Corrupt(format!(
                                "no boundary within {MAX_PART} bytes"
                            )));
                        }
                        return None;
                    };
                    self.searched = 0;
                    let mut body = self.buf.split_to(at).freeze();
                    // The line end before the delimiter belongs to it, not to the body.
                    if body.ends_with(b"\r\n") {
                        body.truncate(body.len() - 2);
                    } else if body.ends_with(b"\n") {
                        body.truncate(body.len() - 1);
                    }
                    self.state = State::Delimiter;
                    return Some(Part::Body(body));
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Where the header block ends: (offset of the blank line, its length).
fn header_end(buf: &[u8]) -> Option<(usize, usize)> {
    // A part with no headers at all starts with the blank line.
    if buf.starts_with(b"\r\n") {
        return Some((0, 2));
    }
    if buf.starts_with(b"\n") {
        return Some((0, 1));
    }
    let crlf = find(buf, b"\r\n\r\n").map(|i| (i, 4));
    let lf = find(buf, b"\n\n").map(|i| (i, 2));
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

fn content_length(headers: &str) -> Option<Result<usize, String>> {
    headers.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse().map_err(|_| v.trim().to_string()))
    })
}

/// The boundary parameter of a `multipart/x-mixed-replace; boundary=…` content type.
pub fn boundary_of(content_type: &str) -> Option<String> {
    content_type.split(';').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parts(p: &mut Parser) -> Vec<Part> {
        std::iter::from_fn(|| p.next_part()).collect()
    }

    #[test]
    fn parts_with_and_without_length_and_odd_boundaries() {
        let stream = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: 3\r\n\r\nabc\r\n\
--frame\r\nContent-Type: image/jpeg\r\n\r\nxyz\r\n--frame\nContent-Type: image/jpeg\n\nq\n--frame\r\n";
        for boundary in ["frame", "--frame", "\"frame\""] {
            let mut p = Parser::new(boundary);
            p.feed(stream);
            assert_eq!(
                parts(&mut p),
                vec![
                    Part::Body(Bytes::from_static(b"abc")),
                    Part::Body(Bytes::from_static(b"xyz")),
                    Part::Body(Bytes::from_static(b"q")),
                ],
                "{boundary}"
            );
        }
        assert_eq!(
            boundary_of("multipart/x-mixed-replace; boundary=\"myboundary\""),
            Some("myboundary".into())
        );
    }

    #[test]
    fn a_bad_length_is_corrupt_and_the_stream_goes_on() {
        let mut p = Parser::new("b");
        p.feed(b"--b\r\nContent-Length: many\r\n\r\njunk--b\r\nContent-Length: 2\r\n\r\nok");
        assert!(matches!(p.next_part(), Some(Part::Corrupt(_))));
        assert_eq!(p.next_part(), Some(Part::Body(Bytes::from_static(b"ok"))));
    }

    proptest! {
        /// However the stream is cut into chunks, the same parts come out.
        #[test]
        fn chunking_does_not_matter(bodies in proptest::collection::vec(proptest::collection::vec(0u8..=255, 0..64), 1..6),
                                    cuts in proptest::collection::vec(1usize..50, 1..40),
                                    sized in any::<bool>()) {
            let mut stream = Vec::new();
            for b in &bodies {
                stream.extend_from_slice(b"--bnd\r\nContent-Type: image/jpeg\r\n");
                if sized {
                    stream.extend_from_slice(format!("Content-Length: {}\r\n", b.len()).as_bytes());
                }
                stream.extend_from_slice(b"\r\n");
                // Unsized bodies must not contain the delimiter.
                let body: Vec<u8> = if sized { b.clone() } else { b.iter().map(|&x| if x == b'-' { b'+' } else { x }).collect() };
                stream.extend_from_slice(&body);
                stream.extend_from_slice(b"\r\n");
            }
            stream.extend_from_slice(b"--bnd\r\n");
            let mut p = Parser::new("bnd");
            let mut got = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < stream.len() {
                let n = cuts[i % cuts.len()].min(stream.len() - at);
                p.feed(&stream[at..at + n]);
                at += n;
                i += 1;
                got.extend(parts(&mut p));
            }
            let want: Vec<Part> = bodies.iter().map(|b| {
                let body: Vec<u8> = if sized { b.clone() } else { b.iter().map(|&x| if x == b'-' { b'+' } else { x }).collect() };
                Part::Body(Bytes::from(body))
            }).collect();
            prop_assert_eq!(got, want);
        }
    }
}
