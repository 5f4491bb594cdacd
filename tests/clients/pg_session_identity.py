#!/usr/bin/env python3
"""psycopg 3 through poolguard in session mode: the client owns its server, so it must see that
server's identity and parameters exactly.

Usage: pg_session_identity.py URL

Checks: BackendKeyData's process id equals pg_backend_pid(); a NOTIFY the client sends to itself
names that process; standard_conforming_strings set at startup (options) and by SET is what the
server uses and what ParameterStatus tells the client; a cancel request still reaches the
running query through poolguard. Prints OK and exits 0; a failed check raises.
"""

import sys
import threading

import psycopg
from psycopg import errors


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def main(url):
    with psycopg.connect(url, connect_timeout=20, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("SELECT pg_backend_pid()")
        server_pid = cur.fetchone()[0]
        check(conn.info.backend_pid == server_pid,
              f"BackendKeyData pid {conn.info.backend_pid} != pg_backend_pid() {server_pid}")

        cur.execute("LISTEN identity_check")
        cur.execute("NOTIFY identity_check, 'hello'")
        got = list(conn.notifies(timeout=10, stop_after=1))
        check(len(got) == 1 and got[0].payload == "hello", f"notification: {got}")
        check(got[0].pid == server_pid, f"NOTIFY sender {got[0].pid} != {server_pid}")

        cur.execute("SET standard_conforming_strings = off")
        check(conn.info.parameter_status("standard_conforming_strings") == "off",
              "ParameterStatus after SET")
        cur.execute("SHOW standard_conforming_strings")
        check(cur.fetchone()[0] == "off", "the server's value after SET")
        # With it off, a backslash in a plain string escapes: the server's reading.
        cur.execute("SELECT length('a\\\\b')")
        check(cur.fetchone()[0] == 3, "the server reads strings as the flag says")

        # A cancel still routes through poolguard to this server: sent once a second session
        # sees the query running (an event, not a delay).
        def cancel_when_running():
            with psycopg.connect(url, connect_timeout=20, autocommit=True) as watcher:
                for _ in range(600):
                    row = watcher.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'"
                        " AND query LIKE 'SELECT pg_sleep%%'", (server_pid,)).fetchone()
                    if row[0] == 1:
                        conn.cancel()
                        return
                    watcher.execute("SELECT pg_sleep(0.05)")

        canceller = threading.Thread(target=cancel_when_running)
        canceller.start()
        try:
            cur.execute("SELECT pg_sleep(60)")
            raise AssertionError("pg_sleep was not cancelled")
        except errors.QueryCanceled:
            pass
        finally:
            canceller.join()
        cur.execute("SELECT 1")
        check(cur.fetchone() == (1,), "the session goes on after the cancel")

    # Set at startup, through the options parameter.
    with psycopg.connect(url, connect_timeout=20, autocommit=True,
                         options="-c standard_conforming_strings=off") as conn:
        cur = conn.cursor()
        cur.execute("SHOW standard_conforming_strings")
        server = cur.fetchone()[0]
        told = conn.info.parameter_status("standard_conforming_strings")
        check(server == told == "off", f"startup option: server {server}, told {told}")
    print("OK")


def transaction_mode(url):
    """Transaction mode: LISTEN pins the client; its own NOTIFYs name the process id its
    BackendKeyData gave (poolguard's), as they name the client's own process on a server."""
    with psycopg.connect(url, connect_timeout=20, autocommit=True) as conn:
        cur = conn.cursor()
        cur.execute("LISTEN identity_check")
        cur.execute("NOTIFY identity_check, 'hello'")
        got = list(conn.notifies(timeout=10, stop_after=1))
        check(len(got) == 1 and got[0].payload == "hello", f"notification: {got}")
        check(got[0].pid == conn.info.backend_pid,
              f"own NOTIFY names {got[0].pid}, BackendKeyData {conn.info.backend_pid}")
    # An encoding asked for in another spelling is reported as the server names it.
    with psycopg.connect(url, connect_timeout=20, autocommit=True,
                         client_encoding="'utf-8'") as conn:
        told = conn.info.parameter_status("client_encoding")
        check(told == "UTF8", f"client_encoding reported as {told!r}")
        check(conn.execute("SHOW client_encoding").fetchone()[0] == "UTF8", "the server's")
    print("OK")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[2] == "transaction":
        transaction_mode(sys.argv[1])
    else:
        main(sys.argv[1])
