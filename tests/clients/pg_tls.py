"""psycopg (libpq 17+) through poolguard's PostgreSQL door over TLS.

Usage: pg_tls.py query PORT CA [conninfo...]   one connection: prints ssl=, value=
       pg_tls.py hold PORT CA [conninfo...]    prints "ready", then runs each stdin line as a
                                               query and prints its first value (a long-lived
                                               client, for reloads)
The connection verifies poolguard's certificate against CA for host localhost
(verify-full); extra conninfo words (channel_binding=require, sslnegotiation=direct, ...)
are appended.
"""
import sys

import psycopg

mode, port, ca = sys.argv[1], sys.argv[2], sys.argv[3]
extra = " ".join(sys.argv[4:])
conninfo = (f"host=localhost hostaddr=127.0.0.1 port={port} user=app password=app-secret "
            f"dbname=bank sslmode=verify-full sslrootcert={ca} connect_timeout=20 {extra}")
try:
    conn = psycopg.connect(conninfo, autocommit=True)
except psycopg.OperationalError as e:
    print("CONNECT FAILED:", e, flush=True)
    sys.exit(2)
pq = conn.pgconn
if mode == "query":
    value = conn.execute("SELECT 40 + 2").fetchone()[0]
    print(f"ssl={pq.ssl_in_use} value={value}", flush=True)
    sys.exit(0)
print(f"ready ssl={pq.ssl_in_use}", flush=True)
for line in sys.stdin:
    try:
        print(conn.execute(line).fetchone()[0], flush=True)
    except psycopg.Error as e:
        print("ERROR:", e, flush=True)
