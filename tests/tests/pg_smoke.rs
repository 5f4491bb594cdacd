//! First contact: psql through poolguard in transaction and session mode.

use poolguard_e2e::*;

#[test]
fn psql_queries_through_transaction_mode() {
    let pg = sandbox(30);
    let proxy = Proxy::start(&pg, &PoolSpec::default());
    let out = psql(proxy.port, "SELECT 1 + 1");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2");
    let out = psql(
        proxy.port,
        "CREATE TABLE t(x int); BEGIN; INSERT INTO t VALUES (1),(2); COMMIT; SELECT sum(x) FROM t",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "3");
}
