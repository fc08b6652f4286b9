"""The durable spool: a journal of accepted changes that survives kill -9 (shell).

Issue 3 item 6.  The publisher records every accepted change, every finished
publication (with the etag chain it advanced), each owner's publication state and
every change it gave up; ``open()`` at start replays the journal into a
``SpoolState`` so that nothing accepted is lost across a crash or restart.

Durability is a *group commit*: records are buffered, and the first record after an
idle period arms one ``DelayedCall`` that appends the whole buffer and fsyncs it
``commit_interval`` seconds later, in ``run_in_thread`` when given (production:
``lambda f: deferToThreadPool(reactor, reactor.getThreadPool(), f)``).  At most one
commit runs at a time; a commit asked for while one runs starts right after it.

On disk, ``<spool_dir>/journal`` holds one record per line::

    b"%08x %08x %s\\n" % (len(payload), zlib.crc32(payload), payload)

where the payload is a compact ASCII JSON object with a type ``t``: ``next_id``,
``change``, ``published``, ``pubstate`` or ``dropped``.  A record whose frame, JSON
or fields do not check out (corruption, or a truncated last line after a crash) is
skipped with one WARNING and counted; replay never raises for bad content.
Compaction writes the live state to ``journal.tmp``, fsyncs it, renames it over the
journal and fsyncs the directory, so a crash leaves either journal complete.
``<spool_dir>/lock`` carries the ``flock`` that keeps a second process out.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import stat
import zlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, TypeAlias

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from .change import Change, InvalidRecord
from .errors import SpoolError

__all__ = ["Spool", "SpoolState", "replay"]

_log = logging.getLogger("xcapdiff.spool")

JOURNAL = "journal"
JOURNAL_TMP = "journal.tmp"
LOCK = "lock"

_HEADER = 18  # b"%08x %08x " before the payload
_CHAINS_PER_RECORD = 256  # chains per `published` record in a compacted journal
_FIX = "create it as a directory writable by the xcapdiff user, or set [XCAPDiff] spool_dir"

Runner: TypeAlias = Callable[[Callable[[], Any]], "Deferred[Any]"]
ChainKey: TypeAlias = tuple[str, str]


@dataclass(frozen=True)
class SpoolState:
    """What a replay recovers.

    ``pending``: accepted, neither published nor dropped, in acceptance order, as
    (change id, change).  ``chains``: (xcap_root, document sel) → the new-etag last
    published for that document.  ``pubstate``: owner → (transport etag last granted,
    absolute expiry in reactor seconds).  ``next_id``: the first unused change id.
    ``skipped``: corrupt or truncated records left out (each logged once)."""

    pending: tuple[tuple[int, Change], ...]
    chains: Mapping[ChainKey, str]
    pubstate: Mapping[str, tuple[str | None, float | None]]
    next_id: int
    skipped: int


# -- records -------------------------------------------------------------------------


class _Corrupt(ValueError):
    """A journal line that is not a valid record; the message says why.  (Also what
    ``record_*`` raise for a change id that could not be replayed.)"""


def _frame(record: dict[str, Any]) -> bytes:
    payload = json.dumps(record, separators=(",", ":"), ensure_ascii=True).encode("ascii")
    return b"%08x %08x %s\n" % (len(payload), zlib.crc32(payload), payload)


def _unframe(line: bytes) -> object:
    """The JSON value of one line (newline included); raises ``_Corrupt``."""
    if not line.endswith(b"\n"):
        raise _Corrupt("truncated (no end of line)")
    line = line[:-1]
    if len(line) < _HEADER or line[8:9] != b" " or line[17:18] != b" ":
        raise _Corrupt("bad frame header")
    try:
        length, crc = int(line[:8], 16), int(line[9:17], 16)
    except ValueError:
        raise _Corrupt("bad frame header") from None
    payload = line[_HEADER:]
    if len(payload) != length:
        raise _Corrupt(f"length {len(payload)} != framed length {length}")
    if zlib.crc32(payload) != crc:
        raise _Corrupt("checksum mismatch")
    try:
        return json.loads(payload)
    except (ValueError, RecursionError) as err:
        raise _Corrupt(f"bad JSON: {err}") from None


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise _Corrupt(f"expected a change id, got {value!r}")
    return value


def _ids(value: object) -> list[int]:
    if not isinstance(value, list):
        raise _Corrupt("expected a list of change ids")
    return [_int(v) for v in value]


def _text(value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise _Corrupt(f"expected text, got {type(value).__name__}")
    return value


def _seconds(value: object) -> float | None:
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _Corrupt(f"expected seconds, got {type(value).__name__}")
    return float(value)


class _Live:
    """The state a journal describes, built record by record (replay and compaction)."""

    def __init__(self) -> None:
        self.pending: dict[int, Change] = {}
        self.chains: dict[ChainKey, str] = {}
        self.pubstate: dict[str, tuple[str | None, float | None]] = {}
        self.next_id = 0
        self.skipped = 0

    def apply(self, record: object) -> None:
        """Validate the whole record first, then apply it: a bad one changes nothing."""
        if not isinstance(record, dict):
            raise _Corrupt("a record is a JSON object")
        kind = record.get("t")
        try:
            if kind == "change":
                change_id, change = _int(record["id"]), Change.from_record(record["change"])
                self.pending[change_id] = change
                self.next_id = max(self.next_id, change_id + 1)
            elif kind == "published":
                _text(record["owner"])
                ids = _ids(record["ids"])
                chains = record["chains"]
                if not isinstance(chains, list):
                    raise _Corrupt("chains: expected a list")
                updates: list[tuple[ChainKey, str | None]] = []
                for entry in chains:
                    if not isinstance(entry, list) or len(entry) != 3:
                        raise _Corrupt("chains: expected [root, sel, etag]")
                    root, sel = _text(entry[0]), _text(entry[1])
                    assert root is not None and sel is not None
                    updates.append(((root, sel), _text(entry[2], optional=True)))
                self._done(ids)
                for key, etag in updates:
                    if etag is None:
                        self.chains.pop(key, None)
                    else:
                        self.chains[key] = etag
            elif kind == "pubstate":
                owner = _text(record["owner"])
                assert owner is not None
                etag = _text(record["etag"], optional=True)
                expires = _seconds(record["expires"])
                if etag is None and expires is None:
                    self.pubstate.pop(owner, None)
                else:
                    self.pubstate[owner] = (etag, expires)
            elif kind == "dropped":
                self._done(_ids(record["ids"]))
            elif kind == "next_id":
                self.next_id = max(self.next_id, _int(record["next"]))
            else:
                raise _Corrupt(f"unknown record type {kind!r}")
        except KeyError as err:
            raise _Corrupt(f"{kind} record without {err}") from None
        except InvalidRecord as err:
            raise _Corrupt(str(err)) from None

    def _done(self, ids: list[int]) -> None:
        for change_id in ids:
            self.pending.pop(change_id, None)
            self.next_id = max(self.next_id, change_id + 1)

    def records(self) -> Iterator[dict[str, Any]]:
        """The live state as records, for a compacted journal (replays to the same)."""
        yield {"t": "next_id", "next": self.next_id}
        chains = [[root, sel, etag] for (root, sel), etag in self.chains.items()]
        for start in range(0, len(chains), _CHAINS_PER_RECORD):
            chunk = chains[start : start + _CHAINS_PER_RECORD]
            yield {"t": "published", "owner": "", "ids": [], "chains": chunk}
        for owner, (etag, expires) in self.pubstate.items():
            yield {"t": "pubstate", "owner": owner, "etag": etag, "expires": expires}
        for change_id, change in self.pending.items():
            yield {"t": "change", "id": change_id, "change": change.to_record()}

    def state(self) -> SpoolState:
        return SpoolState(
            pending=tuple(self.pending.items()),
            chains=MappingProxyType(dict(self.chains)),
            pubstate=MappingProxyType(dict(self.pubstate)),
            next_id=self.next_id,
            skipped=self.skipped,
        )


def _replay_file(path: str) -> _Live:
    """Read a journal (missing = empty); bad records are logged and counted, never raised."""
    live = _Live()
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, handles a missing file
    except FileNotFoundError:
        return live
    with handle:
        offset = 0
        for number, line in enumerate(handle, start=1):
            try:
                live.apply(_unframe(line))
            except _Corrupt as err:
                live.skipped += 1
                _log.warning(
                    "xcap-diff: spool %s: skipped record at line %d (byte %d): %s",
                    path,
                    number,
                    offset,
                    err,
                )
            offset += len(line)
    return live


def replay(directory: str | os.PathLike[str]) -> SpoolState:
    """Read-only replay of a spool directory's journal: no lock, no compaction.

    For status tools and tests; a running ``Spool`` may be appending meanwhile, so the
    result is a snapshot of what was durable when the file was read."""
    return _replay_file(os.path.join(os.fspath(directory), JOURNAL)).state()


# -- the file, worker side -----------------------------------------------------------


def _fsync_directory(directory: str) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Journal:
    """The open journal file.  Only one commit job uses it at a time (the Spool sees to
    that), so it may run in a worker thread; it never touches the reactor."""

    def __init__(self, directory: str, compact_bytes: int) -> None:
        self.directory = directory
        self.path = os.path.join(directory, JOURNAL)
        self.tmp = os.path.join(directory, JOURNAL_TMP)
        self.compact_bytes = compact_bytes
        self.fd = -1
        self.offset = 0  # end of the last complete commit: the next one writes here
        self.threshold = compact_bytes
        self.torn = False  # a failed write may have left bytes past offset

    def rewrite(self, live: _Live) -> None:
        """Compaction: the live state to a new file, fsynced, renamed over the journal."""
        with open(self.tmp, "wb") as out:
            for record in live.records():
                out.write(_frame(record))
            out.flush()
            os.fsync(out.fileno())
        os.replace(self.tmp, self.path)
        _fsync_directory(self.directory)
        fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        if self.fd >= 0:
            os.close(self.fd)
        self.fd, self.offset = fd, os.fstat(fd).st_size
        # Pending changes can outgrow compact_bytes (a long outage): do not rewrite
        # the whole journal after every commit then, only once it has doubled.
        self.threshold = max(self.compact_bytes, 2 * self.offset)

    def commit(self, data: bytes) -> int:
        """Append ``data`` at the end of the last commit and fsync; the journal size.

        A failed write is cut off again so that the next commit starts on a clean
        line; the records stay with the caller, who tries them again."""
        if data:
            end = self.offset + len(data)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.pwrite(self.fd, view, end - len(view)) :]
                if self.torn:  # a failed commit may have left bytes beyond ours
                    os.ftruncate(self.fd, end)
                os.fsync(self.fd)
            except OSError as err:
                self.torn = True
                with contextlib.suppress(OSError):
                    os.ftruncate(self.fd, self.offset)
                raise SpoolError(f"spool {self.directory}: cannot append: {err}") from err
            self.torn = False
            self.offset = end
            if self.offset > self.threshold:
                self._compact()
        return self.offset

    def _compact(self) -> None:
        before = self.offset
        try:
            self.rewrite(_replay_file(self.path))
        except OSError as err:  # the commit itself is durable: keep the long journal
            self.threshold = 2 * self.offset
            _log.warning(
                "xcap-diff: spool %s: compaction failed, journal kept: %s", self.directory, err
            )
            return
        _log.info(
            "xcap-diff: spool %s: compacted %d -> %d bytes", self.directory, before, self.offset
        )

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# -- the Spool, reactor side ---------------------------------------------------------


def _run_here(job: Callable[[], Any]) -> Deferred[Any]:
    return defer.maybeDeferred(job)


class Spool:
    """The journal of one spool directory, owned by one process at a time.

    Call ``open()`` once at start, then the ``record_*`` methods (cheap: they only
    buffer), and ``stop()`` at the end.  Records are applied on replay in the order
    they were recorded.  ``flush()`` and ``stop()`` fail with ``SpoolError`` when the
    disk refuses the write; unwritten records are then kept and tried again."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        reactor: IReactorTime,
        *,
        run_in_thread: Runner | None = None,
        commit_interval: float = 0.1,
        compact_bytes: int = 8 * 1024 * 1024,
    ) -> None:
        if commit_interval < 0:
            raise ValueError(f"commit_interval must be >= 0 seconds: {commit_interval!r}")
        if compact_bytes <= 0:
            raise ValueError(f"compact_bytes must be > 0: {compact_bytes!r}")
        self._directory = os.fspath(directory)
        self._reactor = reactor
        self._run = run_in_thread if run_in_thread is not None else _run_here
        self._commit_interval = commit_interval
        self._compact_bytes = compact_bytes
        self._journal: _Journal | None = None
        self._lock_fd = -1
        self._buffer: list[bytes] = []
        self._timer: IDelayedCall | None = None
        self._running = False  # a commit job is in flight
        self._again = False  # ... and another one must start right after it
        self._waiting: list[Deferred[None]] = []  # fire when the next commit completes
        self._size = 0
        self._stopping = False  # stop() was called: no more records
        self._stop_waiters: list[Deferred[None]] = []
        self._stop_outcome: object = None  # None, or the Failure of the final commit
        self._closed = False
        self._failing = False  # the last commit failed (log once per streak)

    # -- start ----------------------------------------------------------------------

    def open(self) -> SpoolState:
        """Check the directory, lock it, replay and compact the journal (synchronous).

        Raises ``SpoolError`` with a one-line message naming the path and the fix."""
        if self._journal is not None or self._closed:
            raise SpoolError(f"spool {self._directory}: open() called twice")
        directory = self._directory
        try:
            mode = os.stat(directory).st_mode
        except OSError as err:  # ENOENT, ENOTDIR (a parent is a file), EACCES
            raise SpoolError(f"spool_dir {directory!r}: {err.strerror}: {_FIX}") from err
        if not stat.S_ISDIR(mode):
            raise SpoolError(f"spool_dir {directory!r} is not a directory: {_FIX}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SpoolError(
                f"spool_dir {directory!r} is not writable by uid {os.getuid()}: {_FIX}"
            )
        self._lock_fd = self._lock(directory)
        try:
            live = _replay_file(os.path.join(directory, JOURNAL))
            journal = _Journal(directory, self._compact_bytes)
            journal.rewrite(live)
        except OSError as err:
            self._unlock()
            raise SpoolError(f"spool_dir {directory!r}: cannot rewrite the journal: {err}") from err
        except BaseException:
            self._unlock()
            raise
        self._journal, self._size = journal, journal.offset
        state = live.state()
        _log.info(
            "xcap-diff: spool %s: %d pending changes, %d document chains, %d publications, "
            "next id %d, %d bad records skipped",
            directory,
            len(state.pending),
            len(state.chains),
            len(state.pubstate),
            state.next_id,
            state.skipped,
        )
        return state

    @staticmethod
    def _lock(directory: str) -> int:
        path = os.path.join(directory, LOCK)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as err:
            raise SpoolError(
                f"spool_dir {directory!r}: cannot create {path}: {err.strerror}: {_FIX}"
            ) from err
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise SpoolError(
                    f"spool_dir {directory!r} is in use by another process (lock {path}): "
                    "stop the other xcapdiff instance or give this one another spool_dir"
                ) from err
            raise SpoolError(f"spool_dir {directory!r}: cannot lock {path}: {err}") from err
        try:  # for humans only: who holds the lock
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        except OSError:
            pass
        return fd

    def _unlock(self) -> None:
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1

    # -- records --------------------------------------------------------------------

    def record_change(self, change_id: int, change: Change) -> None:
        """An accepted change, pending until published or dropped."""
        self._record({"t": "change", "id": _int(change_id), "change": change.to_record()})

    def record_published(
        self, owner: str, change_ids: Sequence[int], chains: Mapping[ChainKey, str | None]
    ) -> None:
        """Those changes are delivered; ``chains`` maps (xcap_root, sel) to the new-etag
        now published for that document (None: deleted, the entry goes)."""
        entries = [[root, sel, etag] for (root, sel), etag in chains.items()]
        self._record(
            {"t": "published", "owner": owner, "ids": _ids(list(change_ids)), "chains": entries}
        )

    def record_pubstate(self, owner: str, etag: str | None, expires_at: float | None) -> None:
        """The transport etag last granted for ``owner`` and its absolute expiry (reactor
        seconds).  (None, None) forgets the owner's publication."""
        self._record({"t": "pubstate", "owner": owner, "etag": etag, "expires": expires_at})

    def record_dropped(self, change_ids: Sequence[int]) -> None:
        """Changes given up by policy: no longer pending."""
        self._record({"t": "dropped", "ids": _ids(list(change_ids))})

    def _record(self, record: dict[str, Any]) -> None:
        if self._journal is None or self._stopping:
            raise SpoolError(f"spool {self._directory}: not open")
        self._buffer.append(_frame(record))
        if self._timer is None:
            self._timer = self._reactor.callLater(self._commit_interval, self._on_timer)

    # -- commits --------------------------------------------------------------------

    def flush(self) -> Deferred[None]:
        """Commit what is buffered now; fires when it is durable.  Cancelling only stops
        the wait: the commit itself goes on."""
        if self._journal is None or self._stopping:
            raise SpoolError(f"spool {self._directory}: not open")
        return self._flush()

    def _flush(self) -> Deferred[None]:
        if not self._buffer and not self._running:
            return defer.succeed(None)
        waiter: Deferred[None] = Deferred(self._forget)
        self._waiting.append(waiter)
        if self._running:
            self._again = True
            self._cancel_timer()
        else:
            self._start_commit()
        return waiter

    def _forget(self, waiter: Deferred[None]) -> None:
        if waiter in self._waiting:
            self._waiting.remove(waiter)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _on_timer(self) -> None:
        self._timer = None
        if self._running:
            self._again = True
        else:
            self._start_commit()

    def _start_commit(self) -> None:
        assert self._journal is not None and not self._running
        self._cancel_timer()  # everything buffered goes into this commit
        data, self._buffer = b"".join(self._buffer), []
        waiters, self._waiting = self._waiting, []
        if not data:  # the commit they wait for is over already: nothing to write
            for waiter in waiters:
                _fire(waiter, None)
            return
        self._running = True
        journal = self._journal
        done = defer.maybeDeferred(self._run, lambda: journal.commit(data))
        done.addBoth(self._commit_done, data, waiters)

    def _commit_done(self, result: object, data: bytes, waiters: list[Deferred[None]]) -> None:
        self._running = False
        outcome: object = None
        if isinstance(result, Failure):
            error = result.value
            if not isinstance(error, SpoolError):
                error = SpoolError(f"spool {self._directory}: commit failed: {error}")
            if not self._failing:
                _log.error("xcap-diff: %s (%d bytes kept, retrying)", error, len(data))
            self._failing = True
            if data:
                self._buffer.insert(0, data)
            if not self._stopping and self._buffer and self._timer is None:
                self._timer = self._reactor.callLater(self._commit_interval, self._on_timer)
            outcome = Failure(error)
        else:
            if self._failing:
                _log.warning("xcap-diff: spool %s: commits succeed again", self._directory)
            self._failing = False
            assert isinstance(result, int)
            self._size = result
        if self._again:  # before the waiters run: one of them may be stop()'s _close
            self._again = False
            self._start_commit()
        for waiter in waiters:
            _fire(waiter, outcome)

    # -- status and stop ------------------------------------------------------------

    def size(self) -> int:
        """Bytes of the journal on disk after the last commit (for status)."""
        return self._size

    def stop(self) -> Deferred[None]:
        """Final commit, then release the lock; no DelayedCall is left afterwards.

        Fails with ``SpoolError`` if the final commit does (the lock is released anyway
        and the records of that commit are lost).  Cancelling only stops the wait."""
        waiter: Deferred[None] = Deferred()
        if self._closed:
            _fire(waiter, self._stop_outcome)
            return waiter
        self._stop_waiters.append(waiter)
        if not self._stopping:
            self._stopping = True
            if self._journal is None:
                self._close(None)
            else:
                self._cancel_timer()
                self._flush().addBoth(self._close)
        return waiter

    def _close(self, result: object) -> None:
        if self._running:  # an earlier flush's commit is still running: wait for it too
            self._flush().addBoth(self._close)
            return
        self._cancel_timer()
        if self._journal is not None:
            self._journal.close()
        self._unlock()
        self._closed = True
        if isinstance(result, Failure):
            _log.error(
                "xcap-diff: spool %s: stopped with records not written: %s",
                self._directory,
                result.value,
            )
        self._buffer.clear()
        self._stop_outcome = result
        waiters, self._stop_waiters = self._stop_waiters, []
        for waiter in waiters:
            _fire(waiter, result)


def _fire(waiter: Deferred[None], outcome: object) -> None:
    """Fire a caller's Deferred unless it was cancelled meanwhile."""
    if waiter.called:
        return
    if isinstance(outcome, Failure):
        waiter.errback(outcome)
    else:
        waiter.callback(None)
