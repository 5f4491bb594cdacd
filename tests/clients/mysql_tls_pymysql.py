"""PyMySQL through poolguard's MySQL door over TLS, verifying its certificate against CA.

Usage: mysql_tls_pymysql.py PORT CA   prints "tls=<version> value=42"
"""
import sys

import pymysql

port, ca = int(sys.argv[1]), sys.argv[2]
c = pymysql.connect(host="127.0.0.1", port=port, user="app", password="app-secret",
                    database="bank", ssl={"ca": ca}, connect_timeout=20)
with c.cursor() as cur:
    cur.execute("SELECT 40 + 2")
    value = cur.fetchone()[0]
print(f"tls={c._sock.version()} value={value}")
c.close()
