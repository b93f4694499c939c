//! [`incoming`]: the gRPC listener's connections, handed to tonic only once they are
//! HTTP/2 connections: accepted under the listener's [`ConnectionLimit`], through the TLS
//! handshake when the server serves TLS, and with the client's HTTP/2 preface read, all
//! within the handshake timeout.
//!
//! Why not tonic's own accept and TLS: tonic and hyper give a connection that never says
//! anything no deadline (neither the TLS handshake by default nor the HTTP/2 preface, and
//! HTTP/2 keepalive PINGs begin only after it), so an idle socket would hold a connection
//! slot for ever. Handshakes run as tasks of their own, so a slow one holds up no other.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::auth::CertificateIdentity;

use crate::admission::{accept, ConnectionLimit, Slot};
use crate::throttle::Throttle;

/// What every HTTP/2 client sends first (RFC 9113, section 3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The connections of `listener` that finished their handshake (TLS with `tls`, then the
/// HTTP/2 preface) within `handshake_timeout`, at most `limit` of them open at once, for
/// tonic's `serve_with_incoming_shutdown`. Never ends and never fails: the listener's
/// errors are logged and ridden out, and connections that fail their handshake are closed
/// (with a warning, at most one a second). Dropping it closes the listener and every
/// connection still in its handshake.
pub fn incoming(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limit: ConnectionLimit,
    handshake_timeout: Duration,
) -> impl Stream<Item = Result<GrpcConnection, Infallible>> {
    let accepting = Accepting {
        listener,
        tls,
        limit,
        handshake_timeout,
        handshakes: JoinSet::new(),
        failures: Throttle::new(Duration::from_secs(1)),
    };
    futures::stream::unfold(accepting, |mut accepting| async move {
        let connection = accepting.next().await;
        Some((Ok(connection), accepting))
    })
}

/// The accept loop's state.
struct Accepting {
    /// The gRPC listener.
    listener: TcpListener,
    /// The TLS acceptor (announcing HTTP/2 by ALPN), if the server serves TLS.
    tls: Option<TlsAcceptor>,
    /// The listener's connection slots.
    limit: ConnectionLimit,
    /// How long a connection has, from its accept, to finish its handshake.
    handshake_timeout: Duration,
    /// The connections in their handshake.
    handshakes: JoinSet<Result<GrpcConnection, HandshakeFailed>>,
    /// Limits the warnings about failed handshakes to one a second.
    failures: Throttle,
}

impl Accepting {
    /// The next connection that finished its handshake.
    async fn next(&mut self) -> GrpcConnection {
        loop {
            tokio::select! {
                (stream, peer) = accept(&self.listener, "gRPC") => {
                    // Past the limit the connection is dropped here, which closes it.
                    if let Some(slot) = self.limit.admit(peer) {
                        let tls = self.tls.clone();
                        self.handshakes
                            .spawn(handshake(stream, peer, slot, tls, self.handshake_timeout));
                    }
                }
                Some(done) = self.handshakes.join_next(), if !self.handshakes.is_empty() => {
                    match done {
                        Ok(Ok(connection)) => return connection,
                        Ok(Err(failed)) => {
                            // A client certificate from another CA ends here: the audit
                            // log records every refused TLS handshake.
                            if let HandshakeError::Tls(_) = &failed.reason {
                                crate::audit::tls_refused(failed.peer, &failed.reason.to_string());
                            }
                            if let Some(also_failed) = self.failures.admit(std::time::Instant::now()) {
                                tracing::warn!(
                                    peer = %failed.peer,
                                    error = %failed.reason,
                                    also_failed,
                                    "gRPC connection closed before it was served"
                                );
                            }
                        }
                        Err(error) => {
                            tracing::error!(%error, "a gRPC connection's handshake task failed");
                        }
                    }
                }
            }
        }
    }
}

/// A connection closed in its handshake, and why.
#[derive(Debug)]
struct HandshakeFailed {
    /// The client's address.
    peer: SocketAddr,
    /// Why.
    reason: HandshakeError,
}

/// Why a connection's handshake failed.
#[derive(Debug, thiserror::Error)]
enum HandshakeError {
    /// The handshake did not finish within the handshake timeout.
    #[error("no TLS handshake and HTTP/2 preface within {0:?} (--handshake-timeout-ms)")]
    Timeout(Duration),
    /// The TLS handshake failed (a plaintext client on a TLS listener, say).
    #[error("TLS handshake failed: {0}")]
    Tls(io::Error),
    /// The connection failed or closed before the preface was complete.
    #[error("closed before the HTTP/2 preface: {0}")]
    Closed(io::Error),
    /// The first bytes are not the HTTP/2 preface (an HTTP/1 request, say).
    #[error("not an HTTP/2 connection: it began {0:?}")]
    NotHttp2(String),
}

/// Runs the TLS handshake (if any) and reads the HTTP/2 preface, within `timeout`.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    tls: Option<TlsAcceptor>,
    timeout: Duration,
) -> Result<GrpcConnection, HandshakeFailed> {
    let local = stream.local_addr().ok();
    let handshake = async {
        let mut transport = match tls {
            None => Transport::Plain(stream),
            Some(acceptor) => Transport::Tls(Box::new(
                acceptor.accept(stream).await.map_err(HandshakeError::Tls)?,
            )),
        };
        let mut preface = [0u8; PREFACE.len()];
        transport
            .read_exact(&mut preface)
            .await
            .map_err(HandshakeError::Closed)?;
        if &preface != PREFACE {
            return Err(HandshakeError::NotHttp2(
                String::from_utf8_lossy(&preface).into_owned(),
            ));
        }
        Ok(transport)
    };
    let transport = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(transport)) => transport,
        Ok(Err(reason)) => return Err(HandshakeFailed { peer, reason }),
        Err(_elapsed) => {
            return Err(HandshakeFailed {
                peer,
                reason: HandshakeError::Timeout(timeout),
            })
        }
    };
    let certificate = match &transport {
        Transport::Plain(_) => None,
        Transport::Tls(tls) => tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|leaf| CertificateIdentity::of(leaf.as_ref())),
    };
    Ok(GrpcConnection {
        transport,
        preface_replayed: 0,
        info: ConnectionInfo {
            tcp: TcpConnectInfo {
                local_addr: local,
                remote_addr: Some(peer),
            },
            certificate,
        },
        _slot: slot,
    })
}

/// A gRPC connection past its handshake, holding its slot under the listener's limit
/// until it is dropped (closed). Reads give hyper the HTTP/2 preface that the handshake
/// read, then the rest of the connection.
pub struct GrpcConnection {
    /// The connection.
    transport: Transport,
    /// How much of the preface hyper has read back so far.
    preface_replayed: usize,
    /// The addresses and the client certificate's identity, for tonic's request
    /// extensions.
    info: ConnectionInfo,
    /// The connection's place under the listener's limit.
    _slot: Slot,
}

/// Plain TCP, or TLS over it.
enum Transport {
    /// Plaintext.
    Plain(TcpStream),
    /// TLS (boxed: its buffers are far larger than a `TcpStream`).
    Tls(Box<TlsStream<TcpStream>>),
}

/// What every request on a connection knows about it (tonic puts it in the request's
/// extensions).
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The addresses.
    pub tcp: TcpConnectInfo,
    /// The identity the client's certificate gives, if it sent one (a CA the server
    /// trusts signed it, or the handshake failed).
    pub certificate: Option<CertificateIdentity>,
}

impl Connected for GrpcConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

impl AsyncRead for GrpcConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.preface_replayed < PREFACE.len() {
            let rest = &PREFACE[this.preface_replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.preface_replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.transport).poll_read(cx, buf)
    }
}

impl AsyncWrite for GrpcConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().transport).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().transport).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.transport.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().transport).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().transport).poll_shutdown(cx)
    }
}

impl AsyncRead for Transport {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Transport::Plain(stream) => stream.is_write_vectored(),
            Transport::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Transport::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
