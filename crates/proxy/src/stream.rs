//! A client's connection, plaintext or TLS: the one type every session, login and console
//! reads from and writes to.
//!
//! Invariants:
//! - the plaintext path costs an enum match and nothing else (the TLS state, over a kilobyte,
//!   is boxed, so an idle plaintext client's session does not grow);
//! - every write is flushed through TLS before it counts as done ([`ClientStream::write_all`]):
//!   rustls may keep records it could not send yet, and a reply that stayed there would leave
//!   the client waiting. There is deliberately no `AsyncWrite` impl, so no write can go around
//!   this;
//! - "the client has something for us" means readable socket *or* plaintext rustls already
//!   decrypted ([`ClientStream::poll_readable`]), so an idle TLS client with buffered bytes is
//!   never left waiting for a socket event that will not come.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// A client connection.
pub enum ClientStream {
    Plain(TcpStream),
    Tls(Box<TlsClient>),
    /// A plaintext client resting in a [`crate::lot::Lot`]: the socket, out of tokio's reactor
    /// (`None` only if leaving the reactor failed, which closed it). Every I/O on it fails
    /// (a session never does any while resting); [`ClientStream::wake_up`] turns it back.
    Resting(Option<std::net::TcpStream>),
}

/// A client on TLS, with the channel binding data of the certificate it was served.
pub struct TlsClient {
    stream: TlsStream<TcpStream>,
    end_point: Arc<[u8]>,
}

impl ClientStream {
    pub(crate) fn tls(stream: TlsStream<TcpStream>, end_point: Arc<[u8]>) -> Self {
        ClientStream::Tls(Box::new(TlsClient { stream, end_point }))
    }

    /// The client's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match self {
            ClientStream::Plain(s) => s.peer_addr(),
            ClientStream::Tls(t) => t.stream.get_ref().0.peer_addr(),
            ClientStream::Resting(Some(s)) => s.peer_addr(),
            ClientStream::Resting(None) => Err(resting()),
        }
    }

    /// Takes a plaintext client out of tokio's reactor, to rest in a lot: its descriptor, or
    /// why not (TLS keeps state beside the socket and stays in a task). A failure to leave the
    /// reactor closed the socket (tokio's conversion consumes it): the session must end.
    pub(crate) fn rest(&mut self) -> Result<RawFd, RestRefused> {
        if !matches!(self, ClientStream::Plain(_)) {
            return Err(RestRefused::Kept);
        }
        let ClientStream::Plain(tcp) = std::mem::replace(self, ClientStream::Resting(None)) else {
            return Err(RestRefused::Kept);
        };
        match tcp.into_std() {
            Ok(s) => {
                let fd = s.as_raw_fd();
                *self = ClientStream::Resting(Some(s));
                Ok(fd)
            }
            Err(e) => Err(RestRefused::Lost(e)),
        }
    }

    /// Back into tokio's reactor after resting. An error closed the socket (as for
    /// [`ClientStream::rest`]): the session must end.
    pub(crate) fn wake_up(&mut self) -> io::Result<()> {
        match std::mem::replace(self, ClientStream::Resting(None)) {
            ClientStream::Resting(Some(s)) => {
                *self = ClientStream::Plain(TcpStream::from_std(s)?);
                Ok(())
            }
            ClientStream::Resting(None) => Err(resting()),
            other => {
                *self = other;
                Ok(())
            }
        }
    }

    /// The socket's descriptor (KILL_CLIENT's, see [`crate::clients`]); `None` only resting
    /// without a socket (leaving the reactor failed and closed it).
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            ClientStream::Plain(s) => Some(s.as_fd()),
            ClientStream::Tls(t) => Some(t.stream.get_ref().0.as_fd()),
            ClientStream::Resting(s) => s.as_ref().map(AsFd::as_fd),
        }
    }

    /// Resting in a lot (see [`ClientStream::Resting`]).
    pub fn is_resting(&self) -> bool {
        matches!(self, ClientStream::Resting(_))
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, ClientStream::Tls(_))
    }

    /// `tls-server-end-point` channel binding data, on TLS.
    pub fn channel_binding(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Plain(_) | ClientStream::Resting(_) => None,
            ClientStream::Tls(t) => Some(&t.end_point),
        }
    }

    /// The ALPN protocol the client and poolguard agreed on, on TLS.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match self {
            ClientStream::Plain(_) | ClientStream::Resting(_) => None,
            ClientStream::Tls(t) => t.stream.get_ref().1.alpn_protocol(),
        }
    }

    /// Writes all of `buf` and, on TLS, flushes it to the socket.
    pub async fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.write_all(buf).await,
            ClientStream::Tls(t) => {
                t.stream.write_all(buf).await?;
                t.stream.flush().await
            }
            ClientStream::Resting(_) => Err(resting()),
        }
    }

    /// Closes the write side (TLS: after a close_notify).
    pub async fn shutdown(&mut self) -> io::Result<()> {
        match self {
            ClientStream::Plain(s) => s.shutdown().await,
            ClientStream::Tls(t) => t.stream.shutdown().await,
            ClientStream::Resting(_) => Err(resting()),
        }
    }

    /// Writes what fits without waiting, for the panic path ([`crate::contain`]), where
    /// nothing can be awaited.
    pub fn write_now(&mut self, buf: &[u8]) {
        match self {
            ClientStream::Plain(s) => {
                let _ = s.try_write(buf);
            }
            ClientStream::Tls(t) => {
                let (tcp, conn) = t.stream.get_mut();
                if conn.writer().write_all(buf).is_err() {
                    return;
                }
                while conn.wants_write() {
                    match conn.write_tls(&mut TryWrite(tcp)) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
            }
            ClientStream::Resting(_) => {}
        }
    }

    /// Whether a read would not block on the socket: data (or a close, or an error) is there,
    /// or, on TLS, already decrypted and buffered in rustls. Pending: this task is woken when
    /// the socket becomes readable (tokio's one reader slot per socket, as a read uses: only
    /// one task waits on it at a time, and a parked session is that task).
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let tcp = match self {
            ClientStream::Plain(s) => &*s,
            ClientStream::Tls(t) => {
                let (tcp, conn) = t.stream.get_mut();
                // Processes records already received: plaintext, a close_notify or an error
                // found there is for the reader now, not after the next socket event.
                match conn.process_new_packets() {
                    Ok(io) if io.plaintext_bytes_to_read() == 0 && !io.peer_has_closed() => &*tcp,
                    _ => return Poll::Ready(()),
                }
            }
            // Ready: the read that follows fails.
            ClientStream::Resting(_) => return Poll::Ready(()),
        };
        // An error is readiness too: the read that follows sees it.
        tcp.poll_read_ready(cx).map(|_| ())
    }
}

/// `std::io::Write` over a tokio socket without waiting (rustls writes its records into it);
/// both TLS legs use it (`tls::connect` for server connections).
pub(crate) struct TryWrite<'a>(pub(crate) &'a TcpStream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsyncRead for ClientStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ClientStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ClientStream::Tls(t) => Pin::new(&mut t.stream).poll_read(cx, buf),
            ClientStream::Resting(_) => Poll::Ready(Err(resting())),
        }
    }
}

/// Why a client did not go to rest.
#[derive(Debug)]
pub(crate) enum RestRefused {
    /// It stays in its task, socket and all (TLS).
    Kept,
    /// Leaving tokio's reactor failed, which closed the socket.
    Lost(io::Error),
}

fn resting() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the client is resting in a lot",
    )
}
