//! A throwaway etcd (Debian's `etcd`, v3.4) on free loopback ports with a tempdir data dir,
//! killed on drop; and a client to write keys the way other programs (Patroni) do.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use poolguard_fleet::etcd::{Etcd, Put};

use crate::admin::wait_for;
use crate::free_port;

pub struct EtcdServer {
    child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
}

impl EtcdServer {
    /// Starts etcd and waits until it answers a read.
    pub fn start() -> EtcdServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, peer) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{port}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = std::fs::File::create(dir.path().join("etcd.log")).expect("etcd log");
        let child = Command::new("etcd")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .arg("--initial-cluster")
            .arg(format!("default={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start etcd (scripts/setup installs etcd-server)");
        let server = EtcdServer { child, port, dir };
        let c = server.client();
        wait_for(Duration::from_secs(30), "etcd to answer", || {
            block_on(c.range("/", true)).ok()
        });
        server
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn client(&self) -> Etcd {
        Etcd::new(&[self.endpoint()], Duration::from_secs(5))
    }

    /// Writes `key` = `value` (no lease).
    pub fn put(&self, key: &str, value: &str) {
        let put = Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            lease: 0,
        };
        block_on(self.client().put(&put)).expect("etcd put");
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a future to completion on a small runtime of its own (tests are mostly synchronous).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}
