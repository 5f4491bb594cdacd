//! Coming from PgBouncer in one step: a pgbouncer.ini and its userlist.txt, served by Debian's
//! PgBouncer, and `poolguard import-pgbouncer` of the same files, served by poolguard, give the
//! same answers to the same workload (a psql script and pgbench), and the importer names what
//! it could not carry over.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use poolguard_e2e::*;

struct PgBouncer(Child);

impl Drop for PgBouncer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn workload(port: u16, script: &std::path::Path) -> (String, String) {
    let out = psql_file(port, script);
    assert!(out.status.success(), "{}", stderr(&out));
    let bench = run_pg(
        Command::new("pgbench")
            .args([
                "-n",
                "-S",
                "-c",
                "4",
                "-j",
                "2",
                "-t",
                "25",
                "-h",
                "127.0.0.1",
                "-U",
                USER,
            ])
            .arg("-p")
            .arg(port.to_string())
            .arg(DB),
    );
    assert!(bench.status.success(), "{}", stderr(&bench));
    let processed = stdout(&bench)
        .lines()
        .find(|l| l.contains("number of transactions actually processed"))
        .unwrap_or_default()
        .to_owned();
    (stdout(&out), processed)
}

#[test]
fn an_imported_pgbouncer_configuration_serves_the_same_workload() {
    let pg = sandbox(40);
    let init = run_pg(
        Command::new("pgbench")
            .args(["-i", "-s", "1", "-q", "-h", "127.0.0.1", "-U", USER])
            .arg("-p")
            .arg(pg.port().to_string())
            .arg(DB),
    );
    assert!(init.status.success(), "{}", stderr(&init));
    let dir = tempfile::tempdir().unwrap();
    let bouncer_port = free_port();
    let ini = dir.path().join("pgbouncer.ini");
    let userlist = dir.path().join("userlist.txt");
    std::fs::write(&userlist, format!("\"{USER}\" \"{PASSWORD}\"\n")).unwrap();
    std::fs::write(
        &ini,
        format!(
            "[databases]\n{DB} = host=127.0.0.1 port={pg_port} dbname={DB}\n\n[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {bouncer_port}\nunix_socket_dir =\nauth_type = scram-sha-256\nauth_file = {users}\npool_mode = transaction\ndefault_pool_size = 4\nreserve_pool_size = 1\nmax_client_conn = 100\nserver_lifetime = 1800\nquery_wait_timeout = 20\nlogfile = {log}\npidfile =\nserver_reset_query = DISCARD ALL\n",
            pg_port = pg.port(),
            users = userlist.display(),
            log = dir.path().join("pgbouncer.log").display(),
        ),
    )
    .unwrap();
    // PgBouncer refuses to run as root: it runs as postgres, which must read and write here.
    let mut cmd = Command::new("pgbouncer");
    if stdout(&Command::new("id").arg("-u").output().unwrap()) == "0" {
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(dir.path())
            .status()
            .unwrap();
        cmd.args(["-u", "postgres"]);
    }
    let _bouncer = PgBouncer(
        cmd.arg(&ini)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pgbouncer"),
    );
    wait_listening(bouncer_port);

    let imported = Command::new(poolguard_bin())
        .arg("import-pgbouncer")
        .arg(&ini)
        .arg(&userlist)
        .output()
        .expect("poolguard import-pgbouncer");
    assert!(imported.status.success(), "{}", stderr(&imported));
    let notes = stderr(&imported);
    assert!(notes.contains("server_reset_query"), "{notes}");
    // The same config on another port, since PgBouncer holds the one it names.
    let port = free_port();
    let config = stdout(&imported).replace(
        &format!("127.0.0.1:{bouncer_port}"),
        &format!("127.0.0.1:{port}"),
    );
    let proxy = Proxy::start_with(&config, port);

    let script = dir.path().join("workload.sql");
    let mut sql = String::from("CREATE TABLE IF NOT EXISTS ledger (id int, amount int);\n");
    for i in 0..10 {
        sql.push_str(&format!(
            "BEGIN;\nINSERT INTO ledger VALUES ({i}, {i} * 10);\nSELECT sum(amount) FROM ledger WHERE id <= {i};\nCOMMIT;\n"
        ));
    }
    sql.push_str("SELECT count(*) FROM pgbench_accounts;\nDROP TABLE ledger;\n");
    std::fs::write(&script, sql).unwrap();
    let through_bouncer = workload(bouncer_port, &script);
    let through_poolguard = workload(proxy.port, &script);
    assert_eq!(through_poolguard, through_bouncer);
    assert!(
        through_poolguard.1.contains("100/100"),
        "{:?}",
        through_poolguard.1
    );
}
