#!/usr/bin/env python3
"""Capture real server packets for poolguard-mysql's fixture tests.

Talks the raw protocol to a *throwaway* server (never a production one) and writes, per capability
set, each command's payload and every server payload of its response. A response is collected by
reading until the server has been silent for a while, so the fixtures do not depend on the
tracker they are used to test.

Usage: capture_mariadb.py HOST PORT USER PASSWORD OUTDIR
The server needs: user with ALL on *.*, database t with table x (id int primary key, s varchar(20))
holding (1,'a'),(2,'b'), and local_infile=ON (MariaDB's default).
"""
import hashlib
import socket
import struct
import sys

CLIENT_LONG_PASSWORD = 1
CLIENT_CONNECT_WITH_DB = 1 << 3
CLIENT_LOCAL_FILES = 1 << 7
CLIENT_PROTOCOL_41 = 1 << 9
CLIENT_TRANSACTIONS = 1 << 13
CLIENT_SECURE_CONNECTION = 1 << 15
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
CLIENT_PS_MULTI_RESULTS = 1 << 18
CLIENT_PLUGIN_AUTH = 1 << 19
CLIENT_SESSION_TRACK = 1 << 23
CLIENT_DEPRECATE_EOF = 1 << 24

BASE = (CLIENT_LONG_PASSWORD | CLIENT_CONNECT_WITH_DB | CLIENT_LOCAL_FILES | CLIENT_PROTOCOL_41
        | CLIENT_TRANSACTIONS | CLIENT_SECURE_CONNECTION | CLIENT_MULTI_STATEMENTS
        | CLIENT_MULTI_RESULTS | CLIENT_PS_MULTI_RESULTS | CLIENT_PLUGIN_AUTH)


class Conn:
    def __init__(self, host, port):
        self.s = socket.create_connection((host, port))
        self.buf = b""

    def read_packets(self, idle=0.4):
        """Every packet the server sends until it is idle for `idle` seconds."""
        self.s.settimeout(idle)
        try:
            while True:
                chunk = self.s.recv(65536)
                if not chunk:
                    break
                self.buf += chunk
        except socket.timeout:
            pass
        out = []
        while len(self.buf) >= 4:
            n = self.buf[0] | self.buf[1] << 8 | self.buf[2] << 16
            if len(self.buf) < 4 + n:
                break
            out.append((self.buf[3], self.buf[4:4 + n]))
            self.buf = self.buf[4 + n:]
        return out

    def send(self, seq, payload):
        self.s.sendall(struct.pack("<I", len(payload))[:3] + bytes([seq]) + payload)


def scramble(pw, nonce):
    s1 = hashlib.sha1(pw).digest()
    s2 = hashlib.sha1(s1).digest()
    m = hashlib.sha1(nonce + s2).digest()
    return bytes(a ^ b for a, b in zip(s1, m))


def connect(host, port, user, pw, caps, mariadb_caps=0):
    c = Conn(host, port)
    [(_, greeting)] = c.read_packets()
    # Nonce: 8 bytes after version NUL + conn id, then 12 after the 13-byte fixed tail.
    v_end = greeting.index(0, 1)
    p1 = greeting[v_end + 5:v_end + 13]
    rest = greeting[v_end + 14 + 2 + 1 + 2 + 2 + 1 + 10:]
    nonce = p1 + rest[:12]
    auth = scramble(pw, nonce)
    resp = struct.pack("<IIB", caps, 16 << 20, 45) + b"\0" * 19 + struct.pack("<I", mariadb_caps)
    resp += user + b"\0"
    resp += bytes([len(auth)]) + auth + b"t\0" + b"mysql_native_password\0"
    c.send(1, resp)
    [(_, ok)] = c.read_packets()
    assert ok[0] == 0, ok
    return c, greeting, nonce


def change_user(user, auth, plugin):
    """COM_CHANGE_USER (CLIENT_SECURE_CONNECTION and CLIENT_PLUGIN_AUTH negotiated)."""
    return b"\x11" + user + b"\0" + bytes([len(auth)]) + auth + b"t\0" + struct.pack("<H", 45) \
        + plugin + b"\0"


def stmt_execute(stmt_id, flags, params):
    """COM_STMT_EXECUTE with int (MYSQL_TYPE_LONGLONG) params."""
    p = bytes([0x17]) + struct.pack("<IBI", stmt_id, flags, 1)
    if params:
        p += b"\0" * ((len(params) + 7) // 8) + b"\x01"
        p += b"".join(b"\x08\x00" for _ in params)
        p += b"".join(struct.pack("<q", v) for v in params)
    return p


def main():
    host, port, user, pw, outdir = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), \
        sys.argv[4].encode(), sys.argv[5]
    modern = BASE | CLIENT_DEPRECATE_EOF | CLIENT_SESSION_TRACK
    # MariaDB clients clear CLIENT_MYSQL (bit 0) and send extended capabilities; 16 is
    # MARIADB_CLIENT_CACHE_METADATA (column count packets gain a "metadata follows" byte).
    variants = {
        "classic_eof": (BASE, 0),
        "deprecate_eof": (modern, 0),
        "cache_metadata_classic_eof": (BASE & ~CLIENT_LONG_PASSWORD, 16),
        "cache_metadata_deprecate_eof": (modern & ~CLIENT_LONG_PASSWORD, 16),
    }
    for name, (caps, mariadb_caps) in variants.items():
        c, greeting, nonce = connect(host, port, user, pw, caps, mariadb_caps)
        if name == "classic_eof":
            with open(f"{outdir}/mariadb_10_11_greeting.hex", "w") as f:
                f.write(greeting.hex() + "\n")
        lines = [f"caps {caps:08x}", f"mariadb_caps {mariadb_caps:08x}"]

        def run(label, payload, extra=None, idle=0.4):
            c.send(0, payload)
            pkts = c.read_packets()
            lines.append(f"# {label}")
            lines.append("> " + payload.hex())
            for _, p in pkts:
                lines.append("< " + p.hex())
            if extra is not None:
                if callable(extra):
                    extra = extra(pkts[-1][1])
                c.send(pkts[-1][0] + 1, extra)
                lines.append("+ " + extra.hex())
                for _, p in c.read_packets(idle):
                    lines.append("< " + p.hex())
            return pkts

        def q(sql):
            return b"\x03" + sql.encode()

        c.send(0, q("CREATE PROCEDURE IF NOT EXISTS t.p() BEGIN SELECT 1 AS a; SELECT 2 AS b, 'x' AS c; END"))
        c.read_packets()
        c.send(0, q("CREATE TABLE IF NOT EXISTS t.y (s varchar(20))"))
        c.read_packets()
        run("query text result set", q("SELECT id, s FROM t.x ORDER BY id"))
        run("query empty result set", q("SELECT id FROM t.x WHERE 1 = 0"))
        run("query ok", q("DO 1"))
        run("query err", q("SELECT * FROM t.nope"))
        run("begin", q("BEGIN"))
        run("commit", q("COMMIT"))
        run("multi statement", q("SELECT 1; SELECT 2, 3; DO 1"))
        run("multi statement err", q("SELECT 1; SELECT * FROM t.nope; SELECT 3"))
        run("call procedure", q("CALL t.p()"))
        run("local infile", q("LOAD DATA LOCAL INFILE 'data.txt' INTO TABLE t.y"), extra=b"")
        pk = run("prepare columns and params", b"\x16" + b"SELECT id, s FROM t.x WHERE id > ?")
        stmt = struct.unpack("<I", pk[0][1][1:5])[0]
        run("prepare params only", b"\x16" + b"DO ?")
        run("prepare columns only", b"\x16" + b"SELECT 1")
        run("prepare nothing", b"\x16" + b"DO 1")
        run("prepare err", b"\x16" + b"SELECT FROM")
        run("execute binary result set", stmt_execute(stmt, 0, [0]))
        run("execute binary result set again", stmt_execute(stmt, 0, [1]))
        run("execute err", stmt_execute(99999, 0, []))
        run("execute cursor", stmt_execute(stmt, 1, [0]))
        run("fetch", bytes([0x1c]) + struct.pack("<II", stmt, 1))
        run("fetch rest", bytes([0x1c]) + struct.pack("<II", stmt, 100))
        run("stmt reset", bytes([0x1a]) + struct.pack("<I", stmt))
        run("stmt send long data", bytes([0x18]) + struct.pack("<IH", stmt, 0) + b"data")
        run("stmt close", bytes([0x19]) + struct.pack("<I", stmt))
        run("field list", b"\x04x\0")
        run("field list err", b"\x04nope\0")
        run("ping", b"\x0e")
        run("init db", b"\x02t")
        run("init db err", b"\x02nope")
        run("statistics", b"\x09")
        run("set option", b"\x1b\x00\x00")
        run("reset connection", b"\x1f")
        # MariaDB answers every COM_CHANGE_USER with an AuthSwitchRequest carrying a fresh nonce,
        # even when the plugin matches, so each of these is a two-step exchange.
        def switch_reply(password):
            def reply(switch):
                # 0xFE, plugin name NUL, 20-byte nonce, NUL.
                name_end = switch.index(0, 1)
                return scramble(password, switch[name_end + 1:name_end + 21])
            return reply
        run("change user", change_user(user, scramble(pw, nonce), b"mysql_native_password"),
            extra=switch_reply(pw))
        run("change user from another plugin", change_user(user, b"x" * 32, b"caching_sha2_password"),
            extra=switch_reply(pw))
        run("change user wrong password", change_user(user, b"x" * 20, b"mysql_native_password"),
            extra=switch_reply(b"wrong"), idle=3.0)  # failed re-auth answers after a delay
        with open(f"{outdir}/mariadb_10_11_{name}.txt", "w") as f:
            f.write("\n".join(lines) + "\n")
        c.send(0, b"\x01")


if __name__ == "__main__":
    main()
