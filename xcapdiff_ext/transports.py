"""Which transport the settings ask for, assembled (shell).

``build_transport(settings, reactor)`` returns an ``IPublishTransport``:
``transport = null`` publishes nowhere; ``transport = mi`` is ``pua_publish`` through
the channel ``mi_url`` names (``http(s)://`` mi_http, ``udp:`` mi_datagram, ``fifo:``
mi_fifo, ``xmlrpc:`` mi_xmlrpc(_ng)), speaking ``mi_protocol``; ``transport = sip`` is
the direct SIP PUBLISH client to ``sip_proxy``, or to the next hop RFC 3263 finds for
each owner's domain when ``sip_proxy`` is empty.
"""

from __future__ import annotations

from typing import Any

from .errors import ConfigError
from .interfaces import IPublishTransport
from .testing import NullTransport

__all__ = ["build_transport"]


def build_transport(settings: Any, reactor: Any) -> IPublishTransport:
    """The configured transport; ``reactor`` provides time, UDP/TCP and FD readers."""
    if settings.transport == "null":
        return NullTransport()
    if settings.transport == "mi":
        return _mi(settings, reactor)
    if settings.transport == "sip":
        from .sip.transport import SipPublishTransport

        resolver = None
        if settings.sip_proxy is None:  # RFC 3263: locate each owner's domain
            resolver = _system_resolver(reactor)
        transport: IPublishTransport = SipPublishTransport.from_settings(
            reactor, settings, resolver=resolver
        )
        return transport
    raise ConfigError("transport", settings.transport, "expected mi, sip or null")


def _mi(settings: Any, reactor: Any) -> IPublishTransport:
    from .mi.codec import MiProtocol, MiTransport
    from .mi.transport import MiPublishTransport

    url, protocol = settings.mi_url, MiProtocol(settings.mi_protocol)
    timeout = settings.mi_timeout
    channel: Any
    if url.scheme == "udp":
        from .mi.datagram import MiDatagramChannel

        channel = MiDatagramChannel(reactor, url.host, url.port, protocol=protocol, timeout=timeout)
    elif url.scheme == "fifo":
        from .mi.fifo import MiFifoChannel

        channel = MiFifoChannel(
            reactor, url.path, settings.mi_reply_dir, protocol=protocol, timeout=timeout
        )
        channel.check()  # reply_dir usable, fifo writable: fails with the fix named
    else:
        from .mi.http import MiHttpChannel

        kind = MiTransport.XMLRPC if url.scheme == "xmlrpc" else MiTransport.HTTP
        if kind is MiTransport.HTTP and protocol is MiProtocol.LEGACY:
            raise ConfigError(
                "mi_protocol",
                "legacy",
                "OpenSIPS 1.x/2.x have no JSON-RPC over HTTP: use xmlrpc:, udp: or fifo:",
            )
        channel = MiHttpChannel.from_url(
            reactor, url.http_url, protocol=protocol, transport=kind, timeout=timeout
        )
    return MiPublishTransport(channel, expires=settings.publish_expires)


def _system_resolver(reactor: Any) -> Any:
    """What ``twisted.names.client.createResolver()`` builds (hosts file, a cache, the
    ``resolv.conf`` servers), on our reactor instead of the global one."""
    from twisted.names import cache, client, hosts, resolve

    return resolve.ResolverChain(
        [
            hosts.Resolver(b"/etc/hosts"),
            cache.CacheResolver(reactor=reactor),
            client.Resolver(resolv="/etc/resolv.conf", reactor=reactor),
        ]
    )
