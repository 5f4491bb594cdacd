//! `poolguard sandbox`: a throwaway PostgreSQL or MariaDB for experiments and benchmark scripts.
//!
//! Prints `KEY=value` lines (host, port, superuser password) on stdout, then waits until Ctrl-C
//! or SIGTERM and removes the server and its data directory.

use anyhow::Context;
use poolguard_sandbox::{MariaDbSandbox, PgSandbox};

pub struct SandboxOptions {
    pub engine: String,
    pub max_connections: u32,
    pub users: Vec<String>,
    pub databases: Vec<String>,
    pub settings: Vec<String>,
}

fn split_pair<'a>(s: &'a str, what: &str) -> anyhow::Result<(&'a str, &'a str)> {
    s.split_once([':', '='])
        .with_context(|| format!("{what} {s:?}: expected name:value"))
}

pub async fn sandbox(opts: SandboxOptions) -> anyhow::Result<()> {
    let guard: Box<dyn std::any::Any + Send> = match opts.engine.as_str() {
        "postgres" | "postgresql" => {
            let mut b = PgSandbox::builder().max_connections(opts.max_connections);
            for u in &opts.users {
                let (n, p) = split_pair(u, "--user")?;
                b = b.user(n, p);
            }
            for d in &opts.databases {
                let (n, o) = split_pair(d, "--database")?;
                b = b.database(n, o);
            }
            for s in &opts.settings {
                let (k, v) = split_pair(s, "--setting")?;
                b = b.setting(k, v);
            }
            let pg = tokio::task::spawn_blocking(move || b.start()).await??;
            println!("ENGINE=postgres");
            println!("HOST={}", pg.host());
            println!("PORT={}", pg.port());
            println!("SOCKET={}", pg.socket_path().display());
            println!("SUPERUSER={}", pg.superuser().0);
            println!("SUPERUSER_PASSWORD={}", pg.superuser().1);
            println!("BIN_DIR={}", pg.bin_dir().display());
            Box::new(pg)
        }
        "mariadb" | "mysql" => {
            let mut b = MariaDbSandbox::builder().max_connections(opts.max_connections);
            for u in &opts.users {
                let (n, p) = split_pair(u, "--user")?;
                b = b.user(n, p);
            }
            for d in &opts.databases {
                let (n, o) = split_pair(d, "--database")?;
                b = b.database(n, o);
            }
            for s in &opts.settings {
                let (k, v) = split_pair(s, "--setting")?;
                b = b.setting(k, v);
            }
            let db = tokio::task::spawn_blocking(move || b.start()).await??;
            println!("ENGINE=mariadb");
            println!("HOST={}", db.host());
            println!("PORT={}", db.port());
            println!("SOCKET={}", db.socket().display());
            println!("SUPERUSER={}", db.root().0);
            println!("SUPERUSER_PASSWORD={}", db.root().1);
            Box::new(db)
        }
        other => anyhow::bail!("unknown engine {other:?}: use postgres or mariadb"),
    };
    println!("READY=1");
    use std::io::Write;
    let _ = std::io::stdout().flush();
    crate::shutdown_signal().await;
    drop(guard);
    Ok(())
}
