//! The framed `Session` protocol: the `Session` call's messages over plain TCP, without
//! HTTP/2 under them (served by `fenced --session-listen ADDR`).
//!
//! 0. The connection is plain TCP, or TLS when the server serves TLS (`--tls-cert`): then
//!    the TLS handshake comes first, and everything below travels inside it
//!    ([`crate::framed_tls`] has a client's side of it).
//! 1. Every frame is a 4-byte big-endian length, then that many bytes (at most
//!    [`MAX_FRAME_BYTES`]); [`codec`] reads and writes them. [`connect`] opens a client's
//!    plain TCP connection through the hello; [`hello`] says hello on a connection already
//!    open (a TLS one, say).
//! 2. The client's first frame is [`HELLO`]; the server answers with the same frame. Any
//!    other first frame gets a frame starting with [`REFUSED`], naming what was expected,
//!    and the connection is closed.
//! 3. From then on each client frame is one protobuf `fenced.v1.SessionRequest` and each
//!    server frame one `fenced.v1.SessionResponse`, answered by id and possibly out of
//!    order, with the semantics and errors of the gRPC `Session` call.
//! 4. An empty frame is a keepalive [`PING`]. The server sends one when it has heard
//!    nothing from the client for its keepalive interval; the client answers each with an
//!    empty frame, and the server never answers one. A connection that stays silent for
//!    the keepalive timeout after a ping is closed as a client that is gone. (This is
//!    what HTTP/2's PING does for the gRPC `Session`: a client cut off by a partition or
//!    a dead host sends no FIN, so without it the server would keep its queued acquires.)
//! 5. A frame that is too long or does not decode closes the connection. Closing the
//!    connection, from either side, ends the session: its queued acquires leave their
//!    queues and grants not yet delivered are undone (CONTRACT L2).
//! 6. The server serves at most its cap of requests in flight per connection
//!    (`fenced --max-session-in-flight`, default 1,024). It keeps reading past the cap, so
//!    that the client's answers to its pings are still heard, and answers each request
//!    past it at once with a `SessionError` of code RESOURCE_EXHAUSTED (`error_code`
//!    `exhausted`), which changed nothing: a client keeps its requests in flight under
//!    the cap, or sends a refused one again once an answer has come.
//! 7. A new connection has the server's handshake timeout (`fenced
//!    --handshake-timeout-ms`, default 10 s), counted from its accept, to finish its TLS
//!    handshake and send its hello, or it is closed. A connection past the server's
//!    connection limit (`fenced --max-connections`) is closed at once, before any hello.

use bytes::Bytes;
use futures::{SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The first frame of each side: the protocol and its version.
pub const HELLO: &[u8] = b"fenced.v1.Session";

/// How the server's answer to a wrong first frame starts (the rest says what it expected).
pub const REFUSED: &[u8] = b"refused: ";

/// The keepalive frame: empty (an empty `SessionRequest` would mean nothing anyway).
pub const PING: &[u8] = b"";

/// The longest frame either side may send. Requests are a few hundred bytes (names and
/// holders are capped at 256 bytes each); this leaves room without letting a peer make the
/// other side buffer megabytes.
pub const MAX_FRAME_BYTES: usize = 64 * 1024;

/// The codec of both directions: 4-byte big-endian length, then the frame.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .length_field_length(4)
        .max_frame_length(MAX_FRAME_BYTES)
        .new_codec()
}

/// The items of `primary` and of `secondary` as they come, ending when `primary` ends.
///
/// Why: each side of a connection writes its messages (`primary`) and its keepalive
/// frames (`secondary`) to one socket, and the socket's writing half must close when the
/// messages end, whatever the keepalive frames still could do.
pub fn until_primary_ends<T>(
    primary: impl Stream<Item = T>,
    secondary: impl Stream<Item = T>,
) -> impl Stream<Item = T> {
    let primary = primary
        .map(Some)
        .chain(futures::stream::once(async { None }));
    futures::stream::select(primary, secondary.map(Some))
        .take_while(|item| futures::future::ready(item.is_some()))
        .filter_map(futures::future::ready)
}

/// Why [`connect`] could not open a framed session.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection failed.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// `TCP_NODELAY` could not be set.
    #[error("cannot set TCP_NODELAY: {0}")]
    NoDelay(std::io::Error),
    /// The hello could not be sent.
    #[error("cannot send the hello: {0}")]
    SendHello(std::io::Error),
    /// The server answered the hello with something else (normally its [`REFUSED`] frame).
    #[error("the server refused the hello: {0}")]
    Refused(String),
    /// Reading the server's hello failed.
    #[error("no hello back: {0}")]
    NoHelloBack(std::io::Error),
    /// The server closed the connection instead of answering the hello.
    #[error("no hello back: the connection was closed")]
    Closed,
}

/// Connects to a framed `Session` listener at `addr` (`host:port`) over plain TCP and
/// exchanges hellos: the connection, ready for `SessionRequest` frames.
pub async fn connect(addr: &str) -> Result<Framed<TcpStream, LengthDelimitedCodec>, ConnectError> {
    hello(connect_tcp(addr).await?).await
}

/// Opens the TCP connection to a framed `Session` listener at `addr` (`host:port`), with
/// `TCP_NODELAY`: the transport under the hello, or under a TLS handshake first.
pub async fn connect_tcp(addr: &str) -> Result<TcpStream, ConnectError> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(ConnectError::Connect)?;
    // One small message per request, answered at once: Nagle would only add delay.
    stream.set_nodelay(true).map_err(ConnectError::NoDelay)?;
    Ok(stream)
}

/// Exchanges hellos on an open connection to a framed `Session` listener (plain TCP, or
/// TLS after its handshake): the connection, ready for `SessionRequest` frames.
pub async fn hello<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
) -> Result<Framed<S, LengthDelimitedCodec>, ConnectError> {
    let mut frames = Framed::new(stream, codec());
    frames
        .send(Bytes::from_static(HELLO))
        .await
        .map_err(ConnectError::SendHello)?;
    match frames.next().await {
        Some(Ok(hello)) if hello.as_ref() == HELLO => Ok(frames),
        Some(Ok(other)) => Err(ConnectError::Refused(
            String::from_utf8_lossy(&other).into_owned(),
        )),
        Some(Err(error)) => Err(ConnectError::NoHelloBack(error)),
        None => Err(ConnectError::Closed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_merged_stream_ends_with_the_primary_even_if_the_secondary_never_does() {
        let primary = futures::stream::iter([1, 2, 3]);
        let (_keep_open, never_ends) = tokio::sync::mpsc::channel::<i32>(1);
        let merged: Vec<i32> = until_primary_ends(
            primary,
            tokio_stream::wrappers::ReceiverStream::new(never_ends),
        )
        .collect()
        .await;
        assert_eq!(merged, [1, 2, 3]);
    }

    #[tokio::test]
    async fn secondary_items_come_through_while_the_primary_runs() {
        let (primary_in, primary) = tokio::sync::mpsc::channel::<i32>(4);
        let (secondary_in, secondary) = tokio::sync::mpsc::channel::<i32>(4);
        let merged = until_primary_ends(
            tokio_stream::wrappers::ReceiverStream::new(primary),
            tokio_stream::wrappers::ReceiverStream::new(secondary),
        );
        secondary_in.send(10).await.unwrap();
        primary_in.send(1).await.unwrap();
        // The primary is still open: both items must come without waiting for its end.
        let mut merged: Vec<i32> = merged.take(2).collect().await;
        merged.sort_unstable();
        assert_eq!(merged, [1, 10]);
    }
}
