"""PyMySQL through poolguard's MySQL front door (transaction mode).

Usage: mysql_pymysql.py PORT [allow_local_infile]
Checks: queries with PyMySQL's default autocommit off, commit and rollback, executemany,
a 17 MiB value (split packets both ways), multi-result CALL, utf8mb4 text, and LOAD DATA LOCAL
INFILE (loaded when the proxy allows it, refused with MariaDB's 4166 otherwise, as a server
with local files disabled refuses it). Prints OK.
"""
import hashlib
import os
import sys
import tempfile

import pymysql

port = int(sys.argv[1])
allow_infile = len(sys.argv) > 2 and sys.argv[2] == "allow_local_infile"


def connect(**kw):
    return pymysql.connect(host="127.0.0.1", port=port, user="app", password="app-secret",
                           database="bank", max_allowed_packet=64 * 1024 * 1024, **kw)


def check(cond, what):
    if not cond:
        print("FAILED:", what)
        sys.exit(1)


c = connect()
cur = c.cursor()
cur.execute("SELECT @@autocommit")
check(cur.fetchone()[0] == 0, "PyMySQL turns autocommit off")
cur.execute("CREATE TABLE py_items (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50), data LONGBLOB)")
cur.execute("INSERT INTO py_items (name) VALUES (%s)", ("kept",))
c.commit()
cur.execute("INSERT INTO py_items (name) VALUES (%s)", ("dropped",))
c.rollback()
cur.executemany("INSERT INTO py_items (name) VALUES (%s)", [("m1",), ("m2",), ("m3",)])
c.commit()
other = connect()
ocur = other.cursor()
ocur.execute("SELECT name FROM py_items ORDER BY id")
check([r[0] for r in ocur.fetchall()] == ["kept", "m1", "m2", "m3"], "committed rows only")
other.commit()

# 17 MiB: more than one 16 MiB packet in each direction.
blob = os.urandom(17 * 1024 * 1024)
cur.execute("INSERT INTO py_items (name, data) VALUES (%s, %s)", ("big", blob))
c.commit()
ocur.execute("SELECT data FROM py_items WHERE name = 'big'")
back = ocur.fetchone()[0]
check(len(back) == len(blob) and hashlib.sha256(back).digest() == hashlib.sha256(blob).digest(),
      "17 MiB value round trip")
other.commit()

# Multi-result: a procedure with two result sets.
cur.execute("CREATE PROCEDURE two_sets() BEGIN SELECT 1 AS a; SELECT 2 AS b, 3 AS c; END")
cur.callproc("two_sets")
first = cur.fetchall()
check(cur.nextset(), "second result set")
second = cur.fetchall()
check(first == ((1,),) and second == ((2, 3),), f"CALL results {first} {second}")
c.commit()

text = "Zürich ✓ 東京 🚀"
cur.execute("SELECT %s", (text,))
check(cur.fetchone()[0] == text, "utf8mb4 round trip")
c.commit()

# LOAD DATA LOCAL INFILE.
with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as f:
    f.write("l1\nl2\n")
    path = f.name
lc = connect(local_infile=True)
lcur = lc.cursor()
try:
    lcur.execute(f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE py_items (name)")
    lc.commit()
    check(allow_infile, "LOAD DATA LOCAL must be refused when not allowed")
    lcur.execute("SELECT COUNT(*) FROM py_items WHERE name IN ('l1', 'l2')")
    check(lcur.fetchone()[0] == 2, "file loaded")
except pymysql.err.MySQLError as e:
    check(not allow_infile, f"LOAD DATA LOCAL failed though allowed: {e}")
    check(e.args[0] == 4166 and "local infile" in e.args[1], f"refusal: {e}")
    lc.rollback()
    lcur.execute("SELECT COUNT(*) FROM py_items WHERE name IN ('l1', 'l2')")
    check(lcur.fetchone()[0] == 0, "nothing loaded")
lc.commit()
os.unlink(path)
c.ping()
for conn in (c, other, lc):
    conn.close()
print("OK")
