//! The upgrade control socket's wire: short text lines, and one message that carries the
//! listening sockets as `SCM_RIGHTS` ancillary data.
//!
//! Lines (each ends with `\n`):
//! - new -> old: `TAKEOVER 1` (asks for the hand-off, protocol version 1), later `STARTED`
//!   (the new process accepts on the sockets it was given).
//! - old -> new: `LISTENERS <door>...` with one descriptor per door, in that order; then
//!   `RESERVE <n> <backend>` per backend and `RESERVED` (the initial shares are all there);
//!   after `STARTED`, `RESERVE` again each time the old process's share shrinks. End of file
//!   means the old process is gone: its server connections are closed with it.
//!
//! Invariants: no line is longer than [`MAX_LINE`]; descriptors arrive close-on-exec and are
//! owned (closed on drop) from the moment they are received.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

use super::UpgradeError;

/// Longest line either side sends (backend names are short config names).
pub(crate) const MAX_LINE: usize = 4096;

/// Most descriptors in one hand-off: the PostgreSQL door, the MySQL door, the admin listener.
const MAX_FDS: usize = 3;

/// One side of the control connection: the stream and what was read past the last line.
pub(crate) struct Wire {
    pub(crate) stream: UnixStream,
    buf: Vec<u8>,
}

impl Wire {
    pub(crate) fn new(stream: UnixStream) -> Wire {
        Wire {
            stream,
            buf: Vec::new(),
        }
    }

    pub(crate) async fn send_line(&mut self, line: &str) -> Result<(), UpgradeError> {
        let mut out = String::with_capacity(line.len().saturating_add(1));
        out.push_str(line);
        out.push('\n');
        self.stream.write_all(out.as_bytes()).await?;
        Ok(())
    }

    /// Sends `line` with `fds` attached (the receiver gets its own copies).
    pub(crate) async fn send_fds(
        &mut self,
        line: &str,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), UpgradeError> {
        let data = format!("{line}\n");
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if fds.len() > MAX_FDS || !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(UpgradeError::Protocol(format!(
                "cannot pass {} descriptors",
                fds.len()
            )));
        }
        loop {
            self.stream.writable().await?;
            let sent = self.stream.try_io(Interest::WRITABLE, || {
                sendmsg(
                    self.stream.as_fd(),
                    &[IoSlice::new(data.as_bytes())],
                    &mut control,
                    SendFlags::NOSIGNAL,
                )
                .map_err(std::io::Error::from)
            });
            match sent {
                // The descriptors travel with the first byte; the rest of the line, if the
                // socket took only part of it, goes as plain bytes.
                Ok(n) => {
                    let rest = data.as_bytes().get(n..).unwrap_or_default();
                    self.stream.write_all(rest).await?;
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads the next line, collecting descriptors that come with its bytes. `Ok(None)` at the
    /// end of the stream.
    pub(crate) async fn read_line_with_fds(
        &mut self,
        fds: &mut Vec<OwnedFd>,
    ) -> Result<Option<String>, UpgradeError> {
        loop {
            if let Some(line) = self.take_line()? {
                return Ok(Some(line));
            }
            let mut chunk = [0u8; 1024];
            self.stream.readable().await?;
            let got = self.stream.try_io(Interest::READABLE, || {
                let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
                let mut control = RecvAncillaryBuffer::new(&mut space);
                let msg = recvmsg(
                    self.stream.as_fd(),
                    &mut [IoSliceMut::new(&mut chunk)],
                    &mut control,
                    RecvFlags::CMSG_CLOEXEC,
                )
                .map_err(std::io::Error::from)?;
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = m {
                        fds.extend(received);
                    }
                }
                Ok(msg.bytes)
            });
            match got {
                Ok(0) => return Ok(None),
                Ok(n) => self
                    .buf
                    .extend_from_slice(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Reads the next line (no descriptors expected; any that come are closed).
    pub(crate) async fn read_line(&mut self) -> Result<Option<String>, UpgradeError> {
        loop {
            if let Some(line) = self.take_line()? {
                return Ok(Some(line));
            }
            let mut chunk = [0u8; 1024];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.buf
                .extend_from_slice(chunk.get(..n).unwrap_or_default());
        }
    }

    fn take_line(&mut self) -> Result<Option<String>, UpgradeError> {
        match self.buf.iter().position(|b| *b == b'\n') {
            Some(end) => {
                let line: Vec<u8> = self.buf.drain(..=end).collect();
                let text = String::from_utf8(line)
                    .map_err(|_| UpgradeError::Protocol("a line is not UTF-8".into()))?;
                Ok(Some(text.trim_end_matches('\n').to_owned()))
            }
            None if self.buf.len() > MAX_LINE => {
                Err(UpgradeError::Protocol("a line is too long".into()))
            }
            None => Ok(None),
        }
    }
}

/// `RESERVE <n> <backend>`.
pub(crate) fn reserve_line(backend: &str, n: usize) -> String {
    format!("RESERVE {n} {backend}")
}

/// The backend and count of a `RESERVE` line, `None` for any other line.
pub(crate) fn parse_reserve(line: &str) -> Option<(String, usize)> {
    let rest = line.strip_prefix("RESERVE ")?;
    let (n, backend) = rest.split_once(' ')?;
    Some((backend.to_owned(), n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserve_lines_round_trip() {
        let line = reserve_line("pg main", 7);
        assert_eq!(parse_reserve(&line), Some(("pg main".to_owned(), 7)));
        assert_eq!(parse_reserve("RESERVE x pg"), None);
        assert_eq!(parse_reserve("RESERVED"), None);
    }

    #[tokio::test]
    async fn descriptors_cross_with_their_line() {
        let (a, b) = UnixStream::pair().expect("pair");
        let (mut a, mut b) = (Wire::new(a), Wire::new(b));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        a.send_fds("LISTENERS postgres", &[listener.as_fd()])
            .await
            .expect("send");
        a.send_line("RESERVED").await.expect("send");
        let mut fds = Vec::new();
        let first = b.read_line_with_fds(&mut fds).await.expect("read");
        assert_eq!(first.as_deref(), Some("LISTENERS postgres"));
        assert_eq!(fds.len(), 1);
        let got = std::net::TcpListener::from(fds.pop().expect("fd"));
        assert_eq!(got.local_addr().expect("addr"), addr);
        assert_eq!(
            b.read_line().await.expect("read").as_deref(),
            Some("RESERVED")
        );
        drop(a);
        assert_eq!(b.read_line().await.expect("read"), None);
    }
}
