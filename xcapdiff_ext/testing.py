"""Test doubles shipped with the package (the treq.testing idea): transports that
record what the publisher sends, and one that publishes nowhere."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from .errors import TransportError
from .interfaces import IPublishTransport, Publication, PublishOutcome

__all__ = ["ManualTransport", "NullTransport", "RecordingTransport"]


@implementer(IPublishTransport)
class NullTransport:
    """Accepts every publication and sends it nowhere (``transport = null``)."""

    name = "null"

    def __init__(self) -> None:
        self.count = 0

    def publish(self, publication: Publication) -> Deferred[PublishOutcome]:
        self.count += 1
        return succeed(PublishOutcome(detail="null"))

    def stop(self) -> Deferred[None]:
        return succeed(None)


@implementer(IPublishTransport)
@dataclass
class RecordingTransport:
    """Records publications; answers with the queued results (outcomes or errors),
    then with success.  ``etags`` numbers each success like a presence server would."""

    name: str = "recording"
    published: list[Publication] = field(default_factory=list)
    results: deque[PublishOutcome | TransportError] = field(default_factory=deque)
    granted: int = 0

    def publish(self, publication: Publication) -> Deferred[PublishOutcome]:
        self.published.append(publication)
        if self.results:
            result = self.results.popleft()
            if isinstance(result, TransportError):
                return fail(result)
            return succeed(result)
        self.granted += 1
        return succeed(PublishOutcome(etag=f"e{self.granted}", expires=3600))

    def stop(self) -> Deferred[None]:
        return succeed(None)


@implementer(IPublishTransport)
@dataclass
class ManualTransport:
    """Each publication waits until the test fires ``calls[i][1]``."""

    name: str = "manual"
    calls: list[tuple[Publication, Deferred[PublishOutcome]]] = field(default_factory=list)

    def publish(self, publication: Publication) -> Deferred[PublishOutcome]:
        d: Deferred[PublishOutcome] = Deferred()
        self.calls.append((publication, d))
        return d

    def stop(self) -> Deferred[None]:
        return succeed(None)
