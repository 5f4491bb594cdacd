#!/usr/bin/env python3
"""psycopg 3 unnamed statements (prepare_threshold=None) through poolguard, with pipelines that
fail part-way: when an early statement of a pipeline fails, the server skips the rest of that
batch, including its Parse messages, so whatever poolguard remembers about the server's unnamed
statement must not be trusted afterwards.

Usage: pg_psycopg_unnamed.py URL. Prints OK on success; a failed check raises.
"""
import sys
import threading

import psycopg
from psycopg import errors

URL = sys.argv[1]
THREADS = int(sys.argv[2]) if len(sys.argv) > 2 else 12
ROUNDS = 40
failures = []


def worker(i: int) -> None:
    try:
        with psycopg.connect(URL, prepare_threshold=None, autocommit=True) as conn:
            for r in range(ROUNDS):
                # Texts shared by every thread, so servers' unnamed statements get reused.
                got = conn.execute("SELECT %s::int + %s::int", (i, r)).fetchone()[0]
                assert got == i + r, ("sum", i, r, got)
                got = conn.execute("SELECT %s::text || '/' || %s::text", (i, r)).fetchone()[0]
                assert got == f"{i}/{r}", ("concat", got)
                if r % 5 == 0:
                    # A pipeline whose first statement fails: the server skips the second one's
                    # Parse. Then the second text again on its own, twice.
                    failed = False
                    try:
                        with conn.pipeline() as p:
                            conn.execute("SELECT 1 / %s::int", (0,))
                            conn.execute("SELECT %s::int * 1000", (i,))
                            p.sync()
                    except errors.DivisionByZero:
                        failed = True
                    assert failed, "the pipeline did not fail"
                    for _ in range(2):
                        got = conn.execute("SELECT %s::int * 1000", (i,)).fetchone()[0]
                        assert got == i * 1000, ("after pipeline error", i, got)
                    # A pipeline that succeeds: results in order, each its own.
                    with conn.pipeline():
                        c1 = conn.execute("SELECT %s::int + %s::int", (i, 1))
                        c2 = conn.execute("SELECT %s::int + %s::int", (i, 2))
                        c3 = conn.execute("SELECT %s::text || '/' || %s::text", (i, r))
                    assert c1.fetchone()[0] == i + 1
                    assert c2.fetchone()[0] == i + 2
                    assert c3.fetchone()[0] == f"{i}/{r}"
    except Exception as e:  # collected and reported by the main thread
        failures.append(f"thread {i}: {e!r}")


threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
for t in threads:
    t.start()
for t in threads:
    t.join()
if failures:
    raise SystemExit("\n".join(failures[:10]))
print("OK")
