//! One kept-alive HTTP/1.1 connection, as lean as the load generator needs.
//!
//! The load generator shares two cores with the servers it measures, so every microsecond
//! it spends per request is taken from them. A general client (reqwest over hyper's pooled
//! client) costs about 6 µs of user CPU per request here: URL parsing, a header map, a pool
//! checkout, a timer, and a hop between the caller's task and the connection's task. `wrk`
//! costs about 1 µs. This connection writes a request the caller formatted into one buffer
//! (one `write`), reads the answer into a reused buffer (usually one `read`), and parses the
//! head with `httparse`, the parser hyper itself uses. Bodies are framed by
//! `Content-Length`, by chunked transfer coding, or (without either) by the end of the
//! connection; `Connection: close` is honoured. No pipelining: one request at a time.

use std::io;
use std::ops::Range;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most headers an answer may have.
const HEADERS_MAX: usize = 32;

/// Largest answer (head and body) accepted, so a misbehaving server cannot exhaust memory.
const ANSWER_MAX: usize = 16 << 20;

/// An answer: its status and where its body lies in the connection's buffer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    body: Body,
}

#[derive(Debug, PartialEq, Eq)]
enum Body {
    /// A range of the read buffer.
    InBuffer(Range<usize>),
    /// Decoded from chunks.
    Decoded(Vec<u8>),
}

/// A connection to one server.
pub struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed are `buffer[..filled]`.
    buffer: Vec<u8>,
    filled: usize,
    /// Bytes of the previous answer still at the front of `buffer`.
    consumed: usize,
    /// The server asked to close, or framed the last body by closing.
    closing: bool,
}

/// How a complete head frames the body that follows it.
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// What parsing the buffer found.
enum Parsed {
    /// More bytes are needed.
    Partial,
    /// An answer, the bytes it took from the front of the buffer, and whether the server
    /// closes the connection after it.
    Complete(Answer, usize, bool),
}

impl Connection {
    /// Connects to `authority` (`host:port`) with `TCP_NODELAY`.
    pub async fn connect(authority: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buffer: vec![0; 4096],
            filled: 0,
            consumed: 0,
            closing: false,
        })
    }

    /// Whether the connection can carry another request.
    pub fn reusable(&self) -> bool {
        !self.closing
    }

    /// Sends `request` (a complete HTTP/1.1 request) and reads the answer. After an error,
    /// or if the future is dropped before it completes, the connection is not reusable.
    pub async fn exchange(&mut self, request: &[u8]) -> io::Result<Answer> {
        if self.closing {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the server closed this connection",
            ));
        }
        // Until an answer is complete, the connection is in an unknown state.
        self.closing = true;
        self.discard_consumed();
        if self.filled > 0 {
            // Bytes no request asked for: the answers would be out of step with requests.
            return Err(invalid("bytes arrived before a request was sent"));
        }
        self.stream.write_all(request).await?;
        loop {
            if let Parsed::Complete(answer, used, closing) =
                parse(&self.buffer[..self.filled], false)?
            {
                self.consumed = used;
                self.closing = closing;
                return Ok(answer);
            }
            if self.filled == self.buffer.len() {
                if self.buffer.len() >= ANSWER_MAX {
                    return Err(invalid("answer larger than 16 MiB"));
                }
                self.buffer.resize(self.buffer.len() * 2, 0);
            }
            let read = self.stream.read(&mut self.buffer[self.filled..]).await?;
            if read == 0 {
                // The end of the stream completes a body framed by it, nothing else.
                return match parse(&self.buffer[..self.filled], true)? {
                    Parsed::Complete(answer, used, _) => {
                        self.consumed = used;
                        Ok(answer)
                    }
                    Parsed::Partial => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection before a complete answer",
                    )),
                };
            }
            self.filled += read;
        }
    }

    /// The body of `answer`, the last answer this connection read.
    pub fn body<'a>(&'a self, answer: &'a Answer) -> &'a [u8] {
        match &answer.body {
            Body::InBuffer(range) => &self.buffer[range.clone()],
            Body::Decoded(bytes) => bytes,
        }
    }

    fn discard_consumed(&mut self) {
        if self.consumed > 0 {
            self.buffer.copy_within(self.consumed..self.filled, 0);
            self.filled -= self.consumed;
            self.consumed = 0;
        }
    }
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

/// Parses one answer from the front of `bytes`, skipping interim (1xx) answers; `at_eof`
/// when no more bytes will come.
fn parse(bytes: &[u8], at_eof: bool) -> io::Result<Parsed> {
    let mut start = 0;
    loop {
        match parse_at(bytes, start, at_eof)? {
            Step::Interim(next) => start = next,
            Step::Done(parsed) => return Ok(parsed),
        }
    }
}

/// What one head at `start` was.
enum Step {
    /// An interim answer; the next head starts at this offset.
    Interim(usize),
    Done(Parsed),
}

fn parse_at(bytes: &[u8], start: usize, at_eof: bool) -> io::Result<Step> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(&bytes[start..]) {
        Ok(httparse::Status::Complete(length)) => start + length,
        Ok(httparse::Status::Partial) => return Ok(Step::Done(Parsed::Partial)),
        Err(error) => return Err(invalid(&format!("malformed answer head: {error}"))),
    };
    let status = response.code.unwrap_or(0);
    if status == 101 {
        return Err(invalid("unexpected 101 Switching Protocols"));
    }
    if (100..200).contains(&status) {
        return Ok(Step::Interim(head));
    }
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let (mut close_token, mut keep_alive_token) = (false, false);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = std::str::from_utf8(header.value)
                .ok()
                .and_then(|text| text.trim().parse().ok())
                .ok_or_else(|| invalid("malformed Content-Length"))?;
            if length.is_some_and(|length| length != value) {
                return Err(invalid("conflicting Content-Length headers"));
            }
            length = Some(value);
        } else if header.name.eq_ignore_ascii_case("transfer-encoding") {
            if !header.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(invalid("unsupported Transfer-Encoding"));
            }
            chunked = true;
        } else if header.name.eq_ignore_ascii_case("connection") {
            for token in header.value.split(|&byte| byte == b',') {
                let token = token.trim_ascii();
                close_token |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    let closing = close_token || (response.version == Some(0) && !keep_alive_token);
    // RFC 9112 section 6.3: no body after 204 or 304; Transfer-Encoding overrides
    // Content-Length; without either, the body ends with the connection.
    let framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(length) = length {
        Framing::Length(length)
    } else {
        Framing::UntilClose
    };
    let parsed = match framing {
        Framing::Length(length) => {
            if length > ANSWER_MAX {
                return Err(invalid("answer larger than 16 MiB"));
            }
            if bytes.len() - head < length {
                return Ok(Step::Done(Parsed::Partial));
            }
            let answer = Answer {
                status,
                body: Body::InBuffer(head..head + length),
            };
            Parsed::Complete(answer, head + length, closing)
        }
        Framing::Chunked => match dechunk(&bytes[head..])? {
            None => Parsed::Partial,
            Some((body, used)) => Parsed::Complete(
                Answer {
                    status,
                    body: Body::Decoded(body),
                },
                head + used,
                closing,
            ),
        },
        Framing::UntilClose => {
            if !at_eof {
                return Ok(Step::Done(Parsed::Partial));
            }
            let answer = Answer {
                status,
                body: Body::InBuffer(head..bytes.len()),
            };
            Parsed::Complete(answer, bytes.len(), true)
        }
    };
    Ok(Step::Done(parsed))
}

/// Decodes a chunked body at the front of `bytes`: the body and the bytes it took, or
/// `None` if it is incomplete. Chunk extensions and trailers are skipped.
fn dechunk(bytes: &[u8]) -> io::Result<Option<(Vec<u8>, usize)>> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let Some(line_end) = find_crlf(&bytes[at..]) else {
            return Ok(None);
        };
        let line = &bytes[at..at + line_end];
        let size_text = line.split(|&byte| byte == b';').next().unwrap_or(line);
        let size = std::str::from_utf8(size_text)
            .ok()
            .and_then(|text| usize::from_str_radix(text.trim(), 16).ok())
            .ok_or_else(|| invalid("malformed chunk size"))?;
        at += line_end + 2;
        if size == 0 {
            // Trailers, each a line, until an empty line.
            loop {
                let Some(line_end) = find_crlf(&bytes[at..]) else {
                    return Ok(None);
                };
                at += line_end + 2;
                if line_end == 0 {
                    return Ok(Some((body, at)));
                }
            }
        }
        if size > ANSWER_MAX || body.len() + size > ANSWER_MAX {
            return Err(invalid("answer larger than 16 MiB"));
        }
        if bytes.len() < at + size + 2 {
            return Ok(None);
        }
        if &bytes[at + size..at + size + 2] != b"\r\n" {
            return Err(invalid("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&bytes[at..at + size]);
        at += size + 2;
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|window| window == b"\r\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn complete(bytes: &[u8], at_eof: bool) -> (u16, Vec<u8>, usize, bool) {
        match parse(bytes, at_eof).expect("parses") {
            Parsed::Complete(answer, used, closing) => {
                let body = match answer.body {
                    Body::InBuffer(range) => bytes[range].to_vec(),
                    Body::Decoded(body) => body,
                };
                (answer.status, body, used, closing)
            }
            Parsed::Partial => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn is_partial(bytes: &[u8]) -> bool {
        matches!(parse(bytes, false), Ok(Parsed::Partial))
    }

    #[test]
    fn frames_by_content_length_and_is_partial_before_it() {
        let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhelloHTTP/1.1";
        let head = answer.len() - b"helloHTTP/1.1".len();
        assert_eq!(
            complete(answer, false),
            (200, b"hello".to_vec(), head + 5, false)
        );
        for cut in 0..head + 5 {
            assert!(is_partial(&answer[..cut]), "cut at {cut}");
        }
    }

    #[test]
    fn decodes_chunks_with_extensions_and_trailers() {
        let answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                       3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nx-trailer: 1\r\n\r\n";
        assert_eq!(
            complete(answer, false),
            (200, b"abcde".to_vec(), answer.len(), false)
        );
        for cut in 0..answer.len() {
            assert!(is_partial(&answer[..cut]), "cut at {cut}");
        }
        let bad = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
        assert!(parse(bad, false).is_err());
        let unterminated = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc";
        assert!(parse(unterminated, false).is_err());
    }

    #[test]
    fn a_body_without_length_ends_with_the_connection() {
        let answer = b"HTTP/1.1 200 OK\r\n\r\nall of it";
        assert!(is_partial(answer));
        assert_eq!(
            complete(answer, true),
            (200, b"all of it".to_vec(), answer.len(), true)
        );
    }

    #[test]
    fn honours_connection_close_and_bodiless_statuses() {
        let closing = b"HTTP/1.1 409 Conflict\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}";
        assert_eq!(
            complete(closing, false),
            (409, b"{}".to_vec(), closing.len(), true)
        );
        let old = b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
        assert!(complete(old, false).3, "HTTP/1.0 closes by default");
        let no_content = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(
            complete(no_content, false),
            (204, vec![], no_content.len(), false)
        );
    }

    #[test]
    fn skips_interim_answers_and_prefers_chunked_over_length() {
        let answer = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\n\
                       HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(
            complete(answer, false),
            (200, b"ok".to_vec(), answer.len(), false)
        );
        assert!(is_partial(b"HTTP/1.1 100 Continue\r\n\r\n"));
        assert!(parse(b"HTTP/1.1 101 Switching Protocols\r\n\r\n", false).is_err());
        let both = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 99\r\n\r\n\
                     2\r\nhi\r\n0\r\n\r\n";
        assert_eq!(
            complete(both, false),
            (200, b"hi".to_vec(), both.len(), false)
        );
        let not_modified = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n";
        assert_eq!(
            complete(not_modified, false),
            (304, vec![], not_modified.len(), false)
        );
        let conflicting = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert!(parse(conflicting, false).is_err());
        let repeated = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab";
        assert_eq!(complete(repeated, false).1, b"ab");
    }

    #[test]
    fn reads_connection_tokens() {
        let listed =
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 0\r\n\r\n";
        assert!(complete(listed, false).3);
        let kept = b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n";
        assert!(!complete(kept, false).3);
        let other = b"HTTP/1.0 200 OK\r\nConnection: TE\r\nContent-Length: 0\r\n\r\n";
        assert!(
            complete(other, false).3,
            "HTTP/1.0 without keep-alive closes"
        );
    }

    #[test]
    fn refuses_malformed_heads() {
        assert!(parse(b"NOT HTTP\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", false).is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false).is_err());
        let huge = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            ANSWER_MAX + 1
        );
        assert!(parse(huge.as_bytes(), false).is_err());
    }

    /// A server that answers each request with `answers[i]`, written one byte at a time,
    /// then closes.
    async fn serve(answers: Vec<&'static [u8]>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            for answer in answers {
                let mut got = Vec::new();
                while !got.ends_with(b"\r\n\r\n") {
                    let read = socket.read(&mut request).await.unwrap();
                    assert!(read > 0, "client closed early");
                    got.extend_from_slice(&request[..read]);
                }
                for byte in answer {
                    socket.write_all(&[*byte]).await.unwrap();
                }
            }
        });
        authority
    }

    #[tokio::test]
    async fn exchanges_over_a_kept_alive_connection_in_small_pieces() {
        let authority = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let mut connection = Connection::connect(&authority).await.unwrap();
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for (status, body) in [(200, &b"one"[..]), (200, b"two"), (404, b"")] {
            let answer = connection.exchange(request).await.unwrap();
            assert_eq!(answer.status, status);
            assert_eq!(connection.body(&answer), body);
            assert!(connection.reusable());
        }
        // The server closed after its last answer: the next exchange fails, it does not hang.
        assert!(connection.exchange(request).await.is_err());
    }

    #[tokio::test]
    async fn unasked_bytes_after_an_answer_stop_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let authority = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            // One write, one segment on loopback: the answer and a second, unasked one.
            let both = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na\
                         HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nb";
            socket.write_all(both).await.unwrap();
            let _ = socket.read(&mut request).await;
        });
        let mut connection = Connection::connect(&authority).await.unwrap();
        let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let answer = connection.exchange(request).await.unwrap();
        assert_eq!(connection.body(&answer), b"a");
        let error = connection.exchange(request).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert!(!connection.reusable());
    }
}
