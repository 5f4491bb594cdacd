//! A process's file descriptors as /proc shows them: how many, and which of them hold the
//! accepted side of a TCP connection to a given local port (a front door's clients), with the
//! descriptor number and the peer's port, so a test can tell which client holds which number.

use std::collections::HashMap;

/// How many descriptors process `pid` has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// One descriptor of the process holding an established connection on the local port asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DoorSocket {
    pub fd: u32,
    /// The client's port: `TcpStream::local_addr` on the client's side.
    pub peer_port: u16,
}

/// Every descriptor of process `pid` that holds an established TCP connection whose local port
/// is `port`. Two descriptors of one socket (a `dup`) are two entries.
pub fn door_sockets(pid: u32, port: u16) -> Vec<DoorSocket> {
    // Socket inode -> peer port, from the process's network namespace's tables.
    let mut peers = HashMap::new();
    for table in ["tcp", "tcp6"] {
        let text = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local rem st tx:rx tr:when retrnsmt uid timeout inode ...; st 01 = ESTABLISHED
            let (Some(local), Some(remote), Some(&"01"), Some(inode)) =
                (f.get(1), f.get(2), f.get(3), f.get(9))
            else {
                continue;
            };
            if hex_port(local) == Some(port) {
                if let Some(p) = hex_port(remote) {
                    peers.insert(format!("socket:[{inode}]"), p);
                }
            }
        }
    }
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut found: Vec<DoorSocket> = dir
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let peer_port = *peers.get(target.to_str()?)?;
            let fd = e.file_name().to_str()?.parse().ok()?;
            Some(DoorSocket { fd, peer_port })
        })
        .collect();
    found.sort_by_key(|s| s.fd);
    found
}

/// The port of a /proc/net/tcp address ("0100007F:1F90").
fn hex_port(addr: &str) -> Option<u16> {
    u16::from_str_radix(addr.rsplit_once(':')?.1, 16).ok()
}
