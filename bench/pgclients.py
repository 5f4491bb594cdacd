"""Many light PostgreSQL clients on one asyncio loop, for the idle-footprint and connection-storm
measurements in bench/pgbench.py. Speaks just enough of the protocol: startup, md5 or cleartext
authentication, a simple query, Terminate. (md5 keeps the client cheap: libpq's SCRAM would put
PBKDF2 on the same two cores as the proxies being measured.)

  python3 pgclients.py idle  PORT USER PASSWORD DB N  -> opens N logged-in clients, prints
        "READY <n_ok> <n_failed>", then holds them until stdin closes.
  python3 pgclients.py storm PORT USER PASSWORD DB N  -> N clients connect at once, each runs
        SELECT 1 and leaves; prints JSON {served, failed, seconds, errors}.
"""
import asyncio
import hashlib
import json
import resource
import struct
import sys
import time


def _msg(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("!I", len(body) + 4) + body


async def _read_msg(reader):
    head = await reader.readexactly(5)
    tag, length = head[:1], struct.unpack("!I", head[1:])[0]
    if length < 4 or length > 1 << 20:
        raise ValueError(f"bad length {length}")
    return tag, await reader.readexactly(length - 4)


def _error_code(body: bytes) -> str:
    for field in body.split(b"\0"):
        if field.startswith(b"C"):
            return field[1:].decode()
    return "?"


async def login(port, user, password, db):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    params = b"user\0" + user.encode() + b"\0database\0" + db.encode() + b"\0\0"
    body = struct.pack("!I", 196608) + params
    writer.write(struct.pack("!I", len(body) + 4) + body)
    while True:
        tag, body = await _read_msg(reader)
        if tag == b"R":
            kind = struct.unpack("!I", body[:4])[0]
            if kind == 5:
                inner = hashlib.md5((password + user).encode()).hexdigest()
                outer = "md5" + hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                writer.write(_msg(b"p", outer.encode() + b"\0"))
            elif kind == 3:
                writer.write(_msg(b"p", password.encode() + b"\0"))
            elif kind != 0:
                raise RuntimeError(f"auth method {kind} not supported by this client")
        elif tag == b"E":
            raise RuntimeError(_error_code(body))
        elif tag == b"Z":
            return reader, writer


async def query(reader, writer, sql="SELECT 1"):
    writer.write(_msg(b"Q", sql.encode() + b"\0"))
    error = None
    while True:
        tag, body = await _read_msg(reader)
        if tag == b"E":
            error = _error_code(body)
        if tag == b"Z":
            if error:
                raise RuntimeError(error)
            return


def raise_fd_limit():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def idle(port, user, password, db, n, login=login, ramp=64):
    """`login`: this module's PostgreSQL one, or another protocol's (myclients.py); `ramp`:
    logins under way at once (below poolguard's default bound on logins under way from one
    address, 128: the idle measurement is about memory, not login admission)."""
    conns, failed = [], 0
    sem = asyncio.Semaphore(ramp)  # a steady ramp, not a storm

    async def one():
        nonlocal failed
        async with sem:
            try:
                conns.append(await login(port, user, password, db))
            except Exception:
                failed += 1

    await asyncio.gather(*(one() for _ in range(n)))
    print(f"READY {len(conns)} {failed}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for _, w in conns:
        w.close()


async def storm(port, user, password, db, n):
    errors = {}
    served = 0
    start = time.monotonic()

    async def one():
        nonlocal served
        try:
            r, w = await asyncio.wait_for(login(port, user, password, db), 120)
            await asyncio.wait_for(query(r, w), 120)
            w.write(_msg(b"X", b""))
            w.close()
            served += 1
        except Exception as e:  # counted by kind
            key = str(e) or type(e).__name__
            errors[key] = errors.get(key, 0) + 1

    await asyncio.gather(*(one() for _ in range(n)))
    print(json.dumps({"served": served, "failed": n - served,
                      "seconds": round(time.monotonic() - start, 3), "errors": errors}))


if __name__ == "__main__":
    raise_fd_limit()
    mode, port, user, password, db, n = sys.argv[1:7]
    fn = idle if mode == "idle" else storm
    asyncio.run(fn(int(port), user, password, db, int(n)))
