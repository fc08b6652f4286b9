"""The ``mi`` transport: xcap-diff publications through OpenSIPS's ``pua_publish`` (shell).

``MiPublishTransport`` implements ``IPublishTransport`` on top of one ``IMiChannel``
(HTTP, datagram, FIFO or XML-RPC; ``channels.py``), which moves one encoded request
and its reply.  The codec (``codec.py``) decides what a reply means.

Publication state: pua keeps one publication per (presentity, event) and reuses its
own stored ETag when a ``pua_publish`` comes without one (MI.md).  We still send the
ETag OpenSIPS granted last (the publisher keeps it, in the spool too), so that after
*our* restart the existing publication is modified rather than duplicated; when
OpenSIPS does not know it (its restart, expiry) it answers ``418 Wrong ETag`` and the
request is sent once more without it (``RetryWithoutEtag``).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, inlineCallbacks
from zope.interface import Attribute, Interface, implementer

from ..interfaces import IPublishTransport, Publication, PublishOutcome
from .codec import CommandRequest, MiError, Published, PublishRequest, RetryWithoutEtag

__all__ = ["IMiChannel", "MiPublishTransport"]


class IMiChannel(Interface):
    """Moves one ``pua_publish`` request to OpenSIPS's MI and brings back its meaning."""

    kind = Attribute("codec.MiTransport: HTTP, DATAGRAM, FIFO or XMLRPC")

    def call(request: PublishRequest, owner: str) -> Deferred[Published | RetryWithoutEtag]:
        """Encode ``request``, send it, wait for the reply (with the channel's timeout)
        and decode it.  Fails only with ``TransportError`` subclasses (a timeout is a
        retryable one).  ``owner`` lets a channel queue fairly across owners."""

    def stop() -> Deferred[None]:
        """Cancel pending calls, close sockets and files; fires when nothing is left."""


@implementer(IPublishTransport)
class MiPublishTransport:
    """``pua_publish`` for every publication, with the 418 fallback described above."""

    name = "mi"

    def __init__(self, channel: Any, *, expires: int) -> None:
        if expires <= 0:
            raise ValueError("pua_publish with expires 0 removes the publication")
        self._channel, self._expires = channel, expires

    @inlineCallbacks
    def publish(self, publication: Publication) -> Any:
        request = PublishRequest.from_publication(publication, expires=self._expires)
        reply = yield self._channel.call(request, publication.owner)
        if isinstance(reply, RetryWithoutEtag):
            reply = yield self._channel.call(reply.request, publication.owner)
            if isinstance(reply, RetryWithoutEtag):  # cannot happen: no etag was sent
                raise MiError(418, "Wrong ETag", hint="418 to a request without an etag")
        assert isinstance(reply, Published)
        return PublishOutcome(etag=reply.etag, expires=reply.expires, detail=reply.detail)

    def command(self, method: str) -> Deferred[Any]:
        """Run an MI command without parameters (``which``); fires with its
        ``CommandResult`` (``xcapdiff check`` asks which commands the MI has)."""
        return self._channel.call(CommandRequest(method), "(check)")

    def remove(self, owner: str, etag: str | None = None) -> Deferred[Any]:
        """Remove the owner's publication at OpenSIPS (``expires`` 0)."""
        return self._channel.call(PublishRequest.removal(owner, etag), owner)

    def stop(self) -> Deferred[None]:
        result: Deferred[None] = self._channel.stop()
        return result
