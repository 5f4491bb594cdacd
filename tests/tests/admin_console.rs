//! The PostgreSQL admin console through the real binary, driven by the real psql: PgBouncer
//! 1.18's headers, values that match a scripted workload (psql clients holding transactions
//! with a known application_name; their servers listed active, then idle once returned),
//! poolguard's SHOW HOLDERS / SHOW LEAKS, refusals, and KILL_CLIENT on a client inside a
//! transaction (rolled back, server back in the pool). Counts only, never timings: the stats
//! period's averages are checked by unit tests (a 60 s period is too long to wait for here).

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use poolguard_e2e::admin::{console_config, wait_for, ADMIN, ADMIN_PASSWORD};
use poolguard_e2e::*;

const LIMIT: Duration = Duration::from_secs(60);

/// PgBouncer 1.18.0's headers (psql -A -F '|' against a running 1.18.0).
const POOLS: &str = "database|user|cl_active|cl_waiting|cl_active_cancel_req|cl_waiting_cancel_req|sv_active|sv_active_cancel|sv_being_canceled|sv_idle|sv_used|sv_tested|sv_login|maxwait|maxwait_us|pool_mode";
const CLIENTS: &str = "type|user|database|state|addr|port|local_addr|local_port|connect_time|request_time|wait|wait_us|close_needed|ptr|link|remote_pid|tls|application_name";
const STATS: &str = "database|total_xact_count|total_query_count|total_received|total_sent|total_xact_time|total_query_time|total_wait_time|avg_xact_count|avg_query_count|avg_recv|avg_sent|avg_xact_time|avg_query_time|avg_wait_time";
const DATABASES: &str = "name|host|port|database|force_user|pool_size|min_pool_size|reserve_pool|pool_mode|max_connections|current_connections|paused|disabled";
/// SHOW STATS_TOTALS and SHOW STATS_AVERAGES (PgBouncer 1.18's source).
const STATS_HALF: &str =
    "database|xact_count|query_count|bytes_received|bytes_sent|xact_time|query_time|wait_time";

/// poolguard with an admin user, a 2 s leak threshold and no idle-in-transaction reclaim.
fn console_proxy(pg: &PgSandbox) -> Proxy {
    let spec = PoolSpec {
        pool_size: 5,
        limits: format!(
            "leak_threshold = \"2s\"\nidle_in_transaction_timeout = \"0s\"\n{}",
            console_config()
        ),
        ..PoolSpec::default()
    };
    Proxy::start(pg, &spec)
}

/// psql as the admin user on database `pgbouncer`, unaligned with a header, no footer.
fn console_command(port: u16, database: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.args(["-X", "-A", "-F", "|", "-P", "footer=off", "-h", "127.0.0.1"])
        .args(["-U", ADMIN, "-d", database, "-p", &port.to_string()])
        .env("PGPASSWORD", ADMIN_PASSWORD)
        .env("PGCONNECT_TIMEOUT", "20");
    cmd
}

fn console(port: u16, sql: &str) -> Output {
    run_within(console_command(port, "pgbouncer").arg("-c").arg(sql), LIMIT)
}

/// A console answer: its header line and its rows, each split at `|`.
struct Answer {
    header: String,
    rows: Vec<Vec<String>>,
}

impl Answer {
    fn column(&self, name: &str) -> usize {
        self.header
            .split('|')
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {}", self.header))
    }

    /// Rows whose `column` equals `value`.
    fn rows_where(&self, column: &str, value: &str) -> Vec<&Vec<String>> {
        let i = self.column(column);
        self.rows.iter().filter(|r| r[i] == value).collect()
    }

    /// `column` of the only row whose `key` column equals `value`.
    fn get(&self, key: &str, value: &str, column: &str) -> String {
        let rows = self.rows_where(key, value);
        assert_eq!(rows.len(), 1, "{key}={value} in {}", self.header);
        rows[0][self.column(column)].clone()
    }
}

fn show(port: u16, what: &str) -> Answer {
    let out = console(port, &format!("SHOW {what}"));
    assert!(out.status.success(), "SHOW {what}: {}", stderr(&out));
    let text = stdout(&out);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_owned();
    let rows = lines
        .map(|l| l.split('|').map(str::to_owned).collect())
        .collect();
    Answer { header, rows }
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    wait_for(LIMIT, what, || f().then_some(()));
}

#[test]
fn show_commands_have_pgbouncer_columns_and_the_workload() {
    let pg = sandbox(30);
    let proxy = console_proxy(&pg);
    let port = proxy.port;
    let out = psql(port, "CREATE TABLE console_t (id int)");
    assert!(out.status.success(), "{}", stderr(&out));

    // Three clients of application "fee-batch" inside open transactions.
    let holders: Vec<HeldPsql> = (0..3)
        .map(|i| {
            HeldPsql::start(
                port,
                "fee-batch",
                &[],
                &format!("BEGIN;\nINSERT INTO console_t VALUES ({i});\n"),
            )
        })
        .collect();
    wait_until("three clients holding servers", || {
        let pools = show(port, "POOLS");
        pools.rows_where("database", DB).len() == 1 && pools.get("database", DB, "cl_active") == "3"
    });

    let pools = show(port, "POOLS");
    assert_eq!(pools.header, POOLS);
    assert_eq!(pools.get("database", DB, "user"), USER);
    assert_eq!(pools.get("database", DB, "sv_active"), "3");
    assert_eq!(pools.get("database", DB, "cl_waiting"), "0");
    assert_eq!(pools.get("database", DB, "pool_mode"), "transaction");
    // This psql (and perhaps the previous one, still on its way out).
    let console_clients: u32 = pools
        .get("database", "pgbouncer", "cl_active")
        .parse()
        .unwrap();
    assert!(console_clients >= 1);

    let clients = show(port, "CLIENTS");
    assert_eq!(clients.header, CLIENTS);
    let fee = clients.rows_where("application_name", "fee-batch");
    assert_eq!(fee.len(), 3);
    let state = clients.column("state");
    assert!(
        fee.iter().all(|r| r[state] == "active"),
        "{:?}",
        clients.rows
    );
    assert!(fee.iter().all(|r| r[clients.column("database")] == DB));
    assert!(fee.iter().all(|r| r[clients.column("addr")] == "127.0.0.1"));
    assert!(!clients.rows_where("database", "pgbouncer").is_empty());

    let servers = show(port, "SERVERS");
    assert_eq!(servers.header, CLIENTS, "PgBouncer shares the layout");
    let leased = servers.rows_where("application_name", "fee-batch");
    assert_eq!(leased.len(), 3);
    assert!(leased
        .iter()
        .all(|r| r[servers.column("state")] == "active"));
    // Idle servers are listed too, as many as SHOW POOLS counts.
    let idle_servers = servers.rows_where("state", "idle").len();
    assert_eq!(
        idle_servers.to_string(),
        pools.get("database", DB, "sv_idle"),
        "{:?}",
        servers.rows
    );

    let holders_table = show(port, "HOLDERS");
    assert_eq!(
        holders_table.header,
        "application_name|addr|leases|idle_in_transaction|leaked|oldest_held_seconds|pools|last_statement"
    );
    assert_eq!(
        holders_table.get("application_name", "fee-batch", "leases"),
        "3"
    );
    assert_eq!(
        holders_table.get("application_name", "fee-batch", "addr"),
        "127.0.0.1"
    );
    assert_eq!(
        holders_table.get("application_name", "fee-batch", "idle_in_transaction"),
        "3"
    );

    // Past leak_threshold (2 s) the watcher reports each lease once; SHOW LEAKS lists them with
    // the client ids KILL_CLIENT takes.
    wait_until("three leaks", || show(port, "LEAKS").rows.len() == 3);
    let leaks = show(port, "LEAKS");
    assert_eq!(
        leaks.header,
        "lease_id|client_id|pool|protocol|user|database|application_name|addr|port|held_seconds|state|last_statement"
    );
    assert_eq!(leaks.rows_where("application_name", "fee-batch").len(), 3);
    assert_eq!(leaks.rows_where("state", "idle in transaction").len(), 3);
    let ptrs: Vec<&String> = fee.iter().map(|r| &r[clients.column("ptr")]).collect();
    for r in &leaks.rows {
        assert!(
            ptrs.contains(&&r[leaks.column("client_id")]),
            "{:?}",
            leaks.rows
        );
    }

    let dbs = show(port, "DATABASES");
    assert_eq!(dbs.header, DATABASES);
    assert_eq!(dbs.get("name", DB, "pool_size"), "5");
    assert_eq!(dbs.get("name", DB, "reserve_pool"), "0");
    assert_eq!(dbs.get("name", DB, "host"), "127.0.0.1");
    assert_eq!(dbs.get("name", DB, "port"), pg.port().to_string());
    assert_eq!(dbs.get("name", DB, "pool_mode"), "transaction");
    assert_eq!(dbs.get("name", "pgbouncer", "database"), "pgbouncer");

    let stats = show(port, "STATS");
    assert_eq!(stats.header, STATS);
    assert_eq!(stats.rows_where("database", DB).len(), 1);
    assert_eq!(show(port, "LISTS").header, "list|items");
    let used: usize = show(port, "LISTS")
        .get("list", "used_clients", "items")
        .parse()
        .unwrap();
    assert!(used >= 4, "three holders and this psql: {used}");
    assert!(show(port, "VERSION").rows[0][0].starts_with("PgBouncer 1.18.0"));
    let config = show(port, "CONFIG");
    assert_eq!(config.header, "key|value|default|changeable");
    assert_eq!(config.get("key", "admin_users", "value"), ADMIN);

    for h in holders {
        let out = h.finish("ROLLBACK;\n");
        assert!(out.status.success(), "{}", stderr(&out));
    }
    wait_until("holders gone", || {
        show(port, "CLIENTS")
            .rows_where("application_name", "fee-batch")
            .is_empty()
    });
    let pools = show(port, "POOLS");
    assert_eq!(pools.get("database", DB, "cl_active"), "0");
    assert_eq!(pools.get("database", DB, "sv_active"), "0");

    // The three servers went back to the pool: SHOW SERVERS lists them idle, unlinked.
    let sv_idle: usize = pools.get("database", DB, "sv_idle").parse().unwrap();
    assert!(
        sv_idle >= 3,
        "three holders at once, none closed: {sv_idle}"
    );
    let servers = show(port, "SERVERS");
    let idle = servers.rows_where("state", "idle");
    assert_eq!(idle.len(), sv_idle, "{:?}", servers.rows);
    for r in &idle {
        assert_eq!(r[servers.column("database")], DB);
        assert_eq!(r[servers.column("user")], USER);
        assert_eq!(r[servers.column("port")], pg.port().to_string());
        assert_eq!(r[servers.column("link")], "");
    }
    assert!(servers.rows_where("state", "active").is_empty());

    // With the workload over, STATS_TOTALS is SHOW STATS's total_* half, and STATS_AVERAGES
    // has the avg_* half's row (its values move only when a stats period ends).
    let stats = show(port, "STATS");
    let totals = show(port, "STATS_TOTALS");
    assert_eq!(totals.header, STATS_HALF);
    let total_row = totals.rows_where("database", DB);
    assert_eq!(total_row.len(), 1);
    let stats_row = stats.rows_where("database", DB)[0].clone();
    assert_eq!(total_row[0][1..], stats_row[1..8]);
    let xacts: u64 = totals.get("database", DB, "xact_count").parse().unwrap();
    assert!(xacts >= 4, "CREATE TABLE and three transactions: {xacts}");
    let averages = show(port, "STATS_AVERAGES");
    assert_eq!(averages.header, STATS_HALF);
    let avg_row = averages.rows_where("database", DB);
    assert_eq!(avg_row.len(), 1);
    assert!(
        avg_row[0][1..].iter().all(|v| v.parse::<u64>().is_ok()),
        "{avg_row:?}"
    );
}

#[test]
fn console_protocol_refusals_and_commands() {
    let pg = sandbox(20);
    let proxy = console_proxy(&pg);
    let port = proxy.port;

    // Case-insensitive, optional `;`, several statements in one Query answered in order.
    let out = console(port, "show version; Show Lists;");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with("version\nPgBouncer 1.18.0"), "{text}");
    assert!(text.contains("list|items\ndatabases|2"), "{text}");
    // SHOW HELP is a notice.
    let out = console(port, "SHOW HELP");
    assert!(out.status.success());
    assert!(stderr(&out).contains("KILL_CLIENT"), "{}", stderr(&out));

    // An unknown command is an error with its SQLSTATE; the session goes on. So do PAUSE,
    // RESUME and RELOAD, whatever they answer (control.rs decides).
    let script = "\\set VERBOSITY verbose\nSHOW FOO;\nSHOW VERSION;\nRELOAD;\nPAUSE bank;\nRESUME bank;\nPAUSE;\nRESUME;\nSELECT 1;\nSHOW USERS;\n";
    let mut child = console_command(port, "poolguard")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (text, err) = (stdout(&out), stderr(&out));
    assert!(
        err.contains("ERROR:  42601: invalid command 'SHOW FOO', use SHOW HELP;"),
        "{err}"
    );
    assert!(
        err.contains("ERROR:  42601: invalid command 'SELECT 1'"),
        "{err}"
    );
    assert!(text.contains("PgBouncer 1.18.0"), "{text}");
    assert!(
        text.ends_with(&format!("name|pool_mode\n{ADMIN}|\n{USER}|")),
        "{text}"
    );
    // Pooled clients still get through.
    let out = psql(port, "SELECT 1");
    assert_eq!(stdout(&out), "1", "{}", stderr(&out));

    // A user who is not in [admin] users is refused with 28000 and closed.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let refused = rt.block_on(async {
        let conn =
            format!("host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname=pgbouncer");
        tokio_postgres::connect(&conn, tokio_postgres::NoTls).await
    });
    let e = refused.err().expect("refused");
    let db = e.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "28000");
    assert!(db.message().contains("not an admin user"), "{db:?}");
    let out = run_pg(psql_command(port).args(["-d", "pgbouncer", "-c", "SHOW POOLS"]));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not an admin user"),
        "{}",
        stderr(&out)
    );

    // The extended protocol is refused (0A000) and the session stays usable.
    let answer = rt.block_on(async {
        let conn = format!(
            "host=127.0.0.1 port={port} user={ADMIN} password={ADMIN_PASSWORD} dbname=pgbouncer"
        );
        let (client, conn) = tokio_postgres::connect(&conn, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let refused = client.query("SHOW POOLS", &[]).await.unwrap_err();
        let answer = client.simple_query("SHOW VERSION").await.unwrap();
        let rows = answer
            .iter()
            .filter(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
            .count();
        (refused, rows)
    });
    assert_eq!(answer.0.code().map(|c| c.code()), Some("0A000"));
    assert_eq!(answer.1, 1, "the session still answers");
}

#[test]
fn kill_client_rolls_back_and_returns_the_server() {
    let pg = sandbox(20);
    let proxy = console_proxy(&pg);
    let port = proxy.port;
    let out = psql(port, "CREATE TABLE kill_t (id int)");
    assert!(out.status.success(), "{}", stderr(&out));
    // Warm the pool: two servers open.
    let warm: Vec<HeldPsql> = (0..2)
        .map(|_| HeldPsql::start(port, "warm", &[], "BEGIN;\nSELECT 1;\n"))
        .collect();
    wait_until("two servers", || {
        show(port, "POOLS").rows_where("database", DB).len() == 1
            && show(port, "POOLS").get("database", DB, "sv_active") == "2"
    });
    for h in warm {
        assert!(h.finish("COMMIT;\n").status.success());
    }

    let victim = HeldPsql::start(
        port,
        "victim",
        &[],
        "BEGIN;\nINSERT INTO kill_t VALUES (42);\n",
    );
    wait_until("victim holds a server", || {
        let c = show(port, "CLIENTS");
        c.rows_where("application_name", "victim").len() == 1
            && c.get("application_name", "victim", "state") == "active"
    });
    let pools = show(port, "POOLS");
    let open = |p: &Answer| {
        let n = |c: &str| p.get("database", DB, c).parse::<u32>().unwrap();
        n("sv_active") + n("sv_idle")
    };
    let open_before = open(&pools);
    assert_eq!(pools.get("database", DB, "sv_active"), "1");
    let id = show(port, "CLIENTS").get("application_name", "victim", "ptr");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
        )
        .unwrap(),
        "1"
    );

    let out = console(port, &format!("KILL_CLIENT {id}"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("disconnected"), "{}", stderr(&out));

    // The victim's connection is gone: its next statement fails.
    let out = victim.finish("SELECT 1;\n");
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(stderr(&out).contains("connection"), "{}", stderr(&out));

    // Rolled back on the server; no backend left idle in transaction; the server is back.
    wait_until("victim forgotten", || {
        show(port, "CLIENTS")
            .rows_where("application_name", "victim")
            .is_empty()
    });
    wait_until("server idle again", || {
        show(port, "POOLS").get("database", DB, "sv_active") == "0"
    });
    assert_eq!(pg.psql(DB, "SELECT count(*) FROM kill_t").unwrap(), "0");
    assert_eq!(
        pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction'"
        )
        .unwrap(),
        "0"
    );
    let pools = show(port, "POOLS");
    assert_eq!(
        open(&pools),
        open_before,
        "the server went back to the pool"
    );
    assert_eq!(pools.get("database", DB, "cl_active"), "0");
    let out = psql(
        port,
        "INSERT INTO kill_t VALUES (1); SELECT count(*) FROM kill_t",
    );
    assert_eq!(stdout(&out), "1", "{}", stderr(&out));

    // An unknown id is an error; the console session goes on.
    let out = console(port, "KILL_CLIENT 999999");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no client with id 999999"),
        "{}",
        stderr(&out)
    );
    assert!(show(port, "VERSION").rows[0][0].starts_with("PgBouncer"));
}

#[test]
fn kill_client_reaches_mysql_clients() {
    use poolguard_e2e::mysql::{mariadb, MyClient};
    let maria = mariadb(20);
    let (port, mysql_port, admin) = (free_port(), free_port(), free_port());
    // The console needs the PostgreSQL front door only, not a PostgreSQL database.
    let config = format!(
        r#"
[postgres]
listen = "127.0.0.1:{port}"

[mysql]
listen = "127.0.0.1:{mysql_port}"

[[backends]]
name = "maria"
protocol = "mysql"
hosts = ["127.0.0.1:{maria_port}"]
max_connections = 10

[[databases]]
name = "{DB}"
backend = "maria"
pool_size = 3

[[users]]
name = "{USER}"
password = "{PASSWORD}"

[[users]]
name = "{ADMIN}"
password = "{ADMIN_PASSWORD}"

[admin]
listen = "127.0.0.1:{admin}"
users = ["{ADMIN}"]

[limits]
idle_in_transaction_timeout = "0s"
"#,
        maria_port = maria.port()
    );
    let proxy = Proxy::start_with(&config, port);
    let mut setup = MyClient::connect(mysql_port).expect("MySQL login");
    setup.query("CREATE TABLE kill_m (id int)").unwrap();
    drop(setup);

    let mut victim = MyClient::connect(mysql_port).expect("MySQL login");
    victim.query("BEGIN").unwrap();
    victim.query("INSERT INTO kill_m VALUES (7)").unwrap();
    let clients = show(proxy.port, "CLIENTS");
    let mine = clients.rows_where("user", USER);
    assert_eq!(mine.len(), 1, "{:?}", clients.rows);
    assert_eq!(mine[0][clients.column("state")], "active");
    assert_eq!(
        mine[0][clients.column("local_port")],
        mysql_port.to_string()
    );
    let id = mine[0][clients.column("ptr")].clone();
    let open_before = show(proxy.port, "POOLS").get("database", DB, "sv_active");
    assert_eq!(open_before, "1");

    let out = console(proxy.port, &format!("KILL_CLIENT {id}"));
    assert!(stderr(&out).contains("disconnected"), "{}", stderr(&out));
    assert!(
        victim.query("SELECT 1").is_err(),
        "the connection is closed"
    );

    wait_until("MySQL victim forgotten", || {
        show(proxy.port, "CLIENTS")
            .rows_where("user", USER)
            .is_empty()
    });
    wait_until("server idle again", || {
        show(proxy.port, "POOLS").get("database", DB, "sv_active") == "0"
    });
    assert_eq!(maria.sql(DB, "SELECT COUNT(*) FROM kill_m").unwrap(), "0");
    assert_eq!(
        maria
            .sql("", "SELECT COUNT(*) FROM information_schema.innodb_trx")
            .unwrap(),
        "0",
        "no transaction left open on the server"
    );
    assert_eq!(
        show(proxy.port, "POOLS").get("database", DB, "sv_idle"),
        "1"
    );
}
