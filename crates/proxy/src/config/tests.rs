//! The configuration's parsing and validation, on sample files.

use super::*;

const GOOD: &str = r#"
[admin]
listen = "127.0.0.1:9930"
[postgres]
listen = "127.0.0.1:6432"
[[backends]]
name = "pg"
protocol = "postgres"
hosts = ["127.0.0.1:5432"]
max_connections = 40
[[databases]]
name = "bank"
backend = "pg"
pool_size = 10
max_overflow = 5
idle_timeout = "1m"
[[users]]
name = "app"
password = "app-secret"
[limits]
acquire_timeout = "2s"
query_timeout = "0s"
"#;

#[test]
fn passwords_come_from_a_file_or_the_environment_never_two_places() {
    let dir = tempfile_dir();
    let file = dir.join("app.password");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let with = |user: &str| GOOD.replace("password = \"app-secret\"", user);
    let c = Config::parse(&with(&format!(
        "password_file = {:?}",
        file.display().to_string()
    )))
    .unwrap();
    assert_eq!(c.user("app").unwrap().password, "from-a-file");
    // A variable only this test sets.
    std::env::set_var("POOLGUARD_TEST_PASSWORD_ENV_7c1", "from-the-env");
    let c = Config::parse(&with("password_env = \"POOLGUARD_TEST_PASSWORD_ENV_7c1\"")).unwrap();
    assert_eq!(c.user("app").unwrap().password, "from-the-env");
    for (text, key) in [
        (
            with("password_env = \"POOLGUARD_TEST_PASSWORD_UNSET_7c1\""),
            "users[0].password_env",
        ),
        (
            with("password_file = \"/nonexistent/poolguard\""),
            "users[0].password_file",
        ),
        (with(""), "users[0].password"),
        (
            with("password = \"a\"\npassword_env = \"X\""),
            "users[0].password",
        ),
    ] {
        let e = Config::parse(&text).unwrap_err().to_string();
        assert!(e.contains(key), "{e}");
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("poolguard-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn parses_the_contract_example() {
    let c = Config::parse(GOOD).unwrap();
    let db = c.database(Protocol::Postgres, "bank").unwrap();
    assert_eq!(db.server_database, "bank");
    assert_eq!(db.pool_mode, PoolMode::Transaction);
    assert_eq!(db.limits.acquire_timeout, Duration::from_secs(2));
    assert_eq!(db.limits.idle_timeout, Some(Duration::from_secs(60)));
    assert_eq!(db.limits.query_timeout, None);
    assert_eq!(
        db.limits.idle_in_transaction_timeout,
        Some(Duration::from_secs(60))
    );
}

fn err(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

#[test]
fn unknown_key_is_named() {
    let e = err(&GOOD.replace("pool_size = 10", "pool_sise = 10"));
    assert!(e.contains("pool_sise"), "{e}");
}

#[test]
fn bad_duration_is_named() {
    let e = err(&GOOD.replace("\"2s\"", "\"2 parsecs\""));
    assert!(e.contains("limits.acquire_timeout"), "{e}");
}

#[test]
fn missing_backend_is_named() {
    let e = err(&GOOD.replace("backend = \"pg\"", "backend = \"nope\""));
    assert!(
        e.contains("\"nope\"") && e.contains("databases[0].backend"),
        "{e}"
    );
}

#[test]
fn pool_larger_than_budget_refused_with_arithmetic() {
    let e = err(&GOOD.replace("max_overflow = 5", "max_overflow = 35"));
    assert!(e.contains("10 + max_overflow 35 = 45"), "{e}");
}

#[test]
fn mysql_front_door_keys() {
    let text = GOOD.replace(
        "[[backends]]",
        "[mysql]\nlisten = \"127.0.0.1:6033\"\nmax_allowed_packet = \"16MiB\"\nallow_local_infile = true\n[[backends]]",
    );
    let c = Config::parse(&text).unwrap();
    let m = c.mysql.unwrap();
    assert_eq!(m.max_allowed_packet, 16 << 20);
    assert!(m.allow_local_infile);
    assert_eq!(m.auth, MysqlAuth::NativePassword);
    assert_eq!(c.mysql_listen, Some(m.listen));
    let e = err(&text.replace("\"16MiB\"", "\"16 parsecs\""));
    assert!(e.contains("mysql.max_allowed_packet"), "{e}");
    let e = err(&text.replace(
        "allow_local_infile = true",
        "auth_method = \"sha256_password\"",
    ));
    assert!(e.contains("mysql.auth_method"), "{e}");
    assert_eq!(parse_size("k", &RawSize::Bytes(1000)).unwrap(), 1000);
    assert_eq!(
        parse_size("k", &RawSize::Text("2G".into())).unwrap(),
        2 << 30
    );
}

#[test]
fn upgrade_socket_is_a_path_and_not_empty() {
    let with = |general: &str| {
        Config::parse(&format!(
            "{general}\n[postgres]\nlisten = \"127.0.0.1:6432\"\n[[backends]]\nname = \"pg\"\nprotocol = \"postgres\"\nhosts = [\"127.0.0.1:5432\"]\nmax_connections = 10\n[[databases]]\nname = \"bank\"\nbackend = \"pg\"\n[[users]]\nname = \"app\"\npassword = \"pw\"\n"
        ))
    };
    let c = with("[general]\nupgrade_socket = \"/run/poolguard/upgrade.sock\"").unwrap();
    assert_eq!(
        c.upgrade_socket.as_deref(),
        Some(std::path::Path::new("/run/poolguard/upgrade.sock"))
    );
    assert!(with("").unwrap().upgrade_socket.is_none());
    let e = with("[general]\nupgrade_socket = \" \"")
        .unwrap_err()
        .to_string();
    assert!(e.contains("general.upgrade_socket"), "{e}");
}

#[test]
fn builtin_default_is_valid() {
    let c = Config::builtin_default("pw\"with quote");
    assert_eq!(c.users[0].password, "pw\"with quote");
}

#[test]
fn a_mysql_client_naming_no_database_gets_the_fallback_without_one() {
    let text = GOOD.replace("[[users]]", "[mysql]\nlisten = \"127.0.0.1:3307\"\n[[backends]]\nname = \"maria\"\nprotocol = \"mysql\"\nhosts = [\"127.0.0.1:3306\"]\nmax_connections = 10\n[[databases]]\nname = \"*\"\nbackend = \"maria\"\npool_size = 2\n[[users]]");
    let c = Config::parse(&text).unwrap();
    let none = c.database(Protocol::Mysql, "").expect("the fallback");
    assert_eq!(
        (none.name.as_str(), none.server_database.as_str()),
        ("*", "")
    );
    // The pool's own name finds the same entry again (a reload keeps its pools).
    let again = c.database(Protocol::Mysql, "*").unwrap();
    assert_eq!(again.server_database, "");
    assert_eq!(
        c.database(Protocol::Mysql, "shop").unwrap().server_database,
        "shop"
    );
    // PostgreSQL always names a database; a fallback naming one server database keeps it.
    assert!(c.database(Protocol::Postgres, "").is_none());
    let fixed =
        Config::parse(&text.replace("pool_size = 2", "pool_size = 2\nserver_database = \"one\""))
            .unwrap();
    assert_eq!(
        fixed.database(Protocol::Mysql, "").unwrap().server_database,
        "one"
    );
}
