"""``fifo:<path>``: ``pua_publish`` over OpenSIPS's ``mi_fifo`` (Twisted shell).

``MiFifoChannel`` implements ``transport.IMiChannel``.  The protocol (MI.md, "FIFO"):
the client writes ``:<reply_fifo>:<request>`` into OpenSIPS's FIFO; OpenSIPS writes the
reply into ``<reply_dir>/<reply_fifo>`` (its ``reply_dir`` modparam, our ``mi_reply_dir``),
then closes it.  The reply has no trailing newline; the end of the reply is EOF.

Per call:

1. A private reply FIFO is created in ``reply_dir`` with a fresh name from ``new_name``
   (default ``xcapdiff_<pid>_<counter>_<random>``; only ``[A-Za-z0-9_-]``, mi_fifo refuses
   ``.``, ``/``, ``\\``), mode ``reply_mode`` (default ``0o622``: we read, anyone may open
   it for writing, because OpenSIPS usually runs as another user.  Where OpenSIPS shares a
   group with us, ``0o620`` is tighter.  The name is unguessable, so another local user
   can only write into it by racing a listing of ``reply_dir``; a forged reply is at worst
   a wrong ETag (418, then one resend) -- give ``reply_dir`` mode ``0o1733`` to hide it.)
2. It is opened for reading, non-blocking, BEFORE the request is written (OpenSIPS opens
   it non-blocking for writing and fails with "no client" when nobody reads), and read by
   the reactor (``addReader``): nothing blocks.  Bytes are collected until EOF, then
   decoded (at most ``max_reply_bytes``).
3. The request is written into ``fifo_path`` through a pipe descriptor opened for that
   request alone (``O_WRONLY | O_NONBLOCK``; ``ENXIO`` = nobody reads the FIFO: OpenSIPS is
   down, a retryable error).  Writers are serialised inside the channel: one request is
   written completely (one ``os.write`` when it fits the pipe, which is the usual case;
   a request larger than the pipe's free space is finished when the pipe is writable
   again) before the next one's descriptor is opened, so two of OUR requests never
   interleave, whatever their size.  (Other writers of the same FIFO, e.g. opensips-cli,
   are atomic only up to PIPE_BUF: keep bulk publishers on their own FIFO.)
4. A call that has no reply within ``timeout`` seconds (counted from ``call``, queueing
   included) fails retryably: a request OpenSIPS cannot parse gets NO reply (MI.md).

The reply FIFO is closed and unlinked on every path: reply, decode error, timeout,
cancellation, ``stop()``.  A call cancelled (or timed out) while its request is being
written stops writing; if part of it was already written, OpenSIPS sees a truncated
request it cannot parse (no reply; the next request starts in a fresh write).

``check()`` verifies, before use, what can be verified from here: ``reply_dir`` is a
writable directory and ``fifo_path`` is a FIFO we may write.  That ``reply_dir`` is the
``reply_dir`` of mi_fifo cannot be checked: a mismatch shows as timeouts, and the timeout
message says so.
"""

from __future__ import annotations

import collections
import errno
import itertools
import logging
import os
import random
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.base import DelayedCall
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IReadDescriptor, IWriteDescriptor
from zope.interface import implementer

from ..errors import TransportError
from .codec import (
    DEFAULT_MAX_REPLY_BYTES,
    MiProtocol,
    MiResult,
    MiTransport,
    PublishRequest,
    ReplyTooLarge,
    decode_reply,
    encode_request,
)
from .transport import IMiChannel

__all__ = ["MiFifoChannel"]

_log = logging.getLogger("xcapdiff.mi")

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHUNK = 65536


@dataclass(eq=False)
class _Call:
    name: str
    path: str
    request: PublishRequest
    owner: str
    request_id: int | str | None
    data: bytes
    deferred: Deferred[MiResult] = field(init=False)
    reply: bytearray = field(default_factory=bytearray)
    reader: _Reader | None = None
    timer: DelayedCall | None = None
    written: int = 0


@implementer(IReadDescriptor)
class _Reader:
    """The read end of one reply FIFO, registered with the reactor."""

    def __init__(self, fd: int, on_data: Callable[[bytes], None]) -> None:
        self.fd, self._on_data = fd, on_data

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "MiFifoReply"

    def doRead(self) -> None:
        while self.fd >= 0:
            try:
                chunk = os.read(self.fd, _CHUNK)
            except BlockingIOError:
                return
            except OSError as err:
                _log.warning("xcap-diff: MI FIFO reply read failed: %s", err)
                chunk = b""
            self._on_data(chunk)  # b"" = EOF
            if not chunk:
                return

    def connectionLost(self, reason: Any) -> None:
        if self.fd >= 0:
            self._on_data(b"")


@implementer(IWriteDescriptor)
class _Writer:
    """The write end of OpenSIPS's FIFO, opened for one request."""

    def __init__(self, fd: int, channel: MiFifoChannel) -> None:
        self.fd, self._channel = fd, channel

    def fileno(self) -> int:
        return self.fd

    def logPrefix(self) -> str:
        return "MiFifoRequest"

    def doWrite(self) -> None:
        self._channel._write_more()

    def connectionLost(self, reason: Any) -> None:
        self._channel._write_failed(OSError(errno.EPIPE, "FIFO descriptor lost"))
        self._channel._pump()


@implementer(IMiChannel)
class MiFifoChannel:
    """``pua_publish`` over mi_fifo; see the module doc."""

    kind = MiTransport.FIFO

    def __init__(
        self,
        reactor: Any,
        fifo_path: str,
        reply_dir: str,
        *,
        protocol: MiProtocol = MiProtocol.JSONRPC,
        timeout: float = 10.0,
        new_name: Callable[[], str] | None = None,
        reply_mode: int = 0o622,
        max_reply_bytes: int = DEFAULT_MAX_REPLY_BYTES,
    ) -> None:
        """``reactor`` provides IReactorFDSet and IReactorTime (a real reactor)."""
        if timeout <= 0:
            raise ValueError("timeout must be > 0")
        self._reactor = reactor
        self._fifo_path, self._reply_dir = os.fspath(fifo_path), os.fspath(reply_dir)
        self._protocol = MiProtocol(protocol)
        self._timeout = float(timeout)
        self._reply_mode = reply_mode
        self._max_reply_bytes = max_reply_bytes
        if new_name is None:
            rng = random.Random()
            counter = itertools.count(1)
            pid = os.getpid()

            def new_name() -> str:
                return f"xcapdiff_{pid}_{next(counter)}_{rng.getrandbits(64):016x}"

        self._new_name = new_name
        self._new_id = itertools.count(random.Random().randrange(1, 2**31)).__next__
        self._calls: dict[str, _Call] = {}  # by reply FIFO name
        self._writes: collections.deque[_Call] = collections.deque()  # waiting to be written
        self._writing: _Call | None = None
        self._writer: _Writer | None = None
        self._stopped = False

    @property
    def address(self) -> str:
        return f"fifo:{self._fifo_path}"

    def check(self) -> None:
        """Raise ``TransportError`` (not retryable) naming the fix, when ``reply_dir`` or
        ``fifo_path`` cannot work.  A missing ``fifo_path`` is retryable (OpenSIPS down)."""
        reply_dir = self._reply_dir
        if not os.path.isdir(reply_dir):
            raise TransportError(
                f"mi_reply_dir {reply_dir} is not a directory: create it, and set it to the "
                'reply_dir of OpenSIPS\'s mi_fifo (modparam("mi_fifo", "reply_dir", ...))',
                retryable=False,
            )
        if not os.access(reply_dir, os.W_OK | os.X_OK):
            raise TransportError(
                f"mi_reply_dir {reply_dir} is not writable by this user: the reply FIFOs are "
                "created there (e.g. chmod 1733, like /tmp)",
                retryable=False,
            )
        mode = os.stat(reply_dir).st_mode
        if not mode & stat.S_IXOTH:
            _log.warning(
                "xcap-diff: mi_reply_dir %s is not searchable by others: OpenSIPS can open "
                "our reply FIFOs there only if it runs as our user or group",
                reply_dir,
            )
        try:
            st = os.stat(self._fifo_path)
        except FileNotFoundError:
            raise TransportError(
                f"{self._fifo_path} does not exist: is OpenSIPS running with mi_fifo and "
                "fifo_name set to this path?",
                retryable=True,
            ) from None
        if not stat.S_ISFIFO(st.st_mode):
            raise TransportError(
                f"{self._fifo_path} is not a FIFO: mi_url must name mi_fifo's fifo_name",
                retryable=False,
            )
        if not os.access(self._fifo_path, os.W_OK):
            raise TransportError(
                f"{self._fifo_path} is not writable by this user: set mi_fifo's fifo_mode/"
                "fifo_group so that we may write it",
                retryable=False,
            )

    # ------------------------------------------------------------------ IMiChannel

    def call(self, request: PublishRequest, owner: str) -> Deferred[MiResult]:
        if self._stopped:
            return _failed(TransportError(f"MI channel {self.address} is stopped"))
        try:
            name = self._new_name()
            if not isinstance(name, str) or not _NAME.fullmatch(name) or name in self._calls:
                raise TransportError(f"new_name gave an unusable name {name!r}", retryable=False)
            request_id = self._new_id() if self._protocol is MiProtocol.JSONRPC else None
            data = encode_request(
                request,
                protocol=self._protocol,
                transport=MiTransport.FIFO,
                request_id=request_id,
                reply_fifo=name,
            )
            path = os.path.join(self._reply_dir, name)
            call = _Call(name, path, request, owner, request_id, data)
            self._open_reply(call)
        except TransportError as err:
            return _failed(err)

        def cancel(_: Deferred[MiResult]) -> None:
            self._cleanup(call)  # the Deferred then fails with CancelledError

        call.deferred = Deferred(cancel)
        self._calls[name] = call
        call.timer = self._reactor.callLater(self._timeout, self._expired, call)
        self._writes.append(call)
        self._pump()
        return call.deferred

    def stop(self) -> Deferred[None]:
        """Cancel every pending call (closing and unlinking its reply FIFO)."""
        self._stopped = True
        for call in list(self._calls.values()):
            call.deferred.cancel()
        return succeed(None)

    # ------------------------------------------------------------------ reply FIFO

    def _open_reply(self, call: _Call) -> None:
        try:
            os.mkfifo(call.path, 0o600)
        except FileNotFoundError:
            raise TransportError(
                f"mi_reply_dir {self._reply_dir} does not exist: create it (it must be "
                "mi_fifo's reply_dir)",
                retryable=False,
            ) from None
        except PermissionError:
            raise TransportError(
                f"cannot create a reply FIFO in mi_reply_dir {self._reply_dir}: make it "
                "writable by this user",
                retryable=False,
            ) from None
        except OSError as err:
            raise TransportError(f"cannot create reply FIFO {call.path}: {err}") from None
        try:
            os.chmod(call.path, self._reply_mode)  # mkfifo's mode is filtered by the umask
            fd = os.open(call.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            _unlink(call.path)
            raise TransportError(f"cannot open reply FIFO {call.path}: {err}") from None
        call.reader = _Reader(fd, lambda chunk: self._reply_data(call, chunk))
        self._reactor.addReader(call.reader)

    def _reply_data(self, call: _Call, chunk: bytes) -> None:
        if call.name not in self._calls:
            return
        if chunk:
            call.reply += chunk
            if len(call.reply) > self._max_reply_bytes:
                self._finish(
                    call,
                    ReplyTooLarge(f"MI reply larger than {self._max_reply_bytes} bytes"),
                )
            return
        # EOF: OpenSIPS wrote the reply and closed its end.
        try:
            result: MiResult | TransportError = decode_reply(
                bytes(call.reply),
                request=call.request,
                protocol=self._protocol,
                transport=MiTransport.FIFO,
                request_id=call.request_id,
                max_reply_bytes=self._max_reply_bytes,
            )
        except TransportError as err:
            result = err
        self._finish(call, result)

    def _expired(self, call: _Call) -> None:
        call.timer = None
        self._finish(
            call,
            TransportError(
                f"no reply from {self.address} within {self._timeout:g}s to pua_publish "
                f"{call.request.describe} (a request OpenSIPS cannot parse gets none; "
                f"is mi_reply_dir {self._reply_dir} mi_fifo's reply_dir?)",
                retryable=True,
            ),
        )

    def _cleanup(self, call: _Call) -> bool:
        """Forget ``call``; close and unlink its reply FIFO.  False if already done."""
        if self._calls.pop(call.name, None) is None:
            return False
        if call.timer is not None and call.timer.active():
            call.timer.cancel()
        call.timer = None
        reader, call.reader = call.reader, None
        if reader is not None:
            self._reactor.removeReader(reader)
            fd, reader.fd = reader.fd, -1
            os.close(fd)
        _unlink(call.path)
        if call in self._writes:
            self._writes.remove(call)
        if self._writing is call:
            self._end_write()  # a partly written request stays truncated (module doc)
            self._pump()
        return True

    def _finish(self, call: _Call, result: MiResult | TransportError) -> None:
        if not self._cleanup(call):
            return
        if isinstance(result, TransportError):
            call.deferred.errback(result)
        else:
            call.deferred.callback(result)

    # ------------------------------------------------------------------ request writes

    def _pump(self) -> None:
        """Write queued requests one after the other (a loop: no recursion per request)."""
        while self._writing is None and self._writes and not self._stopped:
            call = self._writes.popleft()
            try:
                fd = os.open(self._fifo_path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as err:
                self._finish(call, self._open_error(err))
                continue
            self._writing, self._writer = call, _Writer(fd, self)
            if not self._write_some():
                return  # the pipe is full: doWrite continues

    def _open_error(self, err: OSError) -> TransportError:
        path = self._fifo_path
        if err.errno == errno.ENXIO:
            return TransportError(f"OpenSIPS is not reading {path} (is it running?)")
        if err.errno == errno.ENOENT:
            return TransportError(f"{path} does not exist: is OpenSIPS running with mi_fifo?")
        if err.errno == errno.EACCES:
            return TransportError(
                f"not allowed to write {path}: set mi_fifo's fifo_mode/fifo_group",
                retryable=False,
            )
        return TransportError(f"cannot open {path}: {err}")

    def _write_some(self) -> bool:
        """Write what the pipe takes of the current request; True when it is finished
        (written, or failed), False when waiting for room (the writer is registered)."""
        call, writer = self._writing, self._writer
        if call is None or writer is None:
            return True
        try:
            while call.written < len(call.data):
                call.written += os.write(writer.fd, call.data[call.written :])
        except BlockingIOError:
            self._reactor.addWriter(writer)
            return False
        except OSError as err:
            self._write_failed(err)
            return True
        self._end_write()
        return True

    def _write_more(self) -> None:
        if self._write_some():
            self._pump()

    def _write_failed(self, err: OSError) -> None:
        call = self._writing
        if call is None:
            return
        self._end_write()
        reason = "OpenSIPS stopped reading" if err.errno == errno.EPIPE else str(err)
        self._finish(call, TransportError(f"writing to {self._fifo_path} failed: {reason}"))

    def _end_write(self) -> None:
        writer, self._writer, self._writing = self._writer, None, None
        if writer is not None and writer.fd >= 0:
            self._reactor.removeWriter(writer)
            fd, writer.fd = writer.fd, -1
            os.close(fd)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as err:  # pragma: no cover - the directory changed under us
        _log.warning("xcap-diff: cannot remove reply FIFO %s: %s", path, err)


def _failed(err: TransportError) -> Deferred[MiResult]:
    d: Deferred[MiResult] = Deferred()
    d.errback(err)
    return d
