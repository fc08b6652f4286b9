"""The transport interface between the publisher and OpenSIPS (STYLE §5).

One verb returning a Deferred, like ``IAgent.request``: a transport takes one
publication for one owner and fires with a ``PublishOutcome`` or fails with a
``TransportError`` (whose ``retryable`` tells the publisher whether to try again).
Retries live in the publisher, not in transports: a publication waiting for a retry
absorbs the owner's newer changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Attribute, Interface

from .xcapdiff import MEDIA_TYPE

__all__ = ["IPublishTransport", "Publication", "PublishOutcome"]


@dataclass(frozen=True, slots=True)
class Publication:
    """An xcap-diff body for one owner (the presentity, a SIP AOR).

    ``etag`` is the entity-tag the peer granted for this owner's previous publication
    (RFC 3903 SIP-If-Match, pua_publish ``etag``), None for an initial one."""

    owner: str
    body: bytes
    etag: str | None = None
    content_type: str = MEDIA_TYPE
    event: str = "xcap-diff"

    def __post_init__(self) -> None:
        if not self.owner.startswith(("sip:", "sips:")):
            raise ValueError(f"the owner must be a SIP URI: {self.owner!r}")


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """What the peer granted: its entity tag for the publication and its lifetime."""

    etag: str | None = None
    expires: int | None = None
    detail: str = ""


class IPublishTransport(Interface):
    """Delivers publications to a presence server."""

    name = Attribute("Short name for logs and status: 'mi', 'sip', 'null', ...")

    def publish(publication: Publication) -> Deferred[PublishOutcome]:
        """Deliver one publication; fails only with ``TransportError`` subclasses."""

    def stop() -> Deferred[None]:
        """Give up pending work and release sockets; fires when nothing is left."""
