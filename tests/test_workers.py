"""Diffs in worker processes (workers.ProcessRunner), on the real reactor."""

from __future__ import annotations

import functools
import multiprocessing
import os
import shutil
import tempfile
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.trial import unittest

from xcapdiff_ext.change import Change
from xcapdiff_ext.changes import DiffProcessing, plan_publication
from xcapdiff_ext.config import parse_settings
from xcapdiff_ext.publisher import Publisher
from xcapdiff_ext.testing import RecordingTransport
from xcapdiff_ext.workers import ProcessRunner

reactor: Any = _reactor
ROOT = "http://xcap.example.com/"
SEL = "resource-lists/users/sip:alice@example.com/index"
OLD = b'<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists"><list name="a"/></resource-lists>'
NEW = OLD.replace(b'"a"', b'"b"')


def change(n: int = 1) -> Change:
    return Change(ROOT, SEL, "sip:alice@example.com", OLD, f"e{n - 1}", NEW, f"e{n}")


def where() -> int:
    return os.getpid()


def die_in_a_worker() -> str:
    if multiprocessing.parent_process() is not None:
        os._exit(3)  # a worker killed mid-job
    return "in-process"


def fail() -> None:
    raise ValueError("planned failure")


class ProcessRunnerTest(unittest.TestCase):
    timeout = 60

    def setUp(self) -> None:
        self.runner = ProcessRunner(reactor)
        self.addCleanup(self.runner.stop)

    @inlineCallbacks
    def test_runs_in_another_process_and_fires_in_the_reactor(self) -> Any:
        pid = yield self.runner(where)
        self.assertNotEqual(pid, os.getpid())
        plan = yield self.runner(
            functools.partial(plan_publication, "sip:alice@example.com", [change()],
                              mode=DiffProcessing.AGGREGATE, chains={}, max_body_bytes=16384)
        )  # fmt: skip
        self.assertIn(b"<d:replace", plan.body)
        self.assertEqual(self.runner.jobs, 2)

    @inlineCallbacks
    def test_errors_come_back_as_failures(self) -> Any:
        with self.assertRaises(ValueError):
            yield self.runner(fail)

    @inlineCallbacks
    def test_a_broken_pool_runs_the_job_in_process_and_recovers(self) -> Any:
        result = yield self.runner(die_in_a_worker)
        self.assertEqual(result, "in-process")
        self.assertEqual(self.runner.inline, 1)
        pid = yield self.runner(where)  # a new pool
        self.assertNotEqual(pid, os.getpid())

    @inlineCallbacks
    def test_after_stop_jobs_run_in_process(self) -> Any:
        yield self.runner(where)  # a pool to stop
        yield self.runner.stop()
        pid = yield self.runner(where)
        self.assertEqual(pid, os.getpid())


class PublisherWithWorkersTest(unittest.TestCase):
    timeout = 60

    @inlineCallbacks
    def test_from_settings_diffs_in_a_worker(self) -> Any:
        spool = tempfile.mkdtemp(prefix="workers-")
        self.addCleanup(shutil.rmtree, spool, True)
        settings = parse_settings({"spool_dir": spool, "min_interval": "0",
                                   "transport": "null", "status_interval": "0"})  # fmt: skip
        self.assertEqual(settings.diff_workers, 1)  # the default
        transport = RecordingTransport()
        pub = Publisher.from_settings(reactor, transport, settings)
        pub.start()
        pub.accept(change())
        for _ in range(200):
            if transport.published:
                break
            yield deferLater(reactor, 0.05, lambda: None)
        yield pub.stop()
        self.assertEqual(len(transport.published), 1)
        self.assertIn(b"<d:replace", transport.published[0].body)
        self.assertGreaterEqual(pub._workers.jobs, 1)


UNGUARDED = """
import os, sys
print("main ran in", os.getpid(), flush=True)
from twisted.internet import task
from xcapdiff_ext.workers import ProcessRunner

def main(reactor):
    runner = ProcessRunner(reactor)
    where = os.getpid  # picklable by reference: a worker imports no __main__
    def done(pid):
        print("job ran in another process:", pid != os.getpid(), flush=True)
        return runner.stop()
    return runner(where).addCallback(done)

task.react(main)
"""


def test_workers_do_not_run_an_unguarded_main_script_again(tmp_path: Any) -> None:
    # spawn runs the parent's __main__ file in each worker unless told otherwise;
    # a host script without an `if __name__ == "__main__"` guard would then start
    # itself again, recursively.
    import subprocess
    import sys

    script = tmp_path / "host.py"
    script.write_text(UNGUARDED)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60,
        cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("main ran in") == 1, proc.stdout
    assert "job ran in another process: True" in proc.stdout
