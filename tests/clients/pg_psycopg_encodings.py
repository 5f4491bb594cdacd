#!/usr/bin/env python3
"""psycopg 3 with a client_encoding other than UTF-8, through poolguard (transaction mode).

Usage: pg_psycopg_encodings.py URL ENCODING TEXT ID

Inserts TEXT (given as UTF-8 on the command line; psycopg sends it in ENCODING) three ways:
a simple query with the text in the SQL, an unnamed extended query with the text both in the
SQL and as a parameter, and a named prepared statement (prepare=True) whose SQL holds the text.
Reads each back and checks it. Prints the rows it read as "id|text" lines, then OK.
"""

import sys

import psycopg


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main(url, encoding, text, first_id):
    first_id = int(first_id)
    with psycopg.connect(url, prepare_threshold=None, connect_timeout=20,
                         client_encoding=encoding) as conn:
        conn.autocommit = True
        cur = conn.cursor()
        cur.execute("SHOW client_encoding")
        shown = cur.fetchone()[0]
        check(shown.replace("-", "").upper() == encoding.replace("-", "").upper(),
              f"client_encoding is {shown}")
        quoted = text.replace("'", "''")
        # Simple query protocol, the text inside the SQL.
        cur.execute(f"INSERT INTO words VALUES ({first_id}, '{quoted}')")
        # Extended protocol, unnamed statement, the text in the SQL and as a parameter.
        cur.execute(f"INSERT INTO words SELECT %s, %s WHERE '{quoted}' = %s",
                    (first_id + 1, text, text))
        # A named prepared statement (Parse with a name, then Bind/Execute), in a transaction.
        with conn.transaction():
            cur.execute(f"INSERT INTO words SELECT %s, '{quoted}'", (first_id + 2,),
                        prepare=True)
            cur.execute(f"SELECT count(*) FROM words WHERE w = '{quoted}'", prepare=True)
            check(cur.fetchone()[0] >= 3, "named statement sees the rows")
        cur.execute("SELECT id, w FROM words WHERE id BETWEEN %s AND %s ORDER BY id",
                    (first_id, first_id + 2), prepare=True)
        rows = cur.fetchall()
        check(rows == [(first_id + i, text) for i in range(3)], f"read back {rows!r}")
        for r in rows:
            print(f"{r[0]}|{r[1]}")
    print("OK")


if __name__ == "__main__":
    main(*sys.argv[1:])
