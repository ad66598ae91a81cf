//! The node's accept loop when TLS is on: TCP accept, then the TLS
//! handshake in a task of its own (a slow or silent client must not hold up
//! the next accept), then the connection goes to tonic with what the
//! handshake learned about its caller.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

use super::reload::TlsReloader;

/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What tonic puts in every request's extensions for a connection accepted
/// here (read by [`crate::auth`]).
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub remote: Option<SocketAddr>,
    /// The connection presented a certificate the cluster CA signed.
    pub peer: bool,
    /// The client spoke plaintext HTTP/2 to this TLS port. Such a
    /// connection is served only so that every call on it can be told why
    /// it is refused, instead of seeing the connection break.
    pub plaintext: bool,
}

/// One accepted connection: TLS, or a plaintext client's (see
/// [`ConnInfo::plaintext`]).
pub struct TlsConn {
    inner: Io,
    info: ConnInfo,
}

enum Io {
    Tls(Box<TlsStream<TcpStream>>),
    Plain(TcpStream),
}

/// Delegates to whichever stream the connection has.
macro_rules! io {
    ($self:ident, $s:ident => $e:expr) => {
        match &mut $self.inner {
            Io::Tls(t) => {
                let $s = Pin::new(t.as_mut());
                $e
            }
            Io::Plain(p) => {
                let $s = Pin::new(p);
                $e
            }
        }
    };
}

impl tonic::transport::server::Connected for TlsConn {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        self.info.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        io!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        io!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        io!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Io::Tls(t) => t.is_write_vectored(),
            Io::Plain(p) => p.is_write_vectored(),
        }
    }
}

/// The stream of handshaken connections, for `serve_with_incoming`.
pub type TlsIncoming = ReceiverStream<Result<TlsConn, io::Error>>;

/// Accepts on `listener` until `stop`, handshaking with whatever
/// configuration `tls` holds at that moment.
pub fn incoming(listener: TcpListener, tls: TlsReloader, mut stop: watch::Receiver<bool>) -> TlsIncoming {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                _ = stop.wait_for(|s| *s) => return,
            };
            let (tcp, remote) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Without TCP_NODELAY small Raft answers wait out Nagle (~40 ms).
            let _ = tcp.set_nodelay(true);
            let state = tls.current();
            let tx = tx.clone();
            tokio::spawn(async move {
                // A TLS ClientHello starts 0x16; a plaintext HTTP/2 client
                // starts with its preface, "PRI * HTTP/2.0".
                let mut first = [0u8; 3];
                let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
                if matches!(peeked, Ok(Ok(3))) && &first == b"PRI" {
                    let info = ConnInfo {
                        remote: Some(remote),
                        peer: false,
                        plaintext: true,
                    };
                    let _ = tx
                        .send(Ok(TlsConn {
                            inner: Io::Plain(tcp),
                            info,
                        }))
                        .await;
                    return;
                }
                let acceptor = tokio_rustls::TlsAcceptor::from(state.server.clone());
                let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%remote, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                };
                let peer = state.is_peer(stream.get_ref().1.peer_certificates());
                let conn = TlsConn {
                    inner: Io::Tls(Box::new(stream)),
                    info: ConnInfo {
                        remote: Some(remote),
                        peer,
                        plaintext: false,
                    },
                };
                let _ = tx.send(Ok(conn)).await;
            });
        }
    });
    ReceiverStream::new(rx)
}

/// The accept loop's handle on the current configuration.
pub(super) type Current = Arc<super::TlsState>;
