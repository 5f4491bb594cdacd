//! The unnamed-statement cache: a Parse of the unnamed statement that the server already holds
//! is answered by poolguard, and nothing a client sees changes because of it. Pools of one
//! server, so every client shares the server's single unnamed statement.

#![allow(clippy::err_expect)] // tokio-postgres values are not all Debug

use std::process::Command;
use std::time::Duration;

use poolguard_e2e::admin::{http_get, metric};
use poolguard_e2e::*;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

async fn connect(proxy: &Proxy) -> Client {
    poolguard_e2e::pgc::connect_to(&proxy.conn_str())
        .await
        .expect("connect through poolguard")
}

/// One value of the first row of `sql` run as an unnamed statement with one int4 parameter.
async fn unnamed(c: &Client, sql: &str, p: i32) -> Result<String, tokio_postgres::Error> {
    let params: [(&(dyn ToSql + Sync), Type); 1] = [(&p, Type::INT4)];
    let rows = c.query_typed(sql, &params).await?;
    Ok(rows[0].get::<_, String>(0))
}

fn reused(admin: u16) -> f64 {
    let text = http_get(admin, "/metrics");
    metric(
        &text,
        "poolguard_parses_reused_total",
        &["pool=\"bank/app\""],
    )
    .unwrap_or_else(|| panic!("poolguard_parses_reused_total missing:\n{text}"))
}

fn one_server_pool(admin: u16) -> PoolSpec {
    PoolSpec {
        pool_size: 1,
        budget: 3,
        front: "track_extra_parameters = [\"search_path\"]".into(),
        limits: format!(
            "acquire_timeout = \"20s\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\nusers = [\"{USER}\"]\n"
        ),
        ..PoolSpec::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_servers_unnamed_statement_is_reused_only_when_it_is_the_same() {
    let pg = sandbox(20);
    let admin = free_port();
    let proxy = Proxy::start(&pg, &one_server_pool(admin));
    let a = connect(&proxy).await;
    let b = connect(&proxy).await;
    a.batch_execute(
        "CREATE SCHEMA s_a; CREATE SCHEMA s_b;
         CREATE TABLE s_a.t (v text); INSERT INTO s_a.t VALUES ('from a');
         CREATE TABLE s_b.t (v text); INSERT INTO s_b.t VALUES ('from b');
         CREATE TABLE public.t (v text); INSERT INTO public.t VALUES ('42');",
    )
    .await
    .unwrap();
    const Q: &str = "SELECT v::text FROM t WHERE $1::int > 0";

    // Same text, same parameter types, same settings: after the first Parse the server's
    // statement serves both clients. Three of the four Parses are answered by poolguard.
    let before = reused(admin);
    for _ in 0..2 {
        assert_eq!(unnamed(&a, Q, 1).await.unwrap(), "42");
        assert_eq!(unnamed(&b, Q, 1).await.unwrap(), "42");
    }
    assert_eq!(reused(admin) - before, 3.0);

    // A named statement changes the table under the cached unnamed one: the next reuse sees
    // the new definition (PostgreSQL re-analyses it), not a stale plan.
    let before = reused(admin);
    let alter = b
        .prepare("ALTER TABLE public.t ALTER COLUMN v TYPE int USING v::int")
        .await
        .unwrap();
    b.execute(&alter, &[]).await.unwrap();
    let rows = a
        .query_typed("SELECT v FROM t WHERE $1::int > 0", &[(&1i32, Type::INT4)])
        .await
        .unwrap();
    assert_eq!(rows[0].columns()[0].type_(), &Type::INT4);
    assert_eq!(rows[0].get::<_, i32>(0), 42);
    assert_eq!(unnamed(&a, Q, 1).await.unwrap(), "42");
    assert_eq!(reused(admin) - before, 0.0, "different texts were reused");

    // A simple query destroys the unnamed statement: the next Parse must reach the server.
    let before = reused(admin);
    assert_eq!(unnamed(&a, Q, 1).await.unwrap(), "42");
    assert_eq!(reused(admin) - before, 1.0);
    a.simple_query("SELECT 1").await.unwrap();
    assert_eq!(unnamed(&a, Q, 1).await.unwrap(), "42");
    assert_eq!(reused(admin) - before, 1.0, "reused after a simple query");

    // Same text, different parameter types: a different statement.
    let before = reused(admin);
    let as_int = a
        .query_typed("SELECT pg_typeof($1)::text", &[(&7i32, Type::INT4)])
        .await
        .unwrap();
    let as_text = a
        .query_typed("SELECT pg_typeof($1)::text", &[(&"x", Type::TEXT)])
        .await
        .unwrap();
    assert_eq!(as_int[0].get::<_, String>(0), "integer");
    assert_eq!(as_text[0].get::<_, String>(0), "text");
    assert_eq!(reused(admin) - before, 0.0);

    // Different search paths on one server: each client reads its own schema's table.
    a.batch_execute("SET search_path = s_a").await.unwrap();
    b.batch_execute("SET search_path = s_b").await.unwrap();
    for _ in 0..3 {
        assert_eq!(unnamed(&a, Q, 1).await.unwrap(), "from a");
        assert_eq!(unnamed(&b, Q, 1).await.unwrap(), "from b");
    }

    // An error: the statement that failed is gone, the next one is parsed again and works.
    let e = unnamed(&a, "SELECT (1 / ($1::int - 1))::text", 1)
        .await
        .err()
        .expect("division by zero");
    assert_eq!(poolguard_e2e::pgc::code(&e), "22012");
    assert_eq!(
        unnamed(&a, "SELECT (1 / ($1::int - 1))::text", 2)
            .await
            .unwrap(),
        "1"
    );
    assert_eq!(app_connections(&pg), 1);
}

/// psycopg in pipeline mode: an error early in a batch makes the server skip the batch's later
/// Parse; the next batch must not rely on it. Several threads over two servers, every result
/// checked by its own thread.
#[test]
fn psycopg_pipelines_with_errors_and_many_clients() {
    let pg = sandbox(20);
    let admin = free_port();
    let spec = PoolSpec {
        pool_size: 2,
        ..one_server_pool(admin)
    };
    let proxy = Proxy::start(&pg, &spec);
    let out = run_within(
        Command::new("python3")
            .arg(client_script("pg_psycopg_unnamed.py"))
            .arg(proxy.url()),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "pg_psycopg_unnamed.py failed ({}):\n{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(stdout(&out), "OK");
    // The cache was in play: same texts from many clients on two servers.
    assert!(
        reused(admin) > 0.0,
        "no Parse was answered by poolguard:\n{}",
        proxy.log()
    );
    assert!(app_connections(&pg) <= 2);
}
