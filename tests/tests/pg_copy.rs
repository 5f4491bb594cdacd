//! COPY through the PostgreSQL door in transaction mode, with real clients: psql `\copy` both
//! ways, psycopg `cursor.copy()` (simple protocol) in text and binary, tokio-postgres
//! `copy_in`/`copy_out` (extended protocol: Bind, Execute, Sync, data, CopyDone, Sync, where the
//! server ignores the first Sync), each with an error part-way in both directions and inside
//! explicit transactions. One server connection: after each client, the next one must find no
//! transaction open and only committed rows; the clients themselves keep working after errors.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, TryStreamExt};
use poolguard_e2e::pgc::{code, connect_to, scalar};
use poolguard_e2e::*;

fn one_server() -> PoolSpec {
    PoolSpec {
        pool_size: 1,
        budget: 2,
        ..PoolSpec::default()
    }
}

fn setup() -> (PgSandbox, Proxy) {
    let pg = sandbox(20);
    pg.psql(
        DB,
        "CREATE TABLE c (id int PRIMARY KEY, name text); ALTER TABLE c OWNER TO app",
    )
    .expect("create table");
    let proxy = Proxy::start(&pg, &one_server());
    (pg, proxy)
}

/// What the next client on the only server connection sees: (rows in c, an open transaction).
fn next_client_sees(port: u16) -> String {
    let out = psql(
        port,
        "SELECT count(*), pg_current_xact_id_if_assigned() FROM c",
    );
    assert!(out.status.success(), "next client failed: {}", stderr(&out));
    stdout(&out)
}

fn no_panic(proxy: &Proxy) {
    let log = proxy.log();
    assert!(
        !log.contains("panicked") && !log.contains("server protocol error"),
        "{log}"
    );
}

#[test]
fn psql_copy_both_ways_with_errors_part_way() {
    let (_pg, proxy) = setup();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.tsv");
    let bad = dir.path().join("bad.tsv");
    let out = dir.path().join("out.tsv");
    std::fs::write(&good, "1\tone\n2\ttwo\n3\tthree\n").unwrap();
    let mut rows: String = (10..2000).map(|i| format!("{i}\trow\n")).collect();
    rows.insert_str(rows.len() / 2, "oops\tbad\n");
    std::fs::write(&bad, rows).unwrap();
    let script = format!(
        "\\set ON_ERROR_STOP 0\n\
         \\copy c FROM '{good}'\n\
         \\copy c FROM '{bad}'\n\
         SELECT 'after-bad-in', count(*) FROM c;\n\
         \\copy (SELECT 10 / (5 - g) FROM generate_series(1, 10) g) TO '{out}'\n\
         SELECT 'after-bad-out', count(*) FROM c;\n\
         BEGIN;\n\
         \\copy c FROM '{bad}'\n\
         ROLLBACK;\n\
         BEGIN;\n\
         \\copy c (id, name) FROM STDIN\n\
         4\tfour\n\
         \\.\n\
         COMMIT;\n\
         \\copy (SELECT id, name FROM c ORDER BY id) TO '{out}'\n\
         SELECT 'done', count(*), pg_current_xact_id_if_assigned() FROM c;\n",
        good = good.display(),
        bad = bad.display(),
        out = out.display(),
    );
    let path = dir.path().join("copy.sql");
    std::fs::write(&path, script).unwrap();
    let o = psql_file(proxy.port, &path);
    let (so, se) = (stdout(&o), stderr(&o));
    assert!(so.contains("after-bad-in|3"), "{so}\n{se}");
    assert!(so.contains("after-bad-out|3"), "{so}\n{se}");
    assert!(so.contains("done|4|"), "{so}\n{se}");
    assert!(se.contains("invalid input syntax for type integer"), "{se}");
    assert!(se.contains("division by zero"), "{se}");
    assert!(!se.contains("closed the connection"), "{se}");
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "1\tone\n2\ttwo\n3\tthree\n4\tfour\n"
    );
    assert_eq!(next_client_sees(proxy.port), "4|");
    no_panic(&proxy);
}

#[test]
fn psycopg_copy_text_and_binary_with_errors_part_way() {
    let (_pg, proxy) = setup();
    let py = run_within(
        std::process::Command::new("python3")
            .arg(client_script("pg_psycopg_copy.py"))
            .arg(proxy.url()),
        Duration::from_secs(180),
    );
    assert!(
        py.status.success() && stdout(&py).ends_with("OK"),
        "{}\n{}",
        stdout(&py),
        stderr(&py)
    );
    assert_eq!(next_client_sees(proxy.port), "9|");
    no_panic(&proxy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_copy_in_the_extended_protocol() {
    let (_pg, proxy) = setup();
    let port = proxy.port;
    let client = connect_to(&proxy.conn_str()).await.expect("connect");

    // COPY FROM STDIN: Bind/Execute/Sync, data, CopyDone + Sync.
    let sink = client
        .copy_in("COPY c (id, name) FROM STDIN")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\tone\n2\ttwo\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.expect("finish"), 2);

    // COPY TO STDOUT.
    let stream = client
        .copy_out("COPY (SELECT id, name FROM c ORDER BY id) TO STDOUT")
        .await
        .expect("copy out");
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("copy out data");
    assert_eq!(chunks.concat(), b"1\tone\n2\ttwo\n");

    // A bad row part-way: the server errors during COPY, then skips to the client's Sync.
    let sink = client
        .copy_in("COPY c (id, name) FROM STDIN")
        .await
        .expect("copy in");
    futures_util::pin_mut!(sink);
    let mut rows: String = (10..3000).map(|i| format!("{i}\trow\n")).collect();
    rows.push_str("bad\trow\n3000\trow\n");
    let sent = sink.send(Bytes::from(rows)).await;
    let e = match sent {
        Ok(()) => sink.finish().await.expect_err("bad row accepted"),
        Err(e) => e,
    };
    assert_eq!(code(&e), "22P02", "{e}");
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM c").await.unwrap(),
        Some("2".into())
    );

    // The client gives up part-way: dropping the sink sends CopyFail + Sync.
    {
        let sink = client
            .copy_in::<_, Bytes>("COPY c (id, name) FROM STDIN")
            .await
            .expect("copy in");
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"50\tfifty\n")).await.unwrap();
    }
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM c").await.unwrap(),
        Some("2".into())
    );

    // COPY TO STDOUT of a query that fails part-way.
    let stream = client
        .copy_out("COPY (SELECT 10 / (5 - g) FROM generate_series(1, 10) g) TO STDOUT")
        .await
        .expect("copy out starts");
    let e = stream
        .try_collect::<Vec<Bytes>>()
        .await
        .expect_err("division by zero");
    assert_eq!(code(&e), "22012", "{e}");

    // Inside an explicit transaction: one COPY kept, one failing, then rolled back.
    client.batch_execute("BEGIN").await.unwrap();
    let sink = client
        .copy_in("COPY c (id, name) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"7\tseven\n")).await.unwrap();
    sink.finish().await.unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    let sink = client
        .copy_in("COPY c (id, name) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let e = match sink.send(Bytes::from_static(b"8\teight\nx\ty\n")).await {
        Ok(()) => sink.finish().await.expect_err("bad row accepted"),
        Err(e) => e,
    };
    assert_eq!(code(&e), "22P02", "{e}");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM c").await.unwrap(),
        Some("3".into())
    );
    drop(client);
    let seen = tokio::task::spawn_blocking(move || next_client_sees(port))
        .await
        .unwrap();
    assert_eq!(seen, "3|");
    no_panic(&proxy);
}

/// A client that leaves in the middle of an extended-protocol COPY FROM (its first Sync already
/// sent and ignored by the server): poolguard ends the COPY with CopyFail, syncs the failed
/// batch itself and hands the next client a clean server, without discarding it.
#[test]
fn a_client_leaving_mid_copy_in_leaves_nothing_behind() {
    let (_pg, proxy) = setup();
    let mut c = rawpg::RawPg::login(proxy.port, USER, PASSWORD, DB);
    let mut m = bytes::BytesMut::new();
    poolguard_pg::frontend::parse_message(&mut m, "", "COPY c (id, name) FROM STDIN", &[]);
    poolguard_pg::frontend::bind_with_rest(&mut m, "", "", &[0, 0, 0, 0, 0, 0]);
    poolguard_pg::frontend::execute(&mut m, "", 0);
    poolguard_pg::frontend::sync(&mut m);
    c.send(&m);
    loop {
        let msg = c.read().expect("answer");
        assert_ne!(msg.tag, b'E', "{:?}", msg.field(b'M'));
        if msg.tag == b'G' {
            break;
        }
    }
    // One row of COPY data, then the client is gone.
    let data = b"1\tone\n";
    let mut row = vec![b'd'];
    row.extend_from_slice(&(4 + data.len() as u32).to_be_bytes());
    row.extend_from_slice(data);
    c.send(&row);
    drop(c);
    assert_eq!(next_client_sees(proxy.port), "0|");
    let log = proxy.log();
    assert!(!log.contains("discarding it"), "{log}");
    no_panic(&proxy);
}
