//! A throwaway Patroni cluster: Debian's `patroni` daemons, each managing a PostgreSQL data
//! directory in a tempdir (the sandbox's server binaries; Debian 12's are 15), sharing one
//! [`EtcdServer`] (etcd3 DCS) under a scope unique to the test run. PostgreSQL and the REST APIs
//! listen on loopback ports from [`free_port`].
//!
//! Invariants: as root, every daemon runs as the account the sandbox runs PostgreSQL as (the
//! server refuses root) and owns its directory; nothing here waits for a fixed time: readiness
//! is polled from Patroni's REST API and the server itself; dropping the cluster stops every
//! daemon it started (SIGTERM, then SIGKILL and an immediate stop of its postmaster by pid).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::admin::wait_for;
use crate::etcd::EtcdServer;
use crate::{free_port, psql_command_as, run_within, DB, PASSWORD, USER};

/// The superuser's password (the name is `postgres`).
const SUPERUSER_PASSWORD: &str = "patroni-super";

/// One Patroni daemon and the PostgreSQL it manages.
pub struct PatroniNode {
    pub name: String,
    pub pg_port: u16,
    pub api_port: u16,
    dir: PathBuf,
    child: Option<Child>,
    /// Told to stop (SIGTERM): its exit is expected from then on.
    terminated: bool,
}

impl PatroniNode {
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("patroni.log")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// `host:port` of its PostgreSQL, as poolguard's `hosts` and Patroni's `conn_url` name it.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.pg_port)
    }

    /// The HTTP status of `GET path` on its REST API; `None` while it does not answer.
    pub fn api_status(&self, path: &str) -> Option<u16> {
        let mut s = TcpStream::connect(("127.0.0.1", self.api_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        // Read the whole answer: closing before would reset the connection under Patroni.
        let mut answer = Vec::new();
        s.read_to_end(&mut answer).ok()?;
        std::str::from_utf8(answer.get(9..12)?).ok()?.parse().ok()
    }

    /// psql as the superuser on `db` of this node, straight to its PostgreSQL.
    pub fn psql_super(&self, db: &str, sql: &str) -> Output {
        self.psql_as("postgres", SUPERUSER_PASSWORD, db, sql)
    }

    /// psql as the app role on the app database of this node, straight to its PostgreSQL.
    pub fn psql_app(&self, sql: &str) -> Output {
        self.psql_as(USER, PASSWORD, DB, sql)
    }

    fn psql_as(&self, user: &str, password: &str, db: &str, sql: &str) -> Output {
        let mut cmd = psql_command_as(self.pg_port, user, db);
        cmd.arg("-c")
            .arg(sql)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "5");
        run_within(&mut cmd, Duration::from_secs(30))
    }

    /// SIGTERM to the daemon: Patroni stops its PostgreSQL and, on a leader, deletes the leader
    /// key so that a replica takes over at once. Returns when the signal was sent.
    pub fn terminate(&mut self) {
        self.terminated = true;
        if let Some(c) = &self.child {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
    }

    /// Waits up to `limit` for the daemon to exit; whether it did.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let Some(child) = self.child.as_mut() else {
            return true;
        };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                self.child = None;
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Stops the daemon for good: SIGTERM, then SIGKILL, and an immediate shutdown (SIGQUIT to
    /// the pid in postmaster.pid) of a PostgreSQL the killed daemon left behind.
    fn stop(&mut self) {
        self.terminate();
        if self.wait_exit(Duration::from_secs(30)) {
            return;
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let pid = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|t| t.lines().next()?.trim().parse::<u32>().ok());
        if let Some(pid) = pid {
            let _ = Command::new("kill")
                .args(["-QUIT", &pid.to_string()])
                .status();
        }
    }
}

/// Patroni's configuration for one node (YAML; JSON strings are valid YAML scalars).
fn node_config(scope: &str, node: &PatroniNode, etcd: &EtcdServer, bin_dir: &Path) -> String {
    let dir = node.dir.display();
    format!(
        r#"scope: {scope}
name: {name}
namespace: /service/
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: ["{etcd}"]
bootstrap:
  dcs:
    ttl: 20
    loop_wait: 1
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: false
      use_slots: true
      parameters:
        max_connections: 40
        wal_level: replica
        hot_standby: "on"
        max_wal_senders: 5
        max_replication_slots: 5
  initdb:
    - encoding: UTF8
    - locale: C
    - auth-host: scram-sha-256
    - auth-local: trust
  users:
    {USER}:
      password: "{PASSWORD}"
postgresql:
  listen: 127.0.0.1:{pg}
  connect_address: 127.0.0.1:{pg}
  data_dir: {dir}/data
  bin_dir: {bin_dir}
  pgpass: {dir}/pgpass
  authentication:
    superuser:
      username: postgres
      password: "{SUPERUSER_PASSWORD}"
    replication:
      username: replicator
      password: "replicator-secret"
  parameters:
    unix_socket_directories: "{dir}"
    password_encryption: scram-sha-256
  pg_hba:
    - local all all trust
    - host replication replicator 127.0.0.1/32 scram-sha-256
    - host all all 127.0.0.1/32 scram-sha-256
"#,
        name = node.name,
        api = node.api_port,
        etcd = etcd.endpoint(),
        pg = node.pg_port,
        bin_dir = bin_dir.display(),
    )
}

/// Patroni daemons of one scope; stopped on drop.
pub struct PatroniCluster {
    pub scope: String,
    pub nodes: Vec<PatroniNode>,
    _dir: tempfile::TempDir,
}

impl PatroniCluster {
    /// Starts `n` daemons at once (one of them bootstraps, the others clone it) and waits until
    /// one is the leader and every other streams from it.
    pub fn start(etcd: &EtcdServer, n: usize) -> PatroniCluster {
        let bin_dir = poolguard_sandbox::postgres_bin_dir()
            .expect("PostgreSQL server binaries (scripts/setup installs them)");
        let account = poolguard_sandbox::postgres_account().expect("an account for PostgreSQL");
        let dir = tempfile::tempdir().expect("tempdir");
        chown(dir.path(), account);
        let scope = format!(
            "pg-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() % 1_000_000_000)
                .unwrap_or_default()
        );
        let mut nodes = Vec::new();
        for i in 1..=n {
            let node_dir = dir.path().join(format!("node{i}"));
            std::fs::create_dir(&node_dir).expect("node dir");
            chown(&node_dir, account);
            let mut node = PatroniNode {
                name: format!("node{i}"),
                pg_port: free_port(),
                api_port: free_port(),
                dir: node_dir,
                child: None,
                terminated: false,
            };
            let config = node.dir.join("patroni.yml");
            std::fs::write(&config, node_config(&scope, &node, etcd, &bin_dir))
                .expect("patroni config");
            let log = std::fs::File::create(node.log_path()).expect("patroni log");
            let mut cmd = Command::new("patroni");
            cmd.arg(&config)
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .env("LC_ALL", "C.UTF-8")
                .env("HOME", &node.dir)
                .current_dir(&node.dir)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log"))
                .stderr(log);
            if let Some((uid, gid)) = account {
                cmd.uid(uid).gid(gid);
            }
            node.child = Some(
                cmd.spawn()
                    .expect("start patroni (scripts/setup installs patroni)"),
            );
            nodes.push(node);
        }
        let cluster = PatroniCluster {
            scope,
            nodes,
            _dir: dir,
        };
        cluster.wait_settled(n);
        cluster
    }

    /// Waits for a leader and `n - 1` streaming replicas (seen from the leader's
    /// `pg_stat_replication`).
    fn wait_settled(&self, n: usize) {
        let leader = self.wait_leader(None);
        let want = n.saturating_sub(1).to_string();
        wait_for(Duration::from_secs(90), "replicas streaming", || {
            self.check_alive();
            let out = leader.psql_super(
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
            );
            (crate::stdout(&out) == want).then_some(())
        });
        wait_for(
            Duration::from_secs(60),
            "replicas answering /replica",
            || {
                let replicas = self
                    .nodes
                    .iter()
                    .filter(|x| x.api_status("/replica") == Some(200))
                    .count();
                (replicas == n.saturating_sub(1)).then_some(())
            },
        );
    }

    /// Waits for a node other than `not` to answer 200 on `/leader` (Patroni's REST API: the
    /// node holds the leader key and runs as primary); returns it.
    pub fn wait_leader(&self, not: Option<&str>) -> &PatroniNode {
        wait_for(Duration::from_secs(90), "a Patroni leader", || {
            self.check_alive();
            self.nodes
                .iter()
                .filter(|x| Some(x.name.as_str()) != not && !x.terminated)
                .find(|x| x.api_status("/leader") == Some(200))
        })
    }

    /// Panics with the daemons' logs if one that should run (not terminated) has exited.
    fn check_alive(&self) {
        for n in &self.nodes {
            // A daemon that exited is a zombie until reaped, or gone: either way not running.
            let exited = !n.terminated
                && n.child.as_ref().is_some_and(|c| {
                    std::fs::read_to_string(format!("/proc/{}/stat", c.id())).map_or(true, |stat| {
                        stat.rsplit(')').next().is_some_and(|r| r.starts_with(" Z"))
                    })
                });
            assert!(!exited, "patroni {} exited:\n{}", n.name, self.logs());
        }
    }

    pub fn node_mut(&mut self, name: &str) -> &mut PatroniNode {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("a node of this name")
    }

    /// Creates the app database (owned by the app role Patroni's bootstrap made) with table
    /// `t (id, note)` on the leader, and waits until every replica has replayed it.
    pub fn create_app_table(&self) {
        let leader = self.wait_leader(None);
        let out = leader.psql_super("postgres", &format!("CREATE DATABASE {DB} OWNER {USER}"));
        assert!(
            out.status.success(),
            "create database: {}",
            crate::stderr(&out)
        );
        let out = leader.psql_app("CREATE TABLE t (id bigserial PRIMARY KEY, note text NOT NULL)");
        assert!(
            out.status.success(),
            "create table: {}",
            crate::stderr(&out)
        );
        for replica in self.nodes.iter().filter(|n| n.name != leader.name) {
            wait_for(
                Duration::from_secs(60),
                "the replica to replay table t",
                || {
                    (crate::stdout(&replica.psql_app("SELECT count(*) FROM t")) == "0")
                        .then_some(())
                },
            );
        }
    }

    /// Every daemon's log, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("---- patroni {} ----\n{}", n.name, n.log()))
            .collect()
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
        self.nodes.iter_mut().for_each(PatroniNode::terminate);
        self.nodes.iter_mut().for_each(PatroniNode::stop);
    }
}

fn chown(path: &Path, account: Option<(u32, u32)>) {
    if let Some((uid, gid)) = account {
        std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown for postgres");
    }
}
