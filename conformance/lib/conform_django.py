"""Django test runner and settings used by the conformance harness.

Django's own test suite (tests/runtests.py from the Django sdist) is run unchanged with
`--settings=conform_django`; this module is both the settings module and the home of
RecordingRunner, a DiscoverRunner whose result class appends one JSON line per test outcome
to $CONFORM_RESULTS (test id, outcome, exception text), so that partial runs (a time limit hit)
still leave the outcomes seen so far.

Connection parameters come from the environment, set by conformance/harness.py:
CONFORM_ENGINE (postgresql | mysql), CONFORM_HOST, CONFORM_PORT, CONFORM_USER,
CONFORM_PASSWORD, CONFORM_MYSQL_CNF (MySQL only: an option file naming a default database,
for Django's connections that name none).
"""
import json
import os
import unittest

from django.test.runner import DiscoverRunner

_engine = os.environ.get("CONFORM_ENGINE", "postgresql")


def _db(name):
    conf = {
        "ENGINE": "django.db.backends." + _engine,
        "NAME": name,
        "USER": os.environ.get("CONFORM_USER", ""),
        "PASSWORD": os.environ.get("CONFORM_PASSWORD", ""),
        "HOST": os.environ.get("CONFORM_HOST", "127.0.0.1"),
        "PORT": os.environ.get("CONFORM_PORT", ""),
        "TEST": {"NAME": "test_" + name},
        "OPTIONS": {},
    }
    if _engine == "mysql":
        conf["OPTIONS"] = {"charset": "utf8mb4"}
        if os.environ.get("CONFORM_MYSQL_CNF"):
            conf["OPTIONS"]["read_default_file"] = os.environ["CONFORM_MYSQL_CNF"]
        conf["TEST"]["CHARSET"] = "utf8mb4"
    return conf


DATABASES = {"default": _db("conform"), "other": _db("other")}
SECRET_KEY = "conformance-harness-not-secret"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
USE_TZ = False
TEST_RUNNER = "conform_django.RecordingRunner"

_RANK = {"passed": 0, "skipped": 1, "xfail": 2, "xpass": 3, "failed": 4, "error": 5}


def _describe(err):
    """'Type: message' for an exception and the exceptions it was raised from."""
    _type, value, _tb = err
    parts, seen = [], set()
    while value is not None and id(value) not in seen and len(parts) < 4:
        seen.add(id(value))
        parts.append(f"{type(value).__module__}.{type(value).__name__}: {value}")
        value = value.__cause__ or value.__context__
    return " <- ".join(parts)[:2000]


class RecordingResult(unittest.TextTestResult):
    def _record(self, test, outcome, message=""):
        path = os.environ.get("CONFORM_RESULTS")
        if not path:
            return
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": test.id(), "outcome": outcome, "message": message}) + "\n")

    def addSuccess(self, test):
        super().addSuccess(test)
        self._record(test, "passed")

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self._record(test, "failed", _describe(err))

    def addError(self, test, err):
        super().addError(test, err)
        self._record(test, "error", _describe(err))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self._record(test, "skipped", str(reason)[:300])

    def addExpectedFailure(self, test, err):
        super().addExpectedFailure(test, err)
        self._record(test, "xfail")

    def addUnexpectedSuccess(self, test):
        super().addUnexpectedSuccess(test)
        self._record(test, "xpass")

    def addSubTest(self, test, subtest, err):
        super().addSubTest(test, subtest, err)
        if err is not None:
            failed = issubclass(err[0], test.failureException)
            self._record(test, "failed" if failed else "error", f"{subtest}: " + _describe(err))


class RecordingRunner(DiscoverRunner):
    def get_resultclass(self):
        return RecordingResult
