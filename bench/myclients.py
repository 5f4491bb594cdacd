"""Many light MySQL clients on one asyncio loop, for the idle-footprint measurement in
bench/sysbench.py. Speaks just enough of the protocol: the greeting, mysql_native_password
(including an auth switch to it), and nothing else (the clients stay idle until closed).

  python3 myclients.py idle PORT USER PASSWORD DB N  -> opens N logged-in clients, prints
        "READY <n_ok> <n_failed>", then holds them until stdin closes.
"""
import asyncio
import hashlib
import struct
import sys

from pgclients import idle, raise_fd_limit

CLIENT_LONG_PASSWORD = 0x1
CLIENT_CONNECT_WITH_DB = 0x8
CLIENT_PROTOCOL_41 = 0x200
CLIENT_TRANSACTIONS = 0x2000
CLIENT_SECURE_CONNECTION = 0x8000
CLIENT_PLUGIN_AUTH = 0x80000
CAPS = (CLIENT_LONG_PASSWORD | CLIENT_CONNECT_WITH_DB | CLIENT_PROTOCOL_41 | CLIENT_TRANSACTIONS
        | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH)
NATIVE = b"mysql_native_password"


def native_scramble(password: str, nonce: bytes) -> bytes:
    if not password:
        return b""
    h1 = hashlib.sha1(password.encode()).digest()
    h2 = hashlib.sha1(h1).digest()
    h3 = hashlib.sha1(nonce + h2).digest()
    return bytes(a ^ b for a, b in zip(h1, h3))


async def read_packet(reader):
    head = await reader.readexactly(4)
    length = head[0] | head[1] << 8 | head[2] << 16
    return head[3], await reader.readexactly(length)


def packet(seq: int, payload: bytes) -> bytes:
    n = len(payload)
    return bytes([n & 0xff, n >> 8 & 0xff, n >> 16 & 0xff, seq & 0xff]) + payload


def greeting_nonce(g: bytes) -> bytes:
    # protocol version, server version NUL, thread id (4), nonce part 1 (8), filler, caps (2),
    # charset, status (2), caps (2), nonce length, reserved (10), nonce part 2 (12 + NUL).
    at = g.index(b"\0", 1) + 1 + 4
    part1 = g[at:at + 8]
    at += 8 + 1 + 2 + 1 + 2 + 2 + 1 + 10
    part2 = g[at:at + 12]
    return part1 + part2


async def login(port, user, password, db):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    seq, greeting = await read_packet(reader)
    if greeting[:1] == b"\xff":
        raise RuntimeError("refused: " + greeting[3:].decode(errors="replace"))
    nonce = greeting_nonce(greeting)
    auth = native_scramble(password, nonce)
    body = (struct.pack("<IIB", CAPS, 1 << 24, 45) + b"\0" * 23 + user.encode() + b"\0"
            + bytes([len(auth)]) + auth + db.encode() + b"\0" + NATIVE + b"\0")
    writer.write(packet(seq + 1, body))
    while True:
        seq, reply = await read_packet(reader)
        if reply[:1] == b"\x00":
            return reader, writer
        if reply[:1] == b"\xff":
            code = struct.unpack("<H", reply[1:3])[0]
            raise RuntimeError(f"error {code}")
        if reply[:1] == b"\xfe":  # auth switch: plugin NUL nonce
            plugin, _, data = reply[1:].partition(b"\0")
            if plugin != NATIVE:
                raise RuntimeError(f"auth plugin {plugin!r} not supported by this client")
            writer.write(packet(seq + 1, native_scramble(password, data.rstrip(b"\0")[:20])))
        else:
            raise RuntimeError(f"unexpected packet 0x{reply[0]:02x} during login")


def main():
    mode, port, user, password, db, n = sys.argv[1:7]
    if mode != "idle":
        raise SystemExit(f"unknown mode {mode}")
    raise_fd_limit()
    asyncio.run(idle(int(port), user, password, db, int(n), login=login))


if __name__ == "__main__":
    main()
