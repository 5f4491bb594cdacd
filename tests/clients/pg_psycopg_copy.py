#!/usr/bin/env python3
"""psycopg 3 `cursor.copy()` through poolguard (transaction mode): text and binary, both
directions, errors part-way in both directions, COPY inside an explicit transaction. After each
error the same connection keeps working.

Usage: pg_psycopg_copy.py URL

Expects an empty table `c (id int PRIMARY KEY, name text)`. Leaves rows 1..6 and 101..103 in it.
Prints OK and exits 0 on success; any failed check raises.
"""

import sys

import psycopg
from psycopg import errors


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def alive(cur):
    cur.execute("SELECT 1, pg_current_xact_id_if_assigned()")
    check(cur.fetchone() == (1, None), "connection usable, no transaction left open")


def main(url):
    with psycopg.connect(url, prepare_threshold=None, connect_timeout=20) as conn:
        conn.autocommit = True
        cur = conn.cursor()

        # COPY FROM STDIN, text.
        with cur.copy("COPY c (id, name) FROM STDIN") as copy:
            for row in [(1, "one"), (2, "two"), (3, "three")]:
                copy.write_row(row)
        # COPY FROM STDIN, binary.
        with cur.copy("COPY c (id, name) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text"])
            for row in [(4, "four"), (5, "five"), (6, "six")]:
                copy.write_row(row)
        alive(cur)

        # COPY TO STDOUT, text and binary.
        with cur.copy("COPY (SELECT id, name FROM c ORDER BY id) TO STDOUT") as copy:
            rows = [tuple(r) for r in copy.rows()]
        check(rows == [("1", "one"), ("2", "two"), ("3", "three"), ("4", "four"),
                       ("5", "five"), ("6", "six")], f"text copy out {rows!r}")
        with cur.copy("COPY (SELECT id, name FROM c ORDER BY id) TO STDOUT (FORMAT BINARY)") as copy:
            copy.set_types(["int4", "text"])
            rows = list(copy.rows())
        check(rows[0] == (1, "one") and len(rows) == 6, f"binary copy out {rows!r}")

        # A bad row in the middle of COPY FROM: the server refuses it, nothing is kept.
        try:
            with cur.copy("COPY c (id, name) FROM STDIN") as copy:
                for i in range(50, 5000):
                    copy.write(f"{i}\tok\n" if i != 60 else "not-a-number\tbad\n")
            raise AssertionError("a bad row was accepted")
        except errors.InvalidTextRepresentation:
            pass
        alive(cur)
        # The client gives up part-way (CopyFail).
        try:
            with cur.copy("COPY c (id, name) FROM STDIN") as copy:
                copy.write_row((70, "seventy"))
                raise RuntimeError("client gave up")
        except (RuntimeError, errors.QueryCanceled):
            pass
        alive(cur)

        # COPY TO STDOUT of a query that fails part-way, text and binary.
        for fmt in ["", " (FORMAT BINARY)"]:
            try:
                with cur.copy(
                    "COPY (SELECT 10 / (5 - g) FROM generate_series(1, 10) g) TO STDOUT" + fmt
                ) as copy:
                    for _ in copy:
                        pass
                raise AssertionError("division by zero not reported")
            except errors.DivisionByZero:
                pass
            alive(cur)

        # COPY inside an explicit transaction: committed with it, and rolled back with it.
        with conn.transaction():
            with cur.copy("COPY c (id, name) FROM STDIN") as copy:
                copy.write_row((101, "a"))
                copy.write_row((102, "b"))
            with cur.copy("COPY c (id, name) FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["int4", "text"])
                copy.write_row((103, "c"))
        try:
            with conn.transaction():
                with cur.copy("COPY c (id, name) FROM STDIN") as copy:
                    copy.write_row((104, "d"))
                # An error part-way through a COPY inside the transaction.
                with cur.copy("COPY c (id, name) FROM STDIN") as copy:
                    copy.write("105\tok\nbad\trow\n106\tok\n")
            raise AssertionError("a bad row was accepted in a transaction")
        except errors.InvalidTextRepresentation:
            pass
        alive(cur)
        cur.execute("SELECT count(*) FROM c WHERE id > 100")
        check(cur.fetchone() == (3,), "the rolled-back COPY left nothing")
        cur.execute("SELECT count(*) FROM c")
        check(cur.fetchone() == (9,), "rows after all copies")
    print("OK")


if __name__ == "__main__":
    main(sys.argv[1])
