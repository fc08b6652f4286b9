"""Diffs in worker processes, so the XCAP server's requests never wait for the GIL.

Inside OpenXCAP the publisher runs in a reactor thread next to the server's asyncio
thread.  A diff is a millisecond or two of lxml work that holds the GIL; an I/O-bound
thread that wants the GIL back meanwhile waits for it (up to the 5 ms switch
interval, per I/O step), so diffing every change in-process added ~20% to the
median element PUT of a real OpenXCAP (benchmarks/openxcap_latency.py,
``min_interval = 0``).  In a worker process the diff costs the server nothing but
pickling two documents.

``ProcessRunner(reactor, workers)`` is a ``run_cpu`` for the publisher: it runs a
picklable callable (a ``functools.partial`` of ``changes.plan_publication``) in a
``spawn``-started process pool — never ``fork``, which is unsafe in a process with
threads — and fires a Deferred in the reactor thread.  If the pool breaks (a worker
killed), that job runs in-process and the next one gets a new pool.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, maybeDeferred, succeed

__all__ = ["ProcessRunner"]

_log = logging.getLogger("xcapdiff.workers")
T = TypeVar("T")


@contextlib.contextmanager
def _no_main_import() -> Iterator[None]:
    """While worker processes start: hide ``__main__``'s file and spec, so ``spawn``
    does not run the host's main script again in each worker (it does unless the
    script is guarded by ``if __name__ == "__main__"``; OpenXCAP's is, a custom
    launcher may not be).  Workers need only this package."""
    main = sys.modules.get("__main__")
    keys = ("__file__", "__spec__")
    saved = {k: main.__dict__[k] for k in keys if main is not None and k in main.__dict__}
    try:
        if main is not None:
            main.__dict__.pop("__file__", None)
            main.__spec__ = None
        yield
    finally:
        if main is not None:
            main.__dict__.update(saved)


def _warm() -> bool:
    """Imported in each new worker first, so the first real diff is not the slow one."""
    from . import changes  # noqa: F401  (lxml, the engine, the applier)

    return True


class ProcessRunner:
    def __init__(self, reactor: Any, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self._reactor = reactor
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._stopped = False
        self.jobs = 0
        self.inline = 0  # jobs run in-process because the pool was broken or stopped

    def start(self) -> None:
        """Start the pool now (workers import the diff engine in the background)."""
        self._ensure()

    def _ensure(self) -> ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self._workers, mp_context=context)
            with _no_main_import():
                self._pool.submit(_warm)
        return self._pool

    def __call__(self, func: Callable[[], T]) -> Deferred[T]:
        if self._stopped:
            self.inline += 1
            return maybeDeferred(func)
        try:
            with _no_main_import():  # submit() may start a worker process
                future: Future[T] = self._ensure().submit(func)
        except (BrokenProcessPool, RuntimeError) as err:
            return self._fallback(func, err)
        self.jobs += 1
        d: Deferred[T] = Deferred()

        def done(f: Future[T]) -> None:
            self._reactor.callFromThread(self._settle, f, d, func)

        future.add_done_callback(done)
        return d

    def _settle(self, future: Future[T], d: Deferred[T], func: Callable[[], T]) -> None:
        if future.cancelled():
            d.cancel()
            return
        err = future.exception()
        if isinstance(err, BrokenProcessPool):
            self._fallback(func, err).chainDeferred(d)
        elif err is not None:
            d.errback(err)
        else:
            d.callback(future.result())

    def _fallback(self, func: Callable[[], T], err: BaseException) -> Deferred[T]:
        _log.warning("xcap-diff: diff worker process unavailable (%s): diffing in-process", err)
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        self.inline += 1
        return maybeDeferred(func)

    def stop(self) -> Deferred[None]:
        """Let the workers go: queued jobs are cancelled, a running one (one diff) is
        waited for in a thread, so the pool's processes and semaphores are released
        before the reactor stops."""
        self._stopped = True
        pool, self._pool = self._pool, None
        if pool is None:
            return succeed(None)
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(
            self._reactor,
            self._reactor.getThreadPool(),
            lambda: pool.shutdown(wait=True, cancel_futures=True),
        )
