"""Child process for test_crash.py: a real reactor, spool and publisher.

python -m tests.publisher.crash_child load SPOOL OUT OWNERS CHANGES
    accept CHANGES changes over OWNERS owners while the transport is down,
    print ACCEPTED, then keep running until killed;
python -m tests.publisher.crash_child recover SPOOL OUT
    replay the spool with a working transport that appends each delivered
    publication to OUT (one JSON line), print DONE when nothing is pending.
"""

from __future__ import annotations

import json
import os
import sys

from twisted.internet import reactor, task, threads
from twisted.internet.defer import fail, inlineCallbacks, succeed

from xcapdiff_ext.change import Change
from xcapdiff_ext.errors import TransportError
from xcapdiff_ext.interfaces import PublishOutcome
from xcapdiff_ext.publisher import Policy, Publisher
from xcapdiff_ext.spool import Spool
from xcapdiff_ext.xcapdiff import parse_xcap_diff

ROOT = "http://xcap.example.com/"


def document(owner: str, version: int) -> bytes:
    entries = "".join(
        f'    <entry uri="sip:buddy{k}@example.com"/>\n' for k in range(version % 7 + 1)
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<resource-lists xmlns="urn:ietf:params:xml:ns:resource-lists">\n'
        f'  <list name="{owner}">\n{entries}  </list>\n</resource-lists>\n'
    ).encode()


class Down:
    name = "down"

    def publish(self, publication):
        return fail(TransportError("presence server down"))

    def stop(self):
        return succeed(None)


class ToFile:
    name = "file"

    def __init__(self, path: str) -> None:
        self.path = path

    def publish(self, publication):
        diff = parse_xcap_diff(publication.body)
        line = {
            "owner": publication.owner,
            "docs": [[e.sel, e.previous_etag, e.new_etag] for e in diff.entries],
        }
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(line) + "\n")
        return succeed(PublishOutcome(etag="E", expires=3600))

    def stop(self):
        return succeed(None)


def in_thread(func):
    return threads.deferToThreadPool(reactor, reactor.getThreadPool(), func)


@inlineCallbacks
def load(spool_dir: str, owners: int, changes: int):
    spool = Spool(spool_dir, reactor, run_in_thread=in_thread)
    policy = Policy(min_interval=0.5, retry_initial=60, retry_max=60, status_interval=0)
    pub = Publisher(reactor, Down(), policy, spool=spool, run_cpu=in_thread)
    pub.start()
    version = dict.fromkeys(range(owners), 0)
    for k in range(changes):
        o = k % owners
        owner = f"sip:user{o}@example.com"
        v = version[o]
        old = document(owner, v) if v else None
        pub.accept(
            Change(
                ROOT,
                f"resource-lists/users/{owner}/index",
                owner,
                old,
                f"e{v}" if v else None,
                document(owner, v + 1),
                f"e{v + 1}",
                time=reactor.seconds(),
            )
        )
        version[o] = v + 1
    yield task.deferLater(reactor, 0, lambda: None)
    print("ACCEPTED", flush=True)


@inlineCallbacks
def recover(spool_dir: str, out: str):
    spool = Spool(spool_dir, reactor, run_in_thread=in_thread)
    pub = Publisher(
        reactor,
        ToFile(out),
        Policy(min_interval=0, status_interval=0),
        spool=spool,
        run_cpu=in_thread,
    )
    pub.start()
    while pub.status()["owners_waiting"]:
        yield task.deferLater(reactor, 0.02, lambda: None)
    yield pub.stop()
    print("DONE", flush=True)
    reactor.stop()


def main() -> None:
    mode, spool_dir = sys.argv[1], sys.argv[2]
    if mode == "load":
        reactor.callWhenRunning(load, spool_dir, int(sys.argv[4]), int(sys.argv[5]))
    else:
        reactor.callWhenRunning(recover, spool_dir, sys.argv[3])
    reactor.run()
    os._exit(0)


if __name__ == "__main__":
    main()
