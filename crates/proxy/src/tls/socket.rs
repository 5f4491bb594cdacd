//! Where a server connection goes: a TCP address, or a Unix-domain socket for a database on
//! the same machine (`hosts = ["/var/run/postgresql/.s.PGSQL.5432"]`,
//! `["/run/mysqld/mysqld.sock"]`), which skips the loopback TCP stack on every message.
//!
//! Both doors open their server sockets here. A host written as an absolute path is a Unix
//! socket; anything else is `host:port`. TLS is never used over a Unix socket, whatever
//! `server_tls` says (as libpq ignores `sslmode` there): the traffic does not leave the
//! machine, and PostgreSQL refuses TLS on it.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use tokio::net::{TcpStream, UnixStream};

/// The server a connection reached: its TCP peer, or the socket path it was opened on.
/// What a cancel request or a side connection goes back to, and how the logs name a server.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAddr {
    Tcp(SocketAddr),
    Unix(Arc<Path>),
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Tcp(a) => a.fmt(f),
            ServerAddr::Unix(p) => p.display().fmt(f),
        }
    }
}

/// A configured host that names a Unix socket (an absolute path).
pub fn is_unix_host(host: &str) -> bool {
    host.starts_with('/')
}

/// A freshly opened server socket, before any TLS.
pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Opens a socket to a configured host (`host:port` or a socket path), Nagle off on TCP.
pub async fn connect(host: &str) -> io::Result<(Socket, ServerAddr)> {
    if is_unix_host(host) {
        let stream = UnixStream::connect(host).await?;
        Ok((
            Socket::Unix(stream),
            ServerAddr::Unix(Arc::from(Path::new(host))),
        ))
    } else {
        let stream = TcpStream::connect(host).await?;
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        Ok((Socket::Tcp(stream), ServerAddr::Tcp(peer)))
    }
}

/// Opens a socket back to a server a connection reached (a cancel request's way).
pub async fn reconnect(addr: &ServerAddr) -> io::Result<Socket> {
    match addr {
        ServerAddr::Tcp(a) => {
            let stream = TcpStream::connect(a).await?;
            stream.set_nodelay(true)?;
            Ok(Socket::Tcp(stream))
        }
        ServerAddr::Unix(p) => Ok(Socket::Unix(UnixStream::connect(p).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_path_is_a_unix_socket_and_anything_else_tcp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let host = path.to_str().unwrap();
        assert!(is_unix_host(host) && !is_unix_host("127.0.0.1:5432"));
        let (socket, addr) = connect(host).await.unwrap();
        assert!(matches!(socket, Socket::Unix(_)));
        assert_eq!(addr.to_string(), host);
        listener.accept().await.unwrap();
        assert!(matches!(reconnect(&addr).await.unwrap(), Socket::Unix(_)));

        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = tcp.local_addr().unwrap().to_string();
        let (socket, addr) = connect(&at).await.unwrap();
        assert!(matches!(socket, Socket::Tcp(_)));
        assert_eq!(addr, ServerAddr::Tcp(tcp.local_addr().unwrap()));
        assert!(connect("/nonexistent/poolguard.sock").await.is_err());
    }
}
