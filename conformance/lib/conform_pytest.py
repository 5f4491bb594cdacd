"""pytest plugin used by the conformance harness (loaded with `-p conform_pytest`).

Appends one JSON line per test to $CONFORM_RESULTS as soon as the test's outcome is known
(test id, outcome, failure text), so a run stopped by the harness's time limit keeps every
outcome seen so far; pytest's own --junitxml is only written at the end.
"""
import json
import os

_RANK = {"passed": 0, "skipped": 1, "xfail": 2, "xpass": 3, "failed": 4, "error": 5}


def _write(nodeid, outcome, message):
    path = os.environ.get("CONFORM_RESULTS")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": nodeid, "outcome": outcome, "message": message[:2000]}) + "\n")


def pytest_runtest_logreport(report):
    message = ""
    if report.longrepr is not None:
        crash = getattr(report.longrepr, "reprcrash", None)
        message = crash.message if crash is not None else str(report.longrepr)[-1500:]
    if hasattr(report, "wasxfail"):
        if report.skipped:
            _write(report.nodeid, "xfail", report.wasxfail)
        elif report.passed and report.when == "call":
            _write(report.nodeid, "xpass", report.wasxfail)
        return
    if report.when == "call":
        if report.passed:
            _write(report.nodeid, "passed", "")
        elif report.failed:
            _write(report.nodeid, "failed", message)
        elif report.skipped:
            _write(report.nodeid, "skipped", message)
    elif report.failed:  # setup or teardown
        _write(report.nodeid, "error", f"{report.when}: {message}")
    elif report.skipped:  # skipped at setup (skip markers, skipTest in setUp)
        _write(report.nodeid, "skipped", message)
