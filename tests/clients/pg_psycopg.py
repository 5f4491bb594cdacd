#!/usr/bin/env python3
"""psycopg 3 through poolguard in transaction mode: what a Python service really does.

Usage: pg_psycopg.py URL

The connection uses prepare_threshold=None, so every parameterised query is an unnamed
Parse/Bind (named statements are exercised by pg_psycopg_prepared.py).
Prints OK and exits 0 on success; any failed check raises (non-zero exit, traceback on stderr).
"""

import sys

import psycopg
from psycopg import errors


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main(url):
    with psycopg.connect(url, prepare_threshold=None, connect_timeout=20) as conn:
        conn.autocommit = True
        cur = conn.cursor()

        # Plain round trip and server identity.
        cur.execute("SELECT 1 + 1")
        check(cur.fetchone() == (2,), "SELECT 1 + 1")
        cur.execute("SELECT current_user, current_database()")
        check(cur.fetchone() == ("app", "bank"), "current_user/current_database")

        # DDL, then parameterised inserts (extended protocol) and a read back.
        cur.execute("DROP TABLE IF EXISTS py_items")
        cur.execute(
            "CREATE TABLE py_items (id int PRIMARY KEY, name text, amount numeric, note text)"
        )
        rows = [(i, f"item-{i}", i * 1.5, None if i % 3 == 0 else f"n{i}") for i in range(1, 21)]
        cur.executemany(
            "INSERT INTO py_items (id, name, amount, note) VALUES (%s, %s, %s, %s)", rows
        )
        cur.execute("SELECT count(*), sum(id) FROM py_items")
        check(cur.fetchone() == (20, 210), "count/sum after executemany")
        cur.execute("SELECT name, note FROM py_items WHERE id = %s", (3,))
        check(cur.fetchone() == ("item-3", None), "row 3 with NULL note")
        cur.execute("SELECT name FROM py_items WHERE id = ANY(%s) ORDER BY id", ([2, 4, 6],))
        check([r[0] for r in cur.fetchall()] == ["item-2", "item-4", "item-6"], "ANY(array)")

        # A transaction that commits.
        with conn.transaction():
            cur.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (100, "committed"))
            cur.execute("UPDATE py_items SET amount = amount + %s WHERE id = %s", (10, 1))
        cur.execute("SELECT name FROM py_items WHERE id = 100")
        check(cur.fetchone() == ("committed",), "committed row visible")
        cur.execute("SELECT amount FROM py_items WHERE id = 1")
        check(float(cur.fetchone()[0]) == 11.5, "committed update visible")

        # A transaction that rolls back (explicitly, via psycopg's Rollback).
        with conn.transaction():
            cur.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (101, "rolled-back"))
            cur.execute("DELETE FROM py_items WHERE id = %s", (2,))
            raise psycopg.Rollback()
        cur.execute("SELECT count(*) FROM py_items WHERE id IN (101, 2)")
        check(cur.fetchone() == (1,), "rollback undid the insert and the delete")

        # The same with the non-autocommit style: BEGIN implicit, then conn.rollback().
        conn.autocommit = False
        cur.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (102, "also-rolled-back"))
        conn.rollback()
        cur.execute("SELECT count(*) FROM py_items WHERE id = 102")
        check(cur.fetchone() == (0,), "conn.rollback undid the insert")
        conn.commit()

        # A server error inside a transaction: the transaction is aborted, then rolled back,
        # and the connection keeps working.
        cur.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (103, "before-error"))
        try:
            cur.execute("SELECT 1 / %s", (0,))
            raise AssertionError("division by zero did not raise")
        except errors.DivisionByZero as e:
            check(e.sqlstate == "22012", f"sqlstate {e.sqlstate}")
        check(
            conn.info.transaction_status == psycopg.pq.TransactionStatus.INERROR,
            f"transaction status after error: {conn.info.transaction_status}",
        )
        try:
            cur.execute("SELECT 1")
            raise AssertionError("a statement in an aborted transaction did not raise")
        except errors.InFailedSqlTransaction as e:
            check(e.sqlstate == "25P02", f"sqlstate {e.sqlstate}")
        conn.rollback()
        cur.execute("SELECT count(*) FROM py_items WHERE id = 103")
        check(cur.fetchone() == (0,), "the errored transaction's insert was rolled back")
        conn.commit()
        conn.autocommit = True

        # A unique violation outside a transaction, then the connection still works.
        try:
            cur.execute("INSERT INTO py_items (id, name) VALUES (%s, %s)", (1, "dup"))
            raise AssertionError("duplicate key did not raise")
        except errors.UniqueViolation as e:
            check(e.sqlstate == "23505", f"sqlstate {e.sqlstate}")
        cur.execute("SELECT 42")
        check(cur.fetchone() == (42,), "connection usable after an error")

        # COPY FROM STDIN, then COPY TO STDOUT.
        cur.execute("DROP TABLE IF EXISTS py_copy")
        cur.execute("CREATE TABLE py_copy (id int, label text, v float8)")
        copied = [(i, None if i % 7 == 0 else f"lbl\t{i}\nx", i / 4) for i in range(1000)]
        with cur.copy("COPY py_copy (id, label, v) FROM STDIN") as cp:
            for r in copied:
                cp.write_row(r)
        cur.execute("SELECT count(*), sum(id), count(label) FROM py_copy")
        check(
            cur.fetchone() == (1000, sum(range(1000)), 1000 - len(range(0, 1000, 7))),
            "COPY FROM STDIN contents",
        )
        out = []
        with cur.copy("COPY (SELECT id, label, v FROM py_copy ORDER BY id) TO STDOUT") as cp:
            cp.set_types(["int4", "text", "float8"])
            for r in cp.rows():
                out.append(tuple(r))
        check(out == copied, "COPY TO STDOUT round trip")
        # COPY in a transaction that rolls back.
        with conn.transaction():
            with cur.copy("COPY py_copy (id) FROM STDIN") as cp:
                cp.write_row((5000,))
            raise psycopg.Rollback()
        cur.execute("SELECT count(*) FROM py_copy WHERE id = 5000")
        check(cur.fetchone() == (0,), "COPY inside a rolled back transaction")

        # NULLs, unicode and odd values round trip through parameters.
        values = [
            None,
            "",
            "héllo wörld",
            "日本語テキスト",
            "emoji 🐘🚀",
            "quote ' and \" and \\ backslash",
            "x" * 100_000,
        ]
        cur.execute("DROP TABLE IF EXISTS py_text")
        cur.execute("CREATE TABLE py_text (i int, t text, b bytea)")
        for i, v in enumerate(values):
            b = None if v is None else v.encode("utf-8")
            cur.execute("INSERT INTO py_text VALUES (%s, %s, %s)", (i, v, b))
        cur.execute("SELECT t, b FROM py_text ORDER BY i")
        got = cur.fetchall()
        check([r[0] for r in got] == values, "text round trip")
        check(
            [None if r[1] is None else bytes(r[1]).decode("utf-8") for r in got] == values,
            "bytea round trip",
        )
        cur.execute("SELECT %s::text IS NULL, %s::int IS NULL", (None, None))
        check(cur.fetchone() == (True, True), "NULL parameters")
        cur.execute("SELECT %s || '✓'", ("ünïcødé",))
        check(cur.fetchone() == ("ünïcødé✓",), "unicode concatenation")

        # Many small parameterised statements, each its own transaction on the proxy.
        total = 0
        for i in range(200):
            cur.execute("SELECT %s::int * 2", (i,))
            total += cur.fetchone()[0]
        check(total == 2 * sum(range(200)), "200 small statements")

        cur.execute("DROP TABLE py_items, py_copy, py_text")

    # A second connection sees the committed state (and nothing the first left open).
    with psycopg.connect(url, prepare_threshold=None, autocommit=True, connect_timeout=20) as c2:
        row = c2.execute(
            "SELECT count(*) FROM pg_tables WHERE tablename IN ('py_items', 'py_copy', 'py_text')"
        ).fetchone()
        check(row == (0,), "tables dropped")

    print("OK")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: pg_psycopg.py URL")
    main(sys.argv[1])
