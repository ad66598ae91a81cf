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

/// What a port speaks inside TLS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Door {
    /// The gRPC port: HTTP/2, peers recognised by their certificates.
    Grpc,
    /// The HTTP door (`--api`): HTTP/1.1, no client certificates.
    Https,
}

/// Accepts on `listener` until `stop`, handshaking with whatever
/// configuration `tls` holds at that moment.
pub fn incoming(listener: TcpListener, tls: TlsReloader, stop: watch::Receiver<bool>) -> TlsIncoming {
    ReceiverStream::new(accept_loop(listener, tls, stop, Door::Grpc))
}

fn accept_loop(
    listener: TcpListener,
    tls: TlsReloader,
    mut stop: watch::Receiver<bool>,
    door: Door,
) -> mpsc::Receiver<Result<TlsConn, io::Error>> {
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
                if let Some(conn) = handshake(tcp, remote, &state, door).await {
                    let _ = tx.send(Ok(conn)).await;
                }
            });
        }
    });
    rx
}

/// One connection's handshake; `None` when it is dropped.
async fn handshake(tcp: TcpStream, remote: SocketAddr, state: &Current, door: Door) -> Option<TlsConn> {
    let mut first = [0u8; 3];
    let peeked = tokio::time::timeout(HANDSHAKE_TIMEOUT, tcp.peek(&mut first)).await;
    let config = match door {
        // A TLS ClientHello starts 0x16; a plaintext HTTP/2 client starts
        // with its preface, "PRI * HTTP/2.0".
        Door::Grpc if matches!(peeked, Ok(Ok(3))) && &first == b"PRI" => {
            let info = ConnInfo {
                remote: Some(remote),
                peer: false,
                plaintext: true,
            };
            return Some(TlsConn {
                inner: Io::Plain(tcp),
                info,
            });
        }
        Door::Grpc => state.server.clone(),
        Door::Https if matches!(peeked, Ok(Ok(n)) if n > 0) && first[0] != TLS_HANDSHAKE => {
            refuse_plaintext(tcp).await;
            return None;
        }
        Door::Https => state.https.clone(),
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "TLS handshake failed");
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote, "TLS handshake timed out");
            return None;
        }
    };
    let peer = door == Door::Grpc && state.is_peer(stream.get_ref().1.peer_certificates());
    Some(TlsConn {
        inner: Io::Tls(Box::new(stream)),
        info: ConnInfo {
            remote: Some(remote),
            peer,
            plaintext: false,
        },
    })
}

/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// The problem document answering plain HTTP at the HTTPS door.
const PLAINTEXT_REFUSED: &str = "{\"type\":\"/v1/problems/invalid-request\",\"title\":\"Bad Request\",\
    \"status\":400,\"detail\":\"this port serves HTTPS only: use https://\",\
    \"code\":\"FAILED_PRECONDITION\"}";

/// Tells a plain-HTTP client that the door speaks HTTPS only (as nginx's
/// 400 does), rather than leaving it with a broken connection. Its request
/// is read first (some of it): closing with unread bytes would reset the
/// connection before the answer reached it.
async fn refuse_plaintext(mut tcp: TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut sink = [0u8; 8192];
    let reply = async {
        let _ = tcp.read(&mut sink).await;
        let answer = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: application/problem+json\r\n\
             Connection: close\r\nContent-Length: {}\r\n\r\n{PLAINTEXT_REFUSED}",
            PLAINTEXT_REFUSED.len()
        );
        let _ = tcp.write_all(answer.as_bytes()).await;
        let _ = tcp.shutdown().await;
    };
    let _ = tokio::time::timeout(HANDSHAKE_TIMEOUT, reply).await;
}

/// The HTTP door's listener when TLS is on, for `axum::serve`: the same
/// accept loop and certificates (reloaded in place) as the gRPC port, with
/// the door's own TLS configuration ([`super::TlsState::https`]).
pub struct HttpsListener {
    rx: mpsc::Receiver<Result<TlsConn, io::Error>>,
    local: SocketAddr,
}

impl HttpsListener {
    pub fn new(listener: TcpListener, tls: TlsReloader, stop: watch::Receiver<bool>) -> io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            rx: accept_loop(listener, tls, stop, Door::Https),
            local,
        })
    }
}

impl axum::serve::Listener for HttpsListener {
    type Io = TlsConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (TlsConn, SocketAddr) {
        loop {
            match self.rx.recv().await {
                Some(Ok(conn)) => {
                    let remote = conn.info.remote.unwrap_or(self.local);
                    return (conn, remote);
                }
                Some(Err(_)) => {}
                // The accept loop stopped with the node: nothing more comes,
                // and the server's graceful shutdown ends it.
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// The accept loop's handle on the current configuration.
pub(super) type Current = Arc<super::TlsState>;
