//! A minimal HTTP/1.1 client for the admin listener, over a raw `TcpStream`: the tests see
//! exactly the bytes the server sends, with no client library in between.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response: its status code, its head (status line and headers) and its body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The status line and the headers, as sent.
    pub head: String,
    /// The body (de-chunked if it was chunked).
    pub body: String,
}

/// `GET path` on `addr` with `Connection: close`; panics after 30 s or on a malformed
/// answer.
pub async fn get(addr: SocketAddr, path: &str) -> Response {
    get_with(addr, path, &[]).await
}

/// The request's extra header lines, each ending in CRLF.
fn header_lines(headers: &[(&str, &str)]) -> String {
    headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect()
}

/// [`get`] with extra headers (`authorization`, for one).
pub async fn get_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Response {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{}\r\n",
            header_lines(headers)
        );
        stream.write_all(request.as_bytes()).await.expect("sends");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("reads");
        raw
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .unwrap_or_else(|_| panic!("GET {path} answered within 30 s"));
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a head and a body: {text:?}"));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("a status code: {head:?}"));
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    Response {
        status,
        head: head.to_string(),
        body: if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    }
}

/// The data of a chunked body.
fn dechunk(mut body: &str) -> String {
    let mut data = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        data.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    data
}

/// A server-sent event stream, read as it comes.
pub struct EventStream {
    /// The connection.
    stream: TcpStream,
    /// Everything read so far, head included.
    seen: String,
}

impl EventStream {
    /// `GET path` on `addr`, keeping the connection open; panics unless the answer is a
    /// 200 `text/event-stream`.
    pub async fn open(addr: SocketAddr, path: &str) -> EventStream {
        EventStream::open_with(addr, path, &[]).await
    }

    /// [`EventStream::open`] with extra headers (`authorization`, for one).
    pub async fn open_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> EventStream {
        let mut stream = TcpStream::connect(addr).await.expect("connects");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{}\r\n",
            header_lines(headers)
        );
        stream.write_all(request.as_bytes()).await.expect("sends");
        let mut events = EventStream {
            stream,
            seen: String::new(),
        };
        events.until("\r\n\r\n", Duration::from_secs(30)).await;
        let head = events.seen.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        events
    }

    /// Reads until what was read contains `text`; panics after `within`. Returns
    /// everything read so far.
    pub async fn until(&mut self, text: &str, within: Duration) -> &str {
        let deadline = tokio::time::Instant::now() + within;
        let mut buffer = [0u8; 4096];
        while !self.seen.contains(text) {
            let read = tokio::time::timeout_at(deadline, self.stream.read(&mut buffer))
                .await
                .unwrap_or_else(|_| {
                    panic!("{text:?} within {within:?}; read so far: {:?}", self.seen)
                })
                .expect("reads");
            assert!(
                read > 0,
                "the stream ended before {text:?}: {:?}",
                self.seen
            );
            self.seen
                .push_str(&String::from_utf8_lossy(&buffer[..read]));
        }
        &self.seen
    }
}
