"""PyMySQL client driven step by step by tests/tests/admin_mysql.rs (observability checks).

Usage: mysql_admin_client.py PORT traffic|leak PROGRAM_NAME
The connection carries PROGRAM_NAME as its `program_name` connection attribute (what PyMySQL,
like the mysql CLI and Connector/J, sends), autocommit on.

Protocol on stdout/stdin, one line each, so the test can read poolguard's counters between steps:
- both modes print `connected <local ip> <local port>` once logged in, then wait for a line;
- traffic: runs 10 explicit transactions of 3 statements (BEGIN, INSERT, UPDATE, SELECT,
  COMMIT) and 5 autocommit SELECTs: 55 COM_QUERY, 15 transactions; prints `done`;
- leak: BEGIN and one SELECT, prints `holding`, waits for a line (the test watches the leak
  report meanwhile), COMMIT, prints `released`.
"""
import sys

import pymysql

port, mode, program = int(sys.argv[1]), sys.argv[2], sys.argv[3]


def step(*words):
    print(*words, flush=True)


def wait():
    if not sys.stdin.readline():
        sys.exit("stdin closed")


conn = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app-secret",
                       database="bank", autocommit=True, program_name=program)
ip, local_port = conn._sock.getsockname()[:2]
step("connected", ip, local_port)
wait()
cur = conn.cursor()
if mode == "traffic":
    cur.execute("CREATE TABLE IF NOT EXISTS admin_ledger (id INT, amount INT) ENGINE=InnoDB")
    step("created")
    wait()
    for i in range(10):
        cur.execute("BEGIN")
        cur.execute("INSERT INTO admin_ledger VALUES (%s, 1)", (i,))
        cur.execute("UPDATE admin_ledger SET amount = amount + 1 WHERE id = %s", (i,))
        cur.execute("SELECT COUNT(*) FROM admin_ledger")
        cur.fetchall()
        cur.execute("COMMIT")
    for i in range(5):
        cur.execute("SELECT %s", (i,))
        cur.fetchall()
    step("done")
elif mode == "leak":
    cur.execute("BEGIN")
    cur.execute("SELECT COUNT(*) FROM information_schema.tables")
    cur.fetchall()
    step("holding")
    wait()
    cur.execute("COMMIT")
    step("released")
else:
    sys.exit(f"unknown mode {mode}")
conn.close()
