"""PyMySQL logging in to poolguard's MySQL door with caching_sha2_password, over TLS when a CA
is given (full authentication sends the password in clear), else in plaintext (full
authentication asks for poolguard's RSA key and encrypts with it: needs `cryptography`).

Usage: mysql_sha2_pymysql.py PORT PASSWORD [CA]   prints "value=42", or "error=<code>"
"""
import sys

import pymysql

port, password = int(sys.argv[1]), sys.argv[2]
ssl = {"ca": sys.argv[3]} if len(sys.argv) > 3 else None
try:
    c = pymysql.connect(host="127.0.0.1", port=port, user="app", password=password,
                        database="bank", ssl=ssl, connect_timeout=20)
except pymysql.err.OperationalError as e:
    print(f"error={e.args[0]}")
    sys.exit(0)
with c.cursor() as cur:
    cur.execute("SELECT 40 + 2")
    print(f"value={cur.fetchone()[0]}")
c.close()
