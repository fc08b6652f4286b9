"""MiFifoChannel against the in-process fake mi_fifo on a real FIFO pair in a temp dir.

Each test runs on its own PollReactor (``fakes.run``), never the global one."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, DeferredList, gatherResults

from tests.mi.fakes import FakeMiFifo, FakePua, Harness, open_fds, run
from xcapdiff_ext.errors import TransportError
from xcapdiff_ext.interfaces import Publication
from xcapdiff_ext.mi.codec import Published, PublishRequest, RemoteProtocolError, SipRejected
from xcapdiff_ext.mi.fifo import MiFifoChannel
from xcapdiff_ext.mi.transport import MiPublishTransport

CT = "application/xcap-diff+xml"
BODY = b'<xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/">\n</xcap-diff>'


def req(user: str = "alice", etag: str | None = None, body: bytes = BODY) -> PublishRequest:
    return PublishRequest(f"sip:{user}@127.0.0.1", 3600, CT, body, etag)


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[str, str]:
    replies = tmp_path / "replies"
    replies.mkdir()
    return str(tmp_path / "opensips_fifo"), str(replies)


def setup(h: Harness, dirs: tuple[str, str], pua: FakePua | None = None, **kw: Any) -> Any:
    fifo, replies = dirs
    server = FakeMiFifo(h.reactor, fifo, replies, pua)
    channel = MiFifoChannel(h.reactor, fifo, replies, **kw)
    return server, channel


async def shutdown(h: Harness, dirs: tuple[str, str], server: FakeMiFifo, channel: Any) -> None:
    await channel.stop()
    server.stop()
    assert os.listdir(dirs[1]) == []  # every reply FIFO unlinked
    assert h.delayed_calls() == []


def test_success_with_a_private_reply_fifo(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        server, channel = setup(h, dirs)
        channel.check()
        result = await channel.call(req(), "sip:alice@127.0.0.1")
        assert isinstance(result, Published) and result.etag == "a.alice.1"
        assert result.expires == 3600
        params = server.pua.requests[0]["params"]
        assert params["body"] == BODY.decode() and "extra_headers" not in params
        await shutdown(h, dirs, server, channel)

    run(test)


def test_418_then_success_through_publish_transport(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        server, channel = setup(h, dirs)
        transport = MiPublishTransport(channel, expires=3600)
        outcome = await transport.publish(Publication("sip:bob@127.0.0.1", BODY, etag="stale"))
        assert outcome.etag == "a.bob.1"
        params = [m["params"] for m in server.pua.requests]
        assert params[0]["etag"] == "stale" and "etag" not in params[1]
        await shutdown(h, dirs, server, channel)

    run(test)


def test_result_level_408_is_a_retryable_failure(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        server, channel = setup(h, dirs, FakePua(reply_408=True))
        with pytest.raises(SipRejected) as info:
            await channel.call(req(), "sip:alice@127.0.0.1")
        assert info.value.status == 408 and info.value.retryable
        await shutdown(h, dirs, server, channel)

    run(test)


def test_no_reply_times_out_and_removes_the_reply_fifo(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        server, channel = setup(h, dirs, FakePua(silent=True), timeout=0.2)
        before = open_fds()
        with pytest.raises(TransportError, match="no reply from fifo:") as info:
            await channel.call(req(), "sip:alice@127.0.0.1")
        assert info.value.retryable
        assert open_fds() == before
        await shutdown(h, dirs, server, channel)

    run(test)


def test_garbage_reply_is_a_typed_error(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        server, channel = setup(h, dirs, FakePua(garbage=True))
        with pytest.raises(RemoteProtocolError):
            await channel.call(req(), "sip:alice@127.0.0.1")
        await shutdown(h, dirs, server, channel)

    run(test)


def test_opensips_not_reading(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        fifo, replies = dirs
        os.mkfifo(fifo)  # exists, but nobody has it open for reading
        channel = MiFifoChannel(h.reactor, fifo, replies)
        channel.check()
        with pytest.raises(TransportError, match="OpenSIPS is not reading") as info:
            await channel.call(req(), "sip:alice@127.0.0.1")
        assert info.value.retryable and os.listdir(replies) == []
        await channel.stop()
        assert h.delayed_calls() == []

    run(test)


def test_100_owners_at_once_no_crossed_replies(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        server, channel = setup(h, dirs)
        before = open_fds()
        users = [f"user{i}" for i in range(100)]
        results = await gatherResults([channel.call(req(u), f"sip:{u}@127.0.0.1") for u in users])
        for user, result in zip(users, results, strict=True):
            assert result.etag.startswith(f"a.{user}.")
        assert len(server.pua.requests) == 100 and server.unanswered == []
        assert open_fds() == before
        await shutdown(h, dirs, server, channel)

    run(test)


def test_large_requests_are_never_interleaved(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        server, channel = setup(h, dirs)
        waits: list[Any] = []
        add_writer = h.reactor.addWriter
        h.reactor.addWriter = lambda w: (waits.append(w), add_writer(w))[1]
        # Each request is larger than the pipe (64 KiB): written in several pieces.
        bodies = [b"<x>" + bytes([97 + i]) * 150_000 + b"</x>" for i in range(4)]
        calls = [
            channel.call(req(f"u{i}", body=b), f"sip:u{i}@127.0.0.1") for i, b in enumerate(bodies)
        ]
        results = await gatherResults(calls)
        assert [r.etag for r in results] == [f"a.u{i}.{i + 1}" for i in range(4)]
        got = [m["params"]["body"].encode() for m in server.pua.requests]
        assert got == bodies and len(waits) >= 4  # each waited for room in the pipe
        await shutdown(h, dirs, server, channel)

    run(test)


def test_cancel_and_stop_remove_everything(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        server, channel = setup(h, dirs, FakePua(silent=True), timeout=5)
        before = open_fds()
        cancelled = channel.call(req("c"), "sip:c@127.0.0.1")
        assert len(os.listdir(dirs[1])) == 1
        cancelled.cancel()
        assert os.listdir(dirs[1]) == []
        pending = [channel.call(req(f"u{i}"), f"sip:u{i}@127.0.0.1") for i in range(5)]
        assert len(os.listdir(dirs[1])) == 5 and len(h.delayed_calls()) == 5
        await channel.stop()
        outcomes = await DeferredList(pending, consumeErrors=True)
        assert all(not ok and f.check(CancelledError) for ok, f in outcomes)
        with pytest.raises(CancelledError):
            await cancelled
        assert open_fds() == before
        with pytest.raises(TransportError, match="stopped"):
            await channel.call(req(), "sip:alice@127.0.0.1")
        await shutdown(h, dirs, server, channel)

    run(test)


def test_reply_fifo_names_and_mode(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        seen: list[tuple[str, int]] = []
        server, channel = setup(h, dirs, FakePua(silent=True), timeout=5)
        d = channel.call(req(), "sip:alice@127.0.0.1")
        for name in os.listdir(dirs[1]):
            mode = os.stat(os.path.join(dirs[1], name)).st_mode
            assert stat.S_ISFIFO(mode)
            seen.append((name, stat.S_IMODE(mode)))
        ((name, mode),) = seen
        assert name.replace("_", "").replace("-", "").isalnum() and "." not in name
        assert mode == 0o622
        d.cancel()
        await DeferredList([d], consumeErrors=True)
        await shutdown(h, dirs, server, channel)

    run(test)


def test_bad_new_name_is_refused(dirs: tuple[str, str]) -> None:
    async def test(h: Harness) -> None:
        server, channel = setup(h, dirs, new_name=lambda: "bad.name")
        with pytest.raises(TransportError, match="unusable name"):
            await channel.call(req(), "sip:alice@127.0.0.1")
        await shutdown(h, dirs, server, channel)

    run(test)


def test_check_explains_the_fix(tmp_path: Path) -> None:
    fifo, plain = str(tmp_path / "fifo"), tmp_path / "plain"
    plain.write_text("")
    channel = MiFifoChannel(object(), fifo, str(tmp_path / "missing"))
    with pytest.raises(TransportError, match="is not a directory"):
        channel.check()
    channel = MiFifoChannel(object(), fifo, str(tmp_path))
    with pytest.raises(TransportError, match="does not exist") as info:
        channel.check()
    assert info.value.retryable
    channel = MiFifoChannel(object(), str(plain), str(tmp_path))
    with pytest.raises(TransportError, match="is not a FIFO"):
        channel.check()


def test_missing_reply_dir_fails_permanently(tmp_path: Path) -> None:
    async def test(h: Harness) -> None:
        fifo = str(tmp_path / "fifo")
        server = FakeMiFifo(h.reactor, fifo, str(tmp_path))
        channel = MiFifoChannel(h.reactor, fifo, str(tmp_path / "missing"))
        with pytest.raises(TransportError, match="does not exist") as info:
            await channel.call(req(), "sip:alice@127.0.0.1")
        assert not info.value.retryable
        await channel.stop()
        server.stop()

    run(test)
