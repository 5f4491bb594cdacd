//! Differential test of the PostgreSQL session-state scanner (`poolguard_proxy::pg::features`, re-exported for this test as `fuzzing::features`)
//! against PostgreSQL's own grammar (libpg_query, through the `pg_query` crate).
//!
//! For each SQL text, both sides name the session state it creates, as a set of labels
//! (`listen`, `temp`, `set:<name>`, ...). The scanner is a cheap lexer that must fail closed:
//! reporting state that is not there costs a reset or a pin, missing state leaks it to the next
//! client. So the test fails on any label the parser finds and the scanner misses, and prints
//! the scanner's over-reports for review.

use std::collections::BTreeSet;

use pg_query::NodeRef;
use poolguard_proxy::fuzzing::features::{scan, SessionFeature, TrackedSet};
use poolguard_proxy::fuzzing::is_reported;

/// `track_extra_parameters` for the test: tracked parameters are reported as `set:` too.
const EXTRAS: &[&str] = &["search_path", "work_mem"];

/// PostgreSQL's `CURSOR_OPT_HOLD` (parsenodes.h).
const CURSOR_OPT_HOLD: i32 = 0x0020;

/// The labels the scanner reports.
fn scanner_labels(sql: &str) -> BTreeSet<String> {
    let extras: Vec<String> = EXTRAS.iter().map(|s| s.to_string()).collect();
    let f = scan(sql, &extras);
    let mut out: BTreeSet<String> = f
        .features
        .iter()
        .map(|x| match x {
            SessionFeature::Listen => "listen".into(),
            SessionFeature::AdvisoryLock => "advisory".into(),
            SessionFeature::HoldCursor => "hold".into(),
            SessionFeature::TempTable => "temp".into(),
            SessionFeature::SqlPrepare => "prepare".into(),
            SessionFeature::Load => "load".into(),
            SessionFeature::UntrackedSet(n) if n.starts_with("ALL") => "set:all".into(),
            // The scanner keeps a quoted name's quotes and reads `SET SESSION AUTHORIZATION`
            // as the SESSION scope of `authorization`: both still report the SET, under
            // another label.
            SessionFeature::UntrackedSet(n) if n == "authorization" => {
                "set:session_authorization".into()
            }
            SessionFeature::UntrackedSet(n) => format!("set:{}", n.trim_matches('"')),
        })
        .collect();
    for t in &f.tracked {
        let (TrackedSet::Set { name, .. } | TrackedSet::Reset { name }) = t;
        out.insert(format!("set:{name}"));
    }
    if f.deallocate_all {
        out.insert("deallocate_all".into());
    }
    out
}

/// The labels PostgreSQL's parse tree implies; `None` if PostgreSQL refuses the text.
fn parser_labels(sql: &str) -> Option<BTreeSet<String>> {
    let tree = pg_query::parse(sql, 0).ok()?;
    let mut out = BTreeSet::new();
    for (node, _, _, _) in tree.protobuf.nodes() {
        match node {
            NodeRef::ListenStmt(_) => {
                out.insert("listen".into());
            }
            NodeRef::PrepareStmt(_) => {
                out.insert("prepare".into());
            }
            NodeRef::LoadStmt(_) => {
                out.insert("load".into());
            }
            NodeRef::DeclareCursorStmt(d) if d.options & CURSOR_OPT_HOLD != 0 => {
                out.insert("hold".into());
            }
            // Every way to make a temporary relation (CREATE TEMP TABLE / VIEW / SEQUENCE,
            // CREATE TEMP TABLE AS, SELECT INTO TEMP) names it with a temporary RangeVar.
            NodeRef::RangeVar(r) if r.relpersistence == "t" => {
                out.insert("temp".into());
            }
            NodeRef::SelectStmt(s)
                if s.into_clause
                    .as_ref()
                    .and_then(|i| i.rel.as_ref())
                    .is_some_and(|r| r.relpersistence == "t") =>
            {
                out.insert("temp".into());
            }
            NodeRef::CreateSeqStmt(s)
                if s.sequence.as_ref().is_some_and(|r| r.relpersistence == "t") =>
            {
                out.insert("temp".into());
            }
            NodeRef::DiscardStmt(d)
                if d.target == pg_query::protobuf::DiscardMode::DiscardAll as i32 =>
            {
                out.insert("deallocate_all".into());
            }
            NodeRef::DiscardStmt(d)
                if d.target == pg_query::protobuf::DiscardMode::DiscardTemp as i32 => {}
            NodeRef::DeallocateStmt(d) if d.isall => {
                out.insert("deallocate_all".into());
            }
            NodeRef::VariableSetStmt(s) if !s.is_local => {
                use pg_query::protobuf::VariableSetKind as K;
                let kind = s.kind;
                let name = s.name.to_ascii_lowercase();
                if kind == K::VarResetAll as i32 {
                    out.insert("set:all".into());
                } else if kind == K::VarSetMulti as i32 {
                    // SET TRANSACTION ... is transaction-scoped; SET SESSION CHARACTERISTICS
                    // changes the session's defaults.
                    if name == "session characteristics" {
                        out.insert("set:characteristics".into());
                    }
                } else if !is_reported(&name) {
                    out.insert(format!("set:{name}"));
                }
            }
            _ => {}
        }
    }
    for f in tree.functions() {
        let f = f.to_ascii_lowercase();
        // Session-level advisory locks; the _xact_ forms end with the transaction.
        if f.contains("advisory_lock") && !f.contains("xact") {
            out.insert("advisory".into());
        }
    }
    Some(out)
}

/// Statements chosen to hit the scanner's lexical corners: every session feature, each SET
/// form, comments, quotes, escapes, dollar quotes and several statements in one text.
const CASES: &[&str] = &[
    // SET / RESET in every scope.
    "SET statement_timeout = 5",
    "SET statement_timeout TO 5",
    "SET SESSION statement_timeout = 5",
    "SET LOCAL statement_timeout = 5",
    "set local search_path = x",
    "SET search_path TO myschema, public",
    "SET search_path = DEFAULT",
    "SET work_mem TO '64MB'",
    "SET TimeZone = 'UTC'",
    "SET TIME ZONE 'UTC'",
    "SET application_name = 'x'",
    "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    "SET CONSTRAINTS ALL DEFERRED",
    "SET ROLE postgres",
    "SET SESSION AUTHORIZATION DEFAULT",
    "SET \"statement_timeout\" = 5",
    "SET\tstatement_timeout=5",
    "SET\nstatement_timeout = 5",
    "RESET statement_timeout",
    "RESET search_path",
    "RESET ALL",
    "reset all;",
    "RESET TimeZone",
    // Temporary relations.
    "CREATE TEMP TABLE t(x int)",
    "CREATE TEMPORARY TABLE t(x int)",
    "CREATE GLOBAL TEMPORARY TABLE t(x int)",
    "CREATE LOCAL TEMP TABLE t(x int)",
    "CREATE TEMP TABLE t AS SELECT 1",
    "CREATE TEMP VIEW v AS SELECT 1",
    "CREATE TEMP SEQUENCE s",
    "SELECT 1 AS x INTO TEMP t",
    "SELECT 1 AS x INTO TEMPORARY TABLE t",
    "CREATE TABLE t(x int)",
    "CREATE UNLOGGED TABLE t(x int)",
    "CREATE TABLE temp(x int)",
    "SELECT * FROM temp",
    // LISTEN, PREPARE, LOAD, cursors.
    "LISTEN chan",
    "UNLISTEN chan",
    "NOTIFY chan",
    "PREPARE p AS SELECT 1",
    "PREPARE p(int) AS SELECT $1",
    "EXECUTE p",
    "DEALLOCATE p",
    "DEALLOCATE ALL",
    "DEALLOCATE PREPARE ALL",
    "LOAD 'auto_explain'",
    "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
    "DECLARE c NO SCROLL CURSOR WITH HOLD FOR SELECT 1",
    "DECLARE c CURSOR WITHOUT HOLD FOR SELECT 1",
    "DECLARE c CURSOR FOR SELECT 1",
    "BEGIN; DECLARE c CURSOR WITH HOLD FOR SELECT 1; COMMIT",
    // Advisory locks.
    "SELECT pg_advisory_lock(1)",
    "SELECT pg_try_advisory_lock(1, 2)",
    "SELECT pg_advisory_lock_shared(1)",
    "SELECT pg_catalog.pg_advisory_lock(1)",
    "SELECT PG_ADVISORY_LOCK(1)",
    "SELECT pg_advisory_xact_lock(1)",
    "SELECT pg_advisory_unlock(1)",
    "SELECT x FROM t WHERE pg_try_advisory_lock(id)",
    // DISCARD.
    "DISCARD ALL",
    "DISCARD PLANS",
    "DISCARD TEMP",
    "DISCARD SEQUENCES",
    // Comments.
    "-- LISTEN x\nSELECT 1",
    "/* LISTEN x */ SELECT 1",
    "/* c */ LISTEN x",
    "-- c\nLISTEN x",
    "/* a */ /* b */ SET statement_timeout = 1",
    "SELECT 1 /* ; LISTEN x */",
    "SELECT 1 -- ; LISTEN x",
    "SELECT 1; -- c\nLISTEN x",
    "SELECT 1; /* c */ LISTEN x",
    // Quotes and escapes.
    "SELECT 'LISTEN x; SET a = 1'",
    "SELECT 'it''s'; LISTEN x",
    "SELECT E'\\''; LISTEN x",
    "SELECT E'\\\\'; LISTEN x",
    "SELECT \"a;b\" FROM t; LISTEN x",
    "SELECT \"x\"\"y\"; LISTEN q",
    "SELECT U&'\\0041'; LISTEN x",
    "SELECT 'a' 'b'; LISTEN x",
    // Dollar quotes.
    "SELECT $$ LISTEN x; $$",
    "SELECT $$ ; $$; LISTEN x",
    "SELECT $tag$ $$ ; $tag$; LISTEN x",
    "SELECT $a$ ; $b$ ; $a$; LISTEN x",
    "DO $$ BEGIN PERFORM pg_advisory_lock(1); END $$",
    "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql; LISTEN x",
    "PREPARE p AS SELECT $1; LISTEN x",
    "SELECT 1 AS a$b; LISTEN x",
    "SELECT 1 AS a$b$; LISTEN x",
    "SELECT 1 AS x$y$z; LISTEN x",
    // Several statements.
    "SELECT 1; LISTEN x",
    "SELECT 1;LISTEN x;SET statement_timeout=1",
    "BEGIN; SET LOCAL work_mem = '1MB'; COMMIT",
    "LISTEN a; LISTEN b; UNLISTEN a",
    "SELECT 1;;; LISTEN x",
    "SET search_path TO a; RESET search_path",
    "CREATE TABLE t(x int); CREATE TEMP TABLE u(x int)",
    "VALUES (1); PREPARE p AS SELECT 1",
    "WITH x AS (SELECT 1) SELECT * INTO TEMP t FROM x",
    "EXPLAIN SELECT pg_advisory_lock(1)",
];

#[test]
fn scanner_never_misses_what_the_parser_sees() {
    let mut misses = Vec::new();
    let mut over = Vec::new();
    let mut refused = Vec::new();
    for sql in CASES {
        let Some(parser) = parser_labels(sql) else {
            refused.push(*sql);
            continue;
        };
        let scanner = scanner_labels(sql);
        let missed: Vec<&String> = parser.difference(&scanner).collect();
        let extra: Vec<&String> = scanner.difference(&parser).collect();
        if !missed.is_empty() {
            misses.push(format!(
                "{sql:?}: scanner missed {missed:?} (found {scanner:?})"
            ));
        }
        if !extra.is_empty() {
            over.push(format!("{sql:?}: scanner over-reports {extra:?}"));
        }
    }
    eprintln!(
        "{} cases, {} refused by PostgreSQL's parser: {refused:?}",
        CASES.len(),
        refused.len()
    );
    eprintln!("over-reports (fail closed, acceptable):");
    for o in &over {
        eprintln!("  {o}");
    }
    assert!(misses.is_empty(), "false negatives:\n{}", misses.join("\n"));
}
