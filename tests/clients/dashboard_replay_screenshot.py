"""Regenerates docs/dashboard.png: the dashboard during a replayed leak.

Usage: dashboard_replay_screenshot.py POOLGUARD_BIN OUT.png [SETTLE_SECONDS]
Runs `poolguard demo --once` (sandbox PostgreSQL and MariaDB, poolguard with its admin listener,
then the bank-fee and TradeMate replays, direct and through poolguard), opens the dashboard in
headless Chromium with node/dashboard.js, waits until the page itself shows the bank-fee
replay's first leak event (its leakers set no application name), lets the spike start
(SETTLE_SECONDS, default 5.5) and takes the screenshot.
"""
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

binary, out = sys.argv[1], os.path.abspath(sys.argv[2])
settle = float(sys.argv[3]) if len(sys.argv) > 3 else 5.5
here = os.path.dirname(os.path.abspath(__file__))

s = socket.socket()
s.bind(("127.0.0.1", 0))
admin = s.getsockname()[1]
s.close()
demo = subprocess.Popen([binary, "demo", "--once", "--seconds", "20", "--admin-port", str(admin)],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{admin}/api/pools", timeout=2).read()
            break
        except OSError:
            time.sleep(0.2)
    node = subprocess.Popen(["node", "dashboard.js", f"http://127.0.0.1:{admin}/"],
                            cwd=os.path.join(here, "node"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)

    def ask(command=None):
        if command:
            node.stdin.write(command + "\n")
            node.stdin.flush()
        v = json.loads(node.stdout.readline())
        if v["event"] == "error":
            sys.exit(v["message"])
        return v

    ask()
    ask("wait-text LEAK (no application)")
    time.sleep(settle)
    print(ask(f"screenshot {out}"))
    node.stdin.write("quit\n")
    node.stdin.flush()
    node.wait(60)
    demo.wait(300)
finally:
    if demo.poll() is None:
        demo.kill()
