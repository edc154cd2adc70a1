//! One kept-alive HTTP/1.1 connection per node, on hyper's connection-level client (the
//! one the peer streams use, `src/transport/stream.rs`).
//!
//! The load generator shares two cores with the servers it measures, so every microsecond
//! it spends per request is taken from them. reqwest (hyper's pooled client under a URL
//! parser, a pool and a timer per request) cost about 6 µs of user CPU per request here.
//! `kvctl bench` on hyper's `client::conn`, one connection per worker and node, costs
//! about 2.5 µs and drives 99-114k requests/s against the do-nothing server, beside
//! `wrk -t1`'s 107-122k/s in the same minutes. A hand-framed client (httparse, reused
//! buffers) cost 0.9 µs but drove no more requests per second, so the framing is hyper's.

use std::io;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// An answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// Why an exchange failed.
#[derive(Debug)]
pub enum Failure {
    /// The answer was not HTTP/1.1 that hyper could parse.
    BadAnswer,
    /// The connection failed (reset, closed early, or closed before this request).
    Io,
}

/// A connection to one server.
pub struct Connection {
    sender: SendRequest<Full<Bytes>>,
    /// Drives the connection; aborted when the connection is dropped.
    driver: JoinHandle<()>,
    /// The server said `Connection: close` on its last answer.
    closing: bool,
}

impl Connection {
    /// Connects to `authority` (`host:port`) with `TCP_NODELAY`.
    pub async fn connect(authority: &str) -> io::Result<Connection> {
        let stream = TcpStream::connect(authority).await?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        let driver = tokio::spawn(async move {
            // Its error also fails the exchange waiting on it, which reports it.
            let _ = connection.await;
        });
        Ok(Connection {
            sender,
            driver,
            closing: false,
        })
    }

    /// Whether the connection can carry another request: the server did not ask to close
    /// it, and hyper has not seen it closed (a node that restarted, or a server that
    /// closed it silently). A close that hyper has not read yet still fails the next
    /// exchange; the worker's idle limit keeps that from happening with kvstore's timeout.
    pub fn reusable(&self) -> bool {
        !self.closing && !self.sender.is_closed()
    }

    /// Sends `request` and reads the whole answer.
    pub async fn exchange(&mut self, request: Request<Full<Bytes>>) -> Result<Answer, Failure> {
        let response = self.sender.send_request(request).await.map_err(failure)?;
        self.closing = response
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .any(|value| {
                value
                    .as_bytes()
                    .split(|&byte| byte == b',')
                    .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
            });
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.map_err(failure)?;
        Ok(Answer {
            status,
            body: body.to_bytes(),
        })
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

fn failure(error: hyper::Error) -> Failure {
    if error.is_parse() || error.is_parse_status() || error.is_parse_too_large() {
        Failure::BadAnswer
    } else {
        Failure::Io
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

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

    fn get() -> Request<Full<Bytes>> {
        Request::get("/")
            .header("host", "x")
            .body(Full::default())
            .unwrap()
    }

    #[tokio::test]
    async fn exchanges_over_a_kept_alive_connection_in_small_pieces() {
        let authority = serve(vec![
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\ntwo\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n",
        ])
        .await;
        let mut connection = Connection::connect(&authority).await.unwrap();
        for (status, body, reusable) in [
            (200, &b"one"[..], true),
            (200, b"two", true),
            (404, b"", false),
        ] {
            let answer = connection.exchange(get()).await.unwrap();
            assert_eq!(answer.status, status);
            assert_eq!(answer.body, body);
            assert_eq!(connection.reusable(), reusable);
        }
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_silently_is_not_reused() {
        // One keep-alive answer, then the server drops the socket without a word.
        let authority = serve(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]).await;
        let mut connection = Connection::connect(&authority).await.unwrap();
        assert_eq!(connection.exchange(get()).await.unwrap().status, 200);
        // `ready` fails once hyper's connection task has read the close.
        let ready = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            connection.sender.ready(),
        )
        .await
        .expect("hyper never saw the close");
        assert!(ready.is_err(), "the closed connection is ready for more");
        assert!(
            !connection.reusable(),
            "the closed connection still looks reusable"
        );
    }

    #[tokio::test]
    async fn a_malformed_answer_is_a_bad_answer() {
        let authority = serve(vec![b"NOT HTTP AT ALL\r\n\r\n"]).await;
        let mut connection = Connection::connect(&authority).await.unwrap();
        assert!(matches!(
            connection.exchange(get()).await,
            Err(Failure::BadAnswer)
        ));
    }
}
