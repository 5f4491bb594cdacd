#!/usr/bin/env python3
"""Conformance harness: drivers' and ORMs' own test suites, unchanged, through poolguard.

Called by conformance/run (which prepares the cache: pinned sdists, a virtualenv). For each
target it starts what the target needs, runs every suite against it, and records each test's
outcome; then it diffs every target against `direct` test by test and groups the differences
by cause, parsed from the failure messages.

Targets:
  direct       the server itself
  session      poolguard, pool_mode = "session"
  transaction  poolguard, pool_mode = "transaction" (session_state = "follow", the default)
  pgbouncer    PgBouncer (Debian's /usr/sbin/pgbouncer) in transaction mode, the reference;
               PostgreSQL suites only

Suites (see SUITES below): Django's test suite on PostgreSQL (psycopg 3) and on MariaDB
(mysqlclient), asyncpg's test suite on PostgreSQL.

Everything runs on loopback: a throwaway PostgreSQL and MariaDB (temporary data directories,
ports reserved at run time by binding, password authentication), started here and removed at
the end. Each suite run is capped by a time limit; a run cut short keeps the outcomes it
recorded and the tests it never reached count as `not run`.

Output, in --out (default conformance/results/<timestamp>/, ignored by git): results.json
(every test's outcome per suite and target, the diffs grouped by cause, versions, commands)
and report.md (the tables). With --doc PATH the report also goes to PATH
(conformance/run writes docs/conformance.md on a full run).

Exit status: 0, or 1 when --fail-on-session-diff is given and session mode changed any
outcome compared with direct (the diff is printed), or 2 on a harness failure.
"""
import argparse
import datetime
import json
import os
import platform
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PG_BIN = Path(os.environ.get("CONFORM_PG_BIN", "/usr/lib/postgresql/15/bin"))
PGBOUNCER = os.environ.get("CONFORM_PGBOUNCER", "/usr/sbin/pgbouncer")
PASSWORD = "conform-secret"
PG_USER = "postgres"
MY_USER = "conform"

# Django apps per suite size. Labels are Django test labels (apps or dotted modules).
DJANGO_PG_FULL = ["basic", "queries", "transactions", "select_for_update", "model_fields",
                  "backends", "db_functions", "aggregation", "expressions", "update", "delete",
                  "get_or_create", "bulk_create", "custom_lookups", "timezones", "postgres_tests",
                  "lookup", "annotations", "prefetch_related", "schema"]
DJANGO_PG_QUICK = ["basic", "transactions", "select_for_update", "backends.postgresql",
                   "get_or_create"]
DJANGO_MY_FULL = ["basic", "queries", "transactions", "select_for_update", "model_fields",
                  "backends", "db_functions", "aggregation", "update", "delete", "get_or_create",
                  "expressions", "lookup", "annotations", "schema", "bulk_create"]
DJANGO_MY_QUICK = ["basic", "transactions", "select_for_update", "backends.mysql",
                   "get_or_create"]
ASYNCPG_FULL = ["tests"]
ASYNCPG_QUICK = ["tests/test_prepare.py", "tests/test_transaction.py", "tests/test_execute.py",
                 "tests/test_listeners.py", "tests/test_cursor.py",
                 "tests/test_connect.py::TestSettings",
                 # a timing assertion (see "pipeline back-pressure" below), flaky through proxies
                 "-k", "not test_executemany_server_failure_during_writes"]

# Causes, in order: the first pattern found in a differing test's message names its cause.
CAUSES = [
    ("unsupported startup parameter", r"unsupported startup parameter"),
    ("database not in the pooler's configuration",
     r"does not exist in poolguard's configuration|no such database"),
    ("stale shared server statement (schema changed)",
     r"cached statement plan is invalid|cached plan must not change result type|"
     r"cache lookup failed for type|invalid input for query argument"),
    ("pipeline back-pressure (timing)", r"should stop early"),
    ("reported parameter value (ParameterStatus)", r"'utf-8'\"? != '?UTF8|client_encoding"),
    ("prepared statement (named, server-side)",
     r"prepared statement \S* ?(does not exist|already exists)|InvalidSQLStatementNameError|"
     r"DuplicatePreparedStatementError|unknown prepared statement"),
    ("cursor across transactions (WITH HOLD / portal)", r"cursor \S* ?does not exist|portal \S* does not exist"),
    ("temporary table", r"temporary table|pg_temp|relation \"?\w*tmp\w*\"? does not exist"),
    ("LISTEN / NOTIFY", r"\bLISTEN\b|\bNOTIFY\b|notification|add_listener|remove_listener"),
    ("advisory lock", r"advisory.?lock"),
    ("SET / session parameter", r"\bSET\b|search_path|statement_timeout|session param|GUC|"
     r"parameter .* (cannot|does not)|server_settings|set_config|TimeZone|DateStyle"),
    ("backend identity (pid, cancel, terminate)", r"pg_backend_pid|backend_pid|get_server_pid|"
     r"pg_terminate_backend|pg_cancel_backend|CONNECTION_ID|cancel"),
    ("pooler refused the statement", r"0A000|poolguard|not supported in transaction|pgbouncer"),
    ("pool exhausted / acquire timeout", r"53300|53400|exhausted|too many (clients|connections)|"
     r"no more connections|query_wait_timeout|1040"),
    ("database held by the pooler", r"is being accessed by other users|database .* is in use|"
     r"database \"\w+\" already exists"),
    ("connection closed", r"connection (is |was |already )?closed|server closed the connection|"
     r"ConnectionDoesNotExistError|terminating connection|Broken pipe|Lost connection|"
     r"connection reset|EOF|ConnectionResetError|InterfaceError|unexpected (message|response)|"
     r"protocol"),
    ("timeout", r"time(d)? ?out|TimeoutError|canceling statement"),
    ("transaction state", r"transaction|savepoint|autocommit|in_transaction"),
]

# Statements worth knowing about when a target changes an outcome: where a difference has
# none of the causes above, its cause is "other", with the message.


# ----------------------------------------------------------------------------- utilities

def log(*args):
    print("[conform]", *args, file=sys.stderr, flush=True)


def free_port():
    """A loopback port nobody listens on now (bound and released: the OS does not hand it out
    again at once). Servers that fail to bind are retried by the callers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, seconds, proc=None):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            time.sleep(0.2)
    return False


def as_account(account, argv):
    """argv run as `account` when we are root (PostgreSQL, MariaDB and PgBouncer refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", account, "--"] + argv
    return argv


def chown_tree(path, account):
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(account)
    for root, dirs, files in os.walk(path):
        os.chown(root, pw.pw_uid, pw.pw_gid)
        for f in files:
            os.chown(os.path.join(root, f), pw.pw_uid, pw.pw_gid)


def run(argv, timeout=120, **kw):
    return subprocess.run(argv, check=True, timeout=timeout, capture_output=True, text=True, **kw)


# ----------------------------------------------------------------------------- servers

class Postgres:
    """A throwaway PostgreSQL: initdb in a temp dir, SCRAM auth, a free loopback port."""

    def __init__(self, tmp):
        self.dir = Path(tempfile.mkdtemp(prefix="pg-", dir=tmp))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.account = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.port = None

    def start(self):
        pwfile = self.dir / "pw"
        pwfile.write_text(PASSWORD + "\n")
        chown_tree(self.dir, self.account)
        run(as_account(self.account, [str(PG_BIN / "initdb"), "-D", str(self.data), "-U", PG_USER,
                                      "-A", "scram-sha-256", "-E", "UTF8", "--locale=C",
                                      "--no-sync", f"--pwfile={pwfile}"]), timeout=180)
        pwfile.unlink()
        for attempt in range(5):
            self.port = free_port()
            with open(self.data / "postgresql.conf", "a") as f:
                f.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                        f"unix_socket_directories = '{self.dir}'\nmax_connections = 150\n"
                        "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
                        "shared_buffers = 64MB\nmax_prepared_transactions = 10\n")
            try:
                run(as_account(self.account, [str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "60",
                                              "-D", str(self.data), "-l", str(self.dir / "log")]),
                    timeout=90)
                return self
            except subprocess.CalledProcessError:
                log(f"PostgreSQL did not start on {self.port} (attempt {attempt + 1})")
        raise RuntimeError("PostgreSQL would not start; see " + str(self.dir / "log"))

    def psql(self, sql, db="postgres"):
        env = dict(os.environ, PGPASSWORD=PASSWORD)
        return run(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                    "-p", str(self.port), "-U", PG_USER, "-d", db, "-c", sql], env=env).stdout

    def drop_test_databases(self):
        for name in ("test_conform", "test_other"):
            self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def version(self):
        return self.psql("SHOW server_version").strip()

    def stop(self):
        subprocess.run(as_account(self.account, [str(PG_BIN / "pg_ctl"), "stop", "-m", "fast",
                                                 "-w", "-t", "30", "-D", str(self.data)]),
                       capture_output=True, timeout=60)


class MariaDB:
    """A throwaway MariaDB: mariadb-install-db in a temp dir, native-password users."""

    def __init__(self, tmp):
        self.dir = Path(tempfile.mkdtemp(prefix="my-", dir=tmp))
        os.chmod(self.dir, 0o755)
        self.data = self.dir / "data"
        self.socket = self.dir / "sock"
        self.account = "mysql" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.proc = None
        self.port = None

    def start(self):
        self.data.mkdir()
        chown_tree(self.dir, self.account)
        innodb = ["--innodb-buffer-pool-size=128M", "--innodb-log-file-size=32M",
                  "--innodb-flush-log-at-trx-commit=0", "--innodb-use-native-aio=0"]
        run(as_account(self.account, ["mariadb-install-db", "--no-defaults",
                                      f"--datadir={self.data}", f"--tmpdir={self.dir}",
                                      "--auth-root-authentication-method=normal",
                                      "--skip-test-db", "--skip-name-resolve"] + innodb),
            timeout=180)
        for attempt in range(5):
            self.port = free_port()
            argv = ["mariadbd", "--no-defaults", f"--datadir={self.data}",
                    f"--socket={self.socket}", f"--pid-file={self.dir / 'pid'}",
                    f"--log-error={self.dir / 'log'}", f"--tmpdir={self.dir}",
                    "--bind-address=127.0.0.1", f"--port={self.port}", "--skip-name-resolve",
                    "--max-connect-errors=1000000", "--max-connections=200",
                    "--character-set-server=utf8mb4", "--collation-server=utf8mb4_general_ci",
                    "--sql-mode=STRICT_TRANS_TABLES"] + innodb
            if os.geteuid() == 0:
                argv.insert(2, f"--user={self.account}")  # after --no-defaults, which must be first
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
            if wait_port(self.port, 60, self.proc) and self.proc.poll() is None:
                break
            self.kill()
            log(f"MariaDB did not start on {self.port} (attempt {attempt + 1})")
        else:
            raise RuntimeError("MariaDB would not start; see " + str(self.dir / "log"))
        for _ in range(50):
            if self.socket.exists():
                break
            time.sleep(0.2)
        pw = PASSWORD.replace("'", "''")
        self.sql(
            "DELETE FROM mysql.global_priv WHERE User = '';\nFLUSH PRIVILEGES;\n"
            f"CREATE USER '{MY_USER}'@'127.0.0.1' IDENTIFIED VIA mysql_native_password "
            f"USING PASSWORD('{pw}');\n"
            f"GRANT ALL PRIVILEGES ON *.* TO '{MY_USER}'@'127.0.0.1' WITH GRANT OPTION;\n"
            "CREATE DATABASE conform;\nCREATE DATABASE other;\n")
        # Django's connections that name no database (creating the test databases) read their
        # default database from this file: poolguard needs a database named at login.
        self.cnf = self.dir / "client.cnf"
        self.cnf.write_text("[client]\ndatabase=conform\n")
        os.chmod(self.cnf, 0o644)
        return self

    def sql(self, text):
        return run(["mariadb", "--no-defaults", "--protocol=SOCKET", f"--socket={self.socket}",
                    "-uroot", "-N", "-B"], input=text).stdout

    def drop_test_databases(self):
        self.sql("DROP DATABASE IF EXISTS test_conform;\nDROP DATABASE IF EXISTS test_other;\n")

    def version(self):
        return self.sql("SELECT VERSION();").strip()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stop(self):
        self.kill()


# ----------------------------------------------------------------------------- proxies

# asyncpg's tests create and use testdb and asyncpg_intro_test.
PG_DATABASES = ["postgres", "conform", "other", "test_conform", "test_other", "testdb",
                "asyncpg_intro_test"]
MY_DATABASES = ["conform", "other", "test_conform", "test_other"]


def poolguard_config(mode, listen, backend, protocol, databases, user):
    """A poolguard config: one door, one backend, an entry per database the suites use
    (listed one by one; a fallback `*` entry would serve them too), pools large enough that no suite waits, timeouts
    generous enough that no suite's idle transaction is reclaimed."""
    door = "postgres" if protocol == "postgres" else "mysql"
    lines = [f"[{door}]", f'listen = "127.0.0.1:{listen}"', ""]
    lines += ["[[backends]]", 'name = "db"', f'protocol = "{protocol}"',
              f'hosts = ["127.0.0.1:{backend}"]', "max_connections = 100",
              'connect_timeout = "10s"', ""]
    for name in databases:
        lines += ["[[databases]]", f'name = "{name}"', 'backend = "db"',
                  f'pool_mode = "{mode}"', "pool_size = 20", "max_overflow = 20", ""]
    lines += ["[[users]]", f'name = "{user}"', f'password = "{PASSWORD}"', ""]
    lines += ["[limits]", 'acquire_timeout = "60s"', 'idle_in_transaction_timeout = "0s"',
              'leak_threshold = "1h"', 'client_login_timeout = "60s"', 'idle_timeout = "10m"',
              "max_logins_per_address = 512", ""]
    return "\n".join(lines)


class Poolguard:
    def __init__(self, binary, tmp, mode, protocol, backend_port, databases, user):
        self.binary = binary
        self.port = None
        self.dir = Path(tempfile.mkdtemp(prefix=f"pg-{mode}-{protocol}-", dir=tmp))
        self.mode, self.protocol = mode, protocol
        self.backend_port, self.databases, self.user = backend_port, databases, user
        self.proc = None

    def start(self):
        for attempt in range(5):
            self.port = free_port()
            self.config = self.dir / "poolguard.toml"
            self.config.write_text(poolguard_config(self.mode, self.port, self.backend_port,
                                                    self.protocol, self.databases, self.user))
            logf = open(self.dir / "log", "ab")
            self.proc = subprocess.Popen([self.binary, "run", "--config", str(self.config)],
                                         stdout=logf, stderr=logf,
                                         env=dict(os.environ, RUST_LOG="info"))
            if wait_port(self.port, 30, self.proc) and self.proc.poll() is None:
                return self
            self.stop()
            log(f"poolguard did not start on {self.port} (attempt {attempt + 1}); "
                f"see {self.dir / 'log'}")
        raise RuntimeError("poolguard would not start; see " + str(self.dir / "log"))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n=40):
        try:
            return (self.dir / "log").read_text(errors="replace").splitlines()[-n:]
        except OSError:
            return []


class PgBouncer:
    """Debian's PgBouncer in transaction mode with its defaults otherwise: a `*` fallback
    database, SCRAM from a plain-text auth file."""

    def __init__(self, tmp, backend_port):
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-", dir=tmp))
        os.chmod(self.dir, 0o755)
        self.backend_port = backend_port
        self.account = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.proc = None
        self.port = None

    def start(self):
        (self.dir / "users.txt").write_text(f'"{PG_USER}" "{PASSWORD}"\n')
        for attempt in range(5):
            self.port = free_port()
            (self.dir / "pgbouncer.ini").write_text(
                "[databases]\n"
                f"* = host=127.0.0.1 port={self.backend_port}\n"
                "[pgbouncer]\n"
                f"listen_addr = 127.0.0.1\nlisten_port = {self.port}\n"
                f"unix_socket_dir = {self.dir}\n"
                f"auth_type = scram-sha-256\nauth_file = {self.dir / 'users.txt'}\n"
                "pool_mode = transaction\ndefault_pool_size = 20\nreserve_pool_size = 20\n"
                "max_client_conn = 1000\nmax_db_connections = 100\n"
                f"logfile = {self.dir / 'log'}\npidfile = {self.dir / 'pid'}\n"
                + (f"user = {self.account}\n" if os.geteuid() == 0 else ""))
            chown_tree(self.dir, self.account)
            os.chmod(self.dir / "users.txt", 0o600)
            # PgBouncer switches to `user` itself: the process signalled at stop is PgBouncer,
            # not a runuser wrapper that would not pass the signal on.
            self.proc = subprocess.Popen([PGBOUNCER, str(self.dir / "pgbouncer.ini")],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if wait_port(self.port, 30, self.proc) and self.proc.poll() is None:
                return self
            self.stop()
            log(f"pgbouncer did not start on {self.port} (attempt {attempt + 1})")
        raise RuntimeError("pgbouncer would not start; see " + str(self.dir / "log"))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# ----------------------------------------------------------------------------- suites

class Suite:
    name = ""
    engine = ""  # postgres | mysql

    def command(self, endpoint, out):
        raise NotImplementedError

    def collect(self, out):
        raise NotImplementedError


class DjangoSuite(Suite):
    def __init__(self, cache, engine, labels, name):
        self.name, self.engine, self.labels = name, engine, labels
        self.cwd = cache / "src" / f"django-{versions(cache)['django']}" / "tests"
        self.python = str(cache / "venv" / "bin" / "python")

    def command(self, endpoint, out):
        argv = [self.python, "runtests.py", "--settings=conform_django", "--parallel", "1",
                "--noinput", "-v", "1"] + self.labels
        env = {
            "PYTHONPATH": str(HERE / "lib"),
            "CONFORM_ENGINE": "postgresql" if self.engine == "postgres" else "mysql",
            "CONFORM_HOST": "127.0.0.1",
            "CONFORM_PORT": str(endpoint["port"]),
            "CONFORM_USER": endpoint["user"],
            "CONFORM_PASSWORD": PASSWORD,
            "CONFORM_RESULTS": str(out / "outcomes.jsonl"),
        }
        if endpoint.get("cnf"):
            env["CONFORM_MYSQL_CNF"] = str(endpoint["cnf"])
        return argv, env, self.cwd

    def collect(self, out):
        tests = {}
        path = out / "outcomes.jsonl"
        if path.exists():
            for line in path.read_text(errors="replace").splitlines():
                try:
                    r = json.loads(line)
                except ValueError:
                    continue
                merge(tests, r["id"], r["outcome"], r.get("message", ""))
        return tests


class AsyncpgSuite(Suite):
    def __init__(self, cache, paths, name):
        self.name, self.engine, self.paths = name, "postgres", paths
        self.cwd = cache / "src" / f"asyncpg-{versions(cache)['asyncpg']}"
        self.pytest = str(cache / "venv" / "bin" / "pytest")

    def command(self, endpoint, out):
        # The pytest entry script, not `python -m pytest`: the installed (compiled) asyncpg must
        # be imported, not the sdist's uncompiled source in the working directory.
        argv = [self.pytest, "-p", "no:cacheprovider", "-p", "conform_pytest", "--timeout=30",
                "-q"] + self.paths
        env = {"PYTHONPATH": str(HERE / "lib"), "CONFORM_RESULTS": str(out / "outcomes.jsonl"),
               "PGHOST": "127.0.0.1", "PGPORT": str(endpoint["port"]), "PGUSER": PG_USER,
               "PGPASSWORD": PASSWORD, "PGDATABASE": "postgres"}
        return argv, env, self.cwd

    def collect(self, out):
        return DjangoSuite.collect(self, out)


RANK = {"passed": 0, "skipped": 1, "xfail": 2, "xpass": 3, "failed": 4, "error": 5}


def merge(tests, tid, outcome, message):
    """One outcome per test: the worst reported (subtests report several)."""
    old = tests.get(tid)
    if old is None or RANK.get(outcome, 9) > RANK.get(old["outcome"], 9):
        tests[tid] = {"outcome": outcome, "message": message}


def versions(cache):
    return json.loads((cache / "versions.json").read_text())


# ----------------------------------------------------------------------------- running

def run_suite(suite, target, endpoint, outdir, limit):
    out = outdir / suite.name / target
    out.mkdir(parents=True, exist_ok=True)
    argv, env, cwd = suite.command(endpoint, out)
    full_env = dict(os.environ, **env)
    log(f"{suite.name} @ {target}: {' '.join(argv[1:3])} ... (limit {limit}s)")
    started = time.time()
    timed_out = False
    with open(out / "output.txt", "wb") as f:
        proc = subprocess.Popen(argv, cwd=cwd, env=full_env, stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            rc = proc.wait(limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                rc = proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                rc = proc.wait()
    elapsed = time.time() - started
    tests = suite.collect(out)
    shown = {k: v for k, v in env.items() if "PASSWORD" not in k}
    tail = (out / "output.txt").read_text(errors="replace").splitlines()[-30:]
    log(f"{suite.name} @ {target}: {len(tests)} tests in {elapsed:.0f}s, rc={rc}"
        + (" (time limit hit)" if timed_out else ""))
    return {"tests": tests, "rc": rc, "seconds": round(elapsed, 1), "timed_out": timed_out,
            "command": " ".join(argv), "cwd": str(cwd), "env": shown, "output_tail": tail}


def summarize(tests):
    counts = {k: 0 for k in ("passed", "failed", "error", "skipped", "xfail", "xpass")}
    for t in tests.values():
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    return counts


def classify(message):
    for cause, pattern in CAUSES:
        if re.search(pattern, message, re.IGNORECASE):
            return cause
    return "other"


def short(message, n=220):
    m = re.sub(r"\s+", " ", message or "").strip()
    return m[:n]


def diff(base, other, base_run, other_run):
    """Tests whose outcome differs between two runs, grouped by cause."""
    groups = {}
    for tid in sorted(set(base) | set(other)):
        a = base.get(tid, {"outcome": "not run", "message": ""})
        b = other.get(tid, {"outcome": "not run", "message": ""})
        # Skips and expected failures count as one outcome class each; a test that passed
        # directly and errs through a pooler is the kind of difference this harness looks for.
        if a["outcome"] == b["outcome"]:
            continue
        if b["outcome"] == "not run":
            cause = "not run (suite cut short by the time limit)" if other_run["timed_out"] \
                else "not run (suite aborted)"
            message = short(" | ".join(other_run["output_tail"][-3:]))
        elif a["outcome"] == "not run":
            cause = "not run directly (direct suite cut short)"
            message = short(b["message"])
        elif RANK.get(b["outcome"], 9) < RANK.get(a["outcome"], 9):
            cause = "better than direct (flaky or order-dependent)"
            message = short(a["message"])
        else:
            message = b["message"]
            cause = classify(message)
            if cause in ("other", "timeout") and re.search(r"test_listen|test_notif", tid):
                cause = "LISTEN / NOTIFY"
            message = short(message)
        groups.setdefault(cause, []).append(
            {"test": tid, "direct": a["outcome"], "target": b["outcome"], "message": message})
    return groups


# ----------------------------------------------------------------------------- report

TARGET_TITLES = {
    "direct": "direct",
    "session": "poolguard session",
    "transaction": "poolguard transaction",
    "pgbouncer": "PgBouncer 1.18 transaction",
}

EXPLANATIONS = {
    "database not in the pooler's configuration":
        "The suite connects to a database it created at run time; poolguard serves only the "
        "database names in its config unless it has a fallback `*` entry (as PgBouncer's). "
        "Keepable: yes, with the fallback entry or by listing the names.",
    "stale shared server statement (schema changed)":
        "poolguard shares a server-side prepared statement between clients (and between a "
        "client's successive prepares) by text and parameter types. After a schema change "
        "(a column's type altered, a type dropped and created again) the server's statement is "
        "stale: 0A000 `cached plan must not change result type`, XX000 `cache lookup failed for "
        "type`, or parameter types described from the old statement. The driver reacts by "
        "preparing again, but poolguard answers that Parse itself, so the stale statement runs "
        "again. Directly (and in session mode) the driver's new connection or re-prepare gets a "
        "fresh statement. Keepable: yes, by closing the server statement when the server "
        "reports it stale and preparing it afresh.",
    "pipeline back-pressure (timing)":
        "asyncpg's executemany pipelines its batches and the test expects the server's error to "
        "stop the client before it has written them all; a proxy's socket buffers absorb more "
        "of the client's writes first. The server still rejects the batch; only the timing "
        "assertion differs, and it is flaky through any proxy.",
    "reported parameter value (ParameterStatus)":
        "The ParameterStatus the client sees at login carries its own startup value (asyncpg "
        "sends `client_encoding='utf-8'`) where the server reports its normalised form (`UTF8`). "
        "Keepable: yes, by relaying the server's value.",
    "prepared statement (named, server-side)":
        "Named prepared statements live in one server session. A pooler that hands the next "
        "transaction to another server must track and re-prepare them (poolguard does for "
        "protocol-level statements; PgBouncer 1.18 does not). Keepable: yes, by tracking.",
    "cursor across transactions (WITH HOLD / portal)":
        "A cursor or portal used after its transaction ended lives on one server. Keepable "
        "only by pinning the client to its server (poolguard pins WITH HOLD).",
    "temporary table":
        "Temporary tables belong to one server session. Keepable only by pinning "
        "(poolguard resets after the transaction instead, so the table is gone next time).",
    "LISTEN / NOTIFY":
        "Notifications go to the session that listens. Keepable only by pinning (poolguard "
        "pins on LISTEN).",
    "advisory lock":
        "Session advisory locks belong to one server session. Keepable only by pinning "
        "(poolguard pins on them).",
    "SET / session parameter":
        "Session settings stay on the server that ran the SET. Keepable by replaying them "
        "(poolguard does for reported and track_extra_parameters), else lost or pinned.",
    "backend identity (pid, cancel, terminate)":
        "The server process behind a client changes between transactions, so a pid seen in "
        "one transaction does not name the client's server in the next. Not keepable in "
        "transaction mode.",
    "pooler refused the statement":
        "The pooler refuses the statement outright. Keepable by pinning instead.",
    "pool exhausted / acquire timeout":
        "A client waited for a server longer than the pooler allows. A sizing question.",
    "database held by the pooler":
        "A test drops a database it used through the pooler (asyncpg: `testdb`, "
        "`asyncpg_intro_test`); its clients are gone, but the pooler keeps their server "
        "connections idle in the pool, so DROP DATABASE fails (55006 `is being accessed by other "
        "users`) and the next test's CREATE DATABASE finds it still there (`already exists`). "
        "Happens in session mode too. Keepable: yes, a pooler that sees `DROP DATABASE x` (or "
        "`ALTER DATABASE x RENAME`) could close its idle server connections to x first, or "
        "close a database's idle connections when its last client leaves.",
    "connection closed":
        "The client's connection or its server was closed. Needs the log to tell whether "
        "the pooler or the test closed it.",
    "unsupported startup parameter":
        "PgBouncer refuses startup parameters it does not know unless listed in "
        "ignore_startup_parameters.",
}


def generic(command):
    """A recorded command without this machine's paths and ports."""
    command = re.sub(r"(PORT=)\d+", r"\1<port>", command)
    command = re.sub(r"CONFORM_RESULTS=\S*/(\w+\.jsonl)", r"CONFORM_RESULTS=<out>/\1", command)
    command = re.sub(r"CONFORM_MYSQL_CNF=\S+", "CONFORM_MYSQL_CNF=<tmp>/client.cnf", command)
    command = re.sub(r"PYTHONPATH=\S+", "PYTHONPATH=conformance/lib", command)
    command = re.sub(r"\S*/\.cache/poolguard-conformance", "$CACHE", command)
    return command


def ordered(per_target):
    return sorted(per_target.items(), key=lambda kv: list(TARGET_TITLES).index(kv[0]))


def render(results):
    meta = results["meta"]
    lines = [
        "# Conformance: drivers' and ORMs' own test suites through poolguard",
        "",
        "Generated by `conformance/run` (see the top of `conformance/harness.py`); do not edit "
        "by hand. Each suite runs unchanged (from its PyPI sdist) against each target; every "
        "test's outcome is compared with the same test run directly against the server.",
        "",
        f"- Date: {meta['date']} ({'quick' if meta['quick'] else 'full'} run, "
        f"{meta['elapsed_s']:.0f} s in all)",
        f"- Machine: {meta['machine']}",
        f"- poolguard: `{meta['poolguard']}` (commit {meta['commit']})",
        f"- Servers: PostgreSQL {meta.get('postgres_version', '?')}, "
        f"MariaDB {meta.get('mariadb_version', '?')}, {meta['pgbouncer_version']}",
        "- Packages: " + ", ".join(f"{k} {v}" for k, v in sorted(meta["packages"].items())),
        f"- Time limit per suite and target: {meta['limit_s']} s",
        "",
        "Targets: **direct** (the server), **poolguard session** (`pool_mode = \"session\"`), "
        "**poolguard transaction** (`pool_mode = \"transaction\"`, `session_state = \"follow\"`, the default), "
        "**PgBouncer 1.18 transaction** (Debian's package, `pool_mode = transaction`, defaults "
        "otherwise; PostgreSQL suites only). poolguard configs: one entry per database the "
        "suites use (listed one by one; a fallback `*` entry would serve them too), pool_size 20 + max_overflow 20, "
        "acquire_timeout 60s, idle_in_transaction_timeout off.",
        "",
        "## Suites",
        "",
    ]
    for s in results["suites"]:
        lines.append(f"- **{s['name']}**: {s['description']}")
    lines += ["", "## Results", "",
              "| suite | target | passed | failed | errors | skipped | xfail | not run | "
              "differ from direct | seconds |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for s in results["suites"]:
        name = s["name"]
        direct_ids = set(results["runs"].get(name, {}).get("direct", {}).get("tests", {}))
        for target, r in ordered(results["runs"].get(name, {})):
            c = summarize(r["tests"])
            notrun = len(direct_ids - set(r["tests"])) if target != "direct" else 0
            d = results["diffs"].get(name, {}).get(target)
            ndiff = "—" if target == "direct" else str(sum(len(v) for v in d.values()))
            flag = " (time limit)" if r["timed_out"] else ""
            lines.append(f"| {name} | {TARGET_TITLES[target]} | {c['passed']} | {c['failed']} | "
                         f"{c['error']} | {c['skipped']} | {c['xfail']} | {notrun} | {ndiff} | "
                         f"{r['seconds']:.0f}{flag} |")
    lines += ["", "## Outcomes that differ from direct, by cause", ""]
    for s in results["suites"]:
        name = s["name"]
        for target, groups in ordered(results["diffs"].get(name, {})):
            total = sum(len(v) for v in groups.values())
            lines.append(f"### {name} — {TARGET_TITLES[target]}: {total} differ")
            lines.append("")
            if not groups:
                lines += ["Same outcome as direct for every test.", ""]
                continue
            lines += ["| cause | tests | examples (test: direct -> target: message) |",
                      "| --- | ---: | --- |"]
            for cause, items in sorted(groups.items(), key=lambda kv: -len(kv[1])):
                ex = "<br>".join(
                    f"`{i['test']}`: {i['direct']} -> {i['target']}: "
                    f"{i['message'][:160].replace('|', '/')}" for i in items[:4])
                if len(items) > 4:
                    ex += f"<br>... {len(items) - 4} more in results.json"
                lines.append(f"| {cause} | {len(items)} | {ex} |")
            lines.append("")
    lines += ["## Causes", ""]
    seen = set()
    for name, per in results["diffs"].items():
        for target, groups in per.items():
            seen.update(groups)
    for cause in sorted(seen):
        if cause in EXPLANATIONS:
            lines.append(f"- **{cause}**: {EXPLANATIONS[cause]}")
    notes = HERE / "notes.md"
    if notes.exists() and not meta["quick"]:
        # Hand-written reading of the last full run: each transaction-mode difference, its
        # cause, whether a pooler could keep it, and the poolguard bugs found.
        lines += ["", notes.read_text().strip()]
    lines += ["", "## Commands", "", "```sh", meta["invocation"], "```", ""]
    lines.append("Each suite, as run for each target (`<port>`: the target's port, reserved at run "
                 "time; `<out>`: the run's result directory; `$CACHE`: the download cache):")
    lines.append("")
    for s in results["suites"]:
        for target, r in ordered(results["runs"].get(s["name"], {})):
            env = " ".join(f"{k}={v}" for k, v in r["env"].items())
            cmd = generic("cd " + r["cwd"] + " && " + env + " " + r["command"])
            lines.append(f"- {s['name']}: `{cmd}`")
            break
    lines.append("")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path)
    ap.add_argument("--poolguard")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--targets", default=None,
                    help="comma-separated (default: all; quick: direct,session)")
    ap.add_argument("--suites", default=None, help="comma-separated suite names")
    ap.add_argument("--limit", type=int, default=None, help="seconds per suite and target")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--doc", type=Path, default=None)
    ap.add_argument("--fail-on-session-diff", action="store_true")
    ap.add_argument("--report-only", type=Path, default=None,
                    help="recompute the diffs and the report of an earlier run's results.json")
    args = ap.parse_args()
    # A time limit's SIGTERM unwinds like Ctrl-C: servers stopped, temp dirs removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.report_only:
        results = json.loads((args.report_only / "results.json").read_text())
        return finish(results, args.report_only, args)
    if not args.cache or not args.poolguard:
        ap.error("--cache and --poolguard are required")

    started = time.time()
    cache = args.cache.resolve()
    v = versions(cache)
    quick = args.quick
    targets = (args.targets or ("direct,session" if quick
                                else "direct,session,transaction,pgbouncer")).split(",")
    limit = args.limit or (100 if quick else 480)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    outdir = (args.out or HERE / "results" / (stamp + ("-quick" if quick else ""))).resolve()
    outdir.mkdir(parents=True, exist_ok=True)

    suites = [
        (DjangoSuite(cache, "postgres", DJANGO_PG_QUICK if quick else DJANGO_PG_FULL,
                     "django-postgresql"),
         f"Django {v['django']} `tests/runtests.py --parallel 1`, psycopg {v['psycopg']}, apps: "
         + " ".join(DJANGO_PG_QUICK if quick else DJANGO_PG_FULL)),
        (AsyncpgSuite(cache, ASYNCPG_QUICK if quick else ASYNCPG_FULL, "asyncpg"),
         f"asyncpg {v['asyncpg']} `pytest` on its `tests/` (PGHOST set: its RunningCluster; "
         "tests that need a cluster of their own skip), 30 s per test: "
         + " ".join(ASYNCPG_QUICK if quick else ASYNCPG_FULL)),
        (DjangoSuite(cache, "mysql", DJANGO_MY_QUICK if quick else DJANGO_MY_FULL,
                     "django-mariadb"),
         f"Django {v['django']} `tests/runtests.py --parallel 1`, mysqlclient {v['mysqlclient']}, "
         "apps: " + " ".join(DJANGO_MY_QUICK if quick else DJANGO_MY_FULL)),
    ]
    if args.suites:
        wanted = args.suites.split(",")
        suites = [s for s in suites if s[0].name in wanted]
    need_pg = any(s.engine == "postgres" for s, _ in suites)
    need_my = any(s.engine == "mysql" for s, _ in suites)

    tmp = Path(tempfile.mkdtemp(prefix="poolguard-conform-"))
    os.chmod(tmp, 0o755)
    pg = my = None
    results = {"runs": {}, "diffs": {}, "suites": [{"name": s.name, "engine": s.engine,
                                                    "description": d} for s, d in suites]}
    try:
        if need_pg:
            pg = Postgres(tmp).start()
            log(f"PostgreSQL on 127.0.0.1:{pg.port}")
        if need_my:
            my = MariaDB(tmp).start()
            log(f"MariaDB on 127.0.0.1:{my.port}")
        for target in targets:
            proxies = []
            try:
                endpoints = {}
                if target == "direct":
                    if pg:
                        endpoints["postgres"] = {"port": pg.port, "user": PG_USER}
                    if my:
                        endpoints["mysql"] = {"port": my.port, "user": MY_USER, "cnf": my.cnf}
                elif target in ("session", "transaction"):
                    if pg:
                        p = Poolguard(args.poolguard, tmp, target, "postgres", pg.port,
                                      PG_DATABASES, PG_USER).start()
                        proxies.append(p)
                        endpoints["postgres"] = {"port": p.port, "user": PG_USER}
                    if my:
                        p = Poolguard(args.poolguard, tmp, target, "mysql", my.port,
                                      MY_DATABASES, MY_USER).start()
                        proxies.append(p)
                        endpoints["mysql"] = {"port": p.port, "user": MY_USER, "cnf": my.cnf}
                elif target == "pgbouncer":
                    if pg:
                        p = PgBouncer(tmp, pg.port).start()
                        proxies.append(p)
                        endpoints["postgres"] = {"port": p.port, "user": PG_USER}
                else:
                    raise SystemExit(f"unknown target {target}")
                for suite, _ in suites:
                    if suite.engine not in endpoints:
                        continue
                    server = pg if suite.engine == "postgres" else my
                    server.drop_test_databases()
                    r = run_suite(suite, target, endpoints[suite.engine], outdir, limit)
                    results["runs"].setdefault(suite.name, {})[target] = r
            finally:
                for p in proxies:
                    p.stop()
                    if isinstance(p, Poolguard):
                        (outdir / f"poolguard-{target}-{p.protocol}.log").write_text(
                            (p.dir / "log").read_text(errors="replace"))
                        (outdir / f"poolguard-{target}-{p.protocol}.toml").write_text(
                            p.config.read_text().replace(PASSWORD, "<password>"))
        meta = {
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "quick": quick,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
            "poolguard": subprocess.run([args.poolguard, "--version"], capture_output=True,
                                        text=True).stdout.strip() or args.poolguard,
            "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                     capture_output=True, text=True).stdout.strip(),
            "pgbouncer_version": subprocess.run([PGBOUNCER, "--version"], capture_output=True,
                                                text=True).stdout.splitlines()[0],
            "packages": v,
            "limit_s": limit,
            "targets": targets,
            "invocation": "conformance/run" + (" --quick" if quick else ""),
        }
        if pg:
            meta["postgres_version"] = pg.version()
        if my:
            meta["mariadb_version"] = my.version()
    finally:
        for server in (pg, my):
            if server:
                server.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    meta["elapsed_s"] = time.time() - started
    results["meta"] = meta
    return finish(results, outdir, args)


def finish(results, outdir, args):
    """Diffs against direct, results.json, report.md (and --doc), the summary on stdout."""
    results["diffs"] = {}
    for name, per in results["runs"].items():
        base = per.get("direct")
        if not base:
            continue
        for target, r in per.items():
            if target != "direct":
                results["diffs"].setdefault(name, {})[target] = diff(base["tests"], r["tests"],
                                                                      base, r)
    (outdir / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True))
    report = render(results)
    (outdir / "report.md").write_text(report)
    if args.doc:
        args.doc.write_text(report)
    log(f"results: {outdir / 'results.json'}")
    log(f"report:  {outdir / 'report.md'}")

    # Summary on stdout: the table, then the session-mode diff.
    table = report.split("## Results\n\n", 1)[1].split("\n## ", 1)[0]
    print(table)
    session_diffs = {name: per["session"] for name, per in results["diffs"].items()
                     if per.get("session")}
    total = sum(len(items) for g in session_diffs.values() for items in g.values())
    if session_diffs:
        print(f"session mode changed {total} outcome(s) compared with direct:")
        for name, groups in session_diffs.items():
            for cause, items in groups.items():
                for i in items:
                    print(f"  {name}: {i['test']}: {i['direct']} -> {i['target']} [{cause}] "
                          f"{i['message'][:200]}")
    else:
        print("session mode changed no outcome compared with direct")
    if args.fail_on_session_diff and total:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
