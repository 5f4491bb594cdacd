//! No plaintext secrets in poolguard: users looked up in the server with `auth_query`, and
//! server logins by SCRAM passthrough (the key a client's proof yields) or md5 passthrough
//! (the stored hash), against a sandbox PostgreSQL whose pg_hba says md5 (so a role stored
//! as SCRAM gets SCRAM, one stored as md5 gets md5).

use std::process::Output;
use std::time::{Duration, Instant};

use poolguard_e2e::pgc::{code, connect_to, message, scalar};
use poolguard_e2e::tls::Pki;
use poolguard_e2e::*;

/// A sandbox with `app` (owner of `bank`) and an md5 pg_hba.
fn server() -> PgSandbox {
    PgSandbox::builder()
        .max_connections(40)
        .user(USER, PASSWORD)
        .database(DB, USER)
        .auth_method("md5")
        .start()
        .expect("start sandbox PostgreSQL")
}

fn superuser_sql(pg: &PgSandbox, sql: &str) -> String {
    pg.psql(DB, sql).unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// psql through poolguard as `user` / `password` on `bank`.
fn psql_as(port: u16, user: &str, password: &str, sql: &str) -> Output {
    psql_on(port, user, password, DB, sql)
}

/// [`psql_as`] on database `db`.
fn psql_on(port: u16, user: &str, password: &str, db: &str, sql: &str) -> Output {
    psql_command_as(port, user, db)
        .args(["-c", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("run psql")
}

fn conn_str(port: u16, user: &str, password: &str) -> String {
    format!(
        "host=127.0.0.1 port={port} user={user} password={password} dbname={DB} connect_timeout=20"
    )
}

/// Server connections of `user` (only poolguard connects as the test roles).
fn server_connections_of(pg: &PgSandbox, user: &str) -> u64 {
    superuser_sql(
        pg,
        &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{user}'"),
    )
    .parse()
    .unwrap()
}

/// The recommended setup for a non-superuser `auth_user` (docs/security.md): a SECURITY
/// DEFINER function owned by a superuser, executable by `app` only. This one also writes down
/// each call, so a test can count the lookups the server served.
const LOOKUP_FUNCTION: &str = "
CREATE TABLE public.lookups(name text);
CREATE FUNCTION public.poolguard_lookup(p_user name, OUT username name, OUT password text)
RETURNS SETOF record LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog AS $$
BEGIN
  INSERT INTO public.lookups VALUES (p_user);
  RETURN QUERY SELECT rolname, CASE WHEN rolvaliduntil < now() THEN NULL ELSE rolpassword END
    FROM pg_authid WHERE rolname = p_user AND rolcanlogin;
END $$;
REVOKE ALL ON FUNCTION public.poolguard_lookup(name) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.poolguard_lookup(name) TO app;
SET password_encryption = 'scram-sha-256';
CREATE ROLE newapp LOGIN PASSWORD 'x';
";

/// A server with [`LOOKUP_FUNCTION`] and poolguard in front, looking users up through it with
/// answers cached for `cache`; `front`: more `[postgres]` lines.
fn looking_up(cache: &str, front: &str) -> (PgSandbox, Proxy) {
    let pg = server();
    superuser_sql(&pg, LOOKUP_FUNCTION);
    let spec = PoolSpec {
        front: format!(
            "auth_user = \"app\"\n\
             auth_query = \"SELECT username, password FROM public.poolguard_lookup($1)\"\n\
             auth_query_cache = \"{cache}\"\n{front}"
        ),
        ..PoolSpec::default()
    };
    let proxy = Proxy::start(&pg, &spec);
    (pg, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_created_on_the_server_logs_in_through_auth_query() {
    let (pg, proxy) = looking_up("1s", "");
    superuser_sql(
        &pg,
        "CREATE ROLE nopass LOGIN; CREATE TABLE t(x int); GRANT ALL ON t TO newapp; \
         SET password_encryption = 'md5'; CREATE ROLE oldmd5 LOGIN PASSWORD 'x'",
    );

    // No [[users]] entry for newapp: looked up, authenticated, and its pool opens three
    // server connections (three transactions held at once) by SCRAM passthrough.
    let mut clients = Vec::new();
    for _ in 0..3 {
        let c = connect_to(&conn_str(proxy.port, "newapp", "x"))
            .await
            .expect("newapp logs in through poolguard");
        c.batch_execute("BEGIN; INSERT INTO t VALUES (1)")
            .await
            .unwrap();
        clients.push(c);
    }
    let mut pids = Vec::new();
    for c in &clients {
        pids.push(scalar(c, "SELECT pg_backend_pid()").await.unwrap().unwrap());
    }
    pids.sort();
    pids.dedup();
    assert_eq!(
        pids.len(),
        3,
        "three transactions, three server connections"
    );
    let as_newapp = superuser_sql(
        &pg,
        &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = 'newapp' AND pid IN ({})",
            pids.join(",")
        ),
    );
    assert_eq!(as_newapp, "3", "the server connections are newapp's");
    for c in &clients {
        c.batch_execute("COMMIT").await.unwrap();
    }
    assert_eq!(superuser_sql(&pg, "SELECT count(*) FROM t"), "3");
    drop(clients);

    // Wrong password, unknown user, role without a password, and a role stored as md5 (which
    // cannot check this SCRAM door's exchange): the same refusal.
    for (user, password) in [
        ("newapp", "nope"),
        ("ghost", "x"),
        ("nopass", "x"),
        ("oldmd5", "x"),
    ] {
        let e = connect_to(&conn_str(proxy.port, user, password))
            .await
            .map(|_| ())
            .unwrap_err();
        assert_eq!(
            (code(&e), message(&e)),
            (
                "28P01".into(),
                format!("password authentication failed for user \"{user}\"")
            )
        );
    }

    // A password changed on the server counts at the next lookup (after auth_query_cache).
    superuser_sql(
        &pg,
        "SET password_encryption = 'scram-sha-256'; ALTER ROLE newapp PASSWORD 'y'",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let c = loop {
        match connect_to(&conn_str(proxy.port, "newapp", "y")).await {
            Ok(c) => break c,
            Err(e) if Instant::now() < deadline => {
                assert_eq!(code(&e), "28P01", "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the new password never worked: {e}"),
        }
    };
    assert_eq!(
        scalar(&c, "SELECT current_user").await.unwrap().as_deref(),
        Some("newapp")
    );
    let old = connect_to(&conn_str(proxy.port, "newapp", "x"))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(code(&old), "28P01");
    // New server connections log in with the new keys: end the pool's and ask again.
    drop(c);
    superuser_sql(
        &pg,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'newapp'",
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // A transaction that meets a terminated server fails; a later one gets a new server.
        let c = connect_to(&conn_str(proxy.port, "newapp", "y")).await;
        let answer = match &c {
            Ok(c) => scalar(c, "SELECT 42").await.ok().flatten(),
            Err(_) => None,
        };
        if answer.as_deref() == Some("42") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new server connection for newapp: {c:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server_connections_of(&pg, "newapp") >= 1);

    // A reload keeps the looked-up user's pool (its database still looks users up): the
    // auth_user's pool and newapp's are both updated in place.
    proxy.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !proxy.log().contains("configuration reloaded") {
        assert!(Instant::now() < deadline, "no reload: {}", proxy.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        proxy
            .log()
            .contains("2 pool(s) updated in place, 0 removed"),
        "{}",
        proxy.log()
    );
}

#[test]
fn stored_verifiers_and_md5_hashes_pass_through() {
    let pg = server();
    // Stored as SCRAM (vapp, vswitch), and as md5 (mapp, mlook).
    superuser_sql(
        &pg,
        "SET password_encryption = 'scram-sha-256'; \
         CREATE ROLE vapp LOGIN PASSWORD 'v'; CREATE ROLE vswitch LOGIN PASSWORD 's'; \
         SET password_encryption = 'md5'; \
         CREATE ROLE mapp LOGIN PASSWORD 'm'; CREATE ROLE mlook LOGIN PASSWORD 'l'",
    );
    let stored = |role: &str| {
        superuser_sql(
            &pg,
            &format!("SELECT rolpassword FROM pg_authid WHERE rolname = '{role}'"),
        )
    };
    let (vapp, vswitch, mapp) = (stored("vapp"), stored("vswitch"), stored("mapp"));
    assert!(vapp.starts_with("SCRAM-SHA-256$") && mapp.starts_with("md5"));
    let (su, su_password) = pg.superuser();
    let port = free_port();
    // An md5 door: md5 hashes check md5 answers; SCRAM verifiers are asked SCRAM anyway.
    // Every lookup runs in bank (auth_dbname), also for the fallback entry's databases.
    let spec = PoolSpec {
        front: format!("auth_method = \"md5\"\nauth_user = \"{su}\"\nauth_dbname = \"{DB}\""),
        extra: "[[databases]]\nname = \"*\"\nbackend = \"pg\"\npool_size = 2".into(),
        ..PoolSpec::default()
    };
    let config = format!(
        "{}\n[[users]]\nname = \"vapp\"\npassword = \"{vapp}\"\n\
         [[users]]\nname = \"vswitch\"\npassword = \"{vswitch}\"\n\
         [[users]]\nname = \"mapp\"\npassword = \"{mapp}\"\n\
         [[users]]\nname = \"{su}\"\npassword = \"{su_password}\"\n",
        config_for(&pg, port, &spec)
    );
    let proxy = Proxy::start_with(&config, port);

    // A configured SCRAM verifier, a configured md5 hash, and an md5 hash the default
    // auth_query (pg_authid, as a superuser) finds for a database the fallback entry serves:
    // each reaches the server as itself.
    for (user, password, db) in [
        ("vapp", "v", DB),
        ("mapp", "m", DB),
        ("mlook", "l", "postgres"),
    ] {
        let out = psql_on(
            proxy.port,
            user,
            password,
            db,
            "SELECT current_user || '@' || current_database()",
        );
        assert!(out.status.success(), "{user}: {}", stderr(&out));
        assert_eq!(stdout(&out), format!("{user}@{db}"));
        assert!(
            server_connections_of(&pg, user) >= 1,
            "{user} on the server"
        );
        let out = psql_on(proxy.port, user, "wrong", db, "SELECT 1");
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("password authentication failed"),
            "{}",
            stderr(&out)
        );
    }

    // The server switched to md5 for a user poolguard knows only by its SCRAM verifier: the
    // client's login is fine, the server login cannot be made, and the error says why.
    superuser_sql(
        &pg,
        "SET password_encryption = 'md5'; ALTER ROLE vswitch PASSWORD 's'",
    );
    let out = psql_as(proxy.port, "vswitch", "s", "SELECT 1");
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("\"vswitch\"") && err.contains("SCRAM on both sides"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_storm_costs_one_lookup_per_user() {
    let (pg, proxy) = looking_up("60s", "");
    let mut logins = tokio::task::JoinSet::new();
    for i in 0..30 {
        let (user, password) = if i % 3 == 0 {
            ("ghost", "x")
        } else {
            ("newapp", "x")
        };
        let conn = conn_str(proxy.port, user, password);
        logins.spawn(async move {
            match connect_to(&conn).await {
                Ok(c) => scalar(&c, "SELECT current_user").await.unwrap().unwrap(),
                Err(e) => code(&e),
            }
        });
    }
    let mut answers = Vec::new();
    while let Some(a) = logins.join_next().await {
        answers.push(a.unwrap());
    }
    answers.sort();
    assert_eq!(
        answers.iter().filter(|a| *a == "28P01").count(),
        10,
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|a| *a == "newapp").count(),
        20,
        "{answers:?}"
    );
    // Known and unknown users alike: one lookup each, the other logins shared it or its
    // cached answer.
    assert_eq!(
        superuser_sql(
            &pg,
            "SELECT name, count(*) FROM public.lookups GROUP BY name ORDER BY name"
        ),
        "ghost|1\nnewapp|1"
    );
    // The lookups ran on the auth_user's pool, within its size.
    assert!(server_connections_of(&pg, USER) <= 5);
}

/// The ClientKey is the same whether the client bound its SCRAM exchange to poolguard's
/// certificate or not: a client with `channel_binding=require` over TLS passes through too.
#[test]
fn channel_bound_clients_pass_through() {
    let pki = Pki::new();
    let (pg, proxy) = looking_up("5s", &pki.front("require"));
    let conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=newapp dbname={DB} sslmode=verify-full sslrootcert={} channel_binding=require",
        proxy.port,
        pki.file("ca.crt")
    );
    let out = std::process::Command::new("psql")
        .args(["-X", "-At", "-v", "ON_ERROR_STOP=1", &conninfo])
        .args(["-c", "SELECT current_user"])
        .env("PGPASSWORD", "x")
        .env("PGCONNECT_TIMEOUT", "20")
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "newapp");
    assert!(server_connections_of(&pg, "newapp") >= 1);
}
