"""``XCAPUri`` and ``XCAPUser`` (RFC 4825 §6).

``XCAPUri(xcap_root, resource_selector, namespaces)``: the resource selector is
percent-decoded as a whole, split at ``~~`` into the document selector and the node
selector; ``namespaces`` maps application ids to default namespaces.
``str(uri)`` is ``xcap_root + resource_selector``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from xcap.xpath import DocumentSelector, NodeSelector

__all__ = ["XCAPUri", "XCAPUser"]


class XCAPUser:
    def __init__(self, username: str | None = None, domain: str | None = None) -> None:
        self.username = username
        self.domain = domain

    @property
    def uri(self) -> str:
        return f"sip:{self.username}@{self.domain}"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, XCAPUser) and self.uri == other.uri

    def __hash__(self) -> int:
        return hash(self.username)

    def __bool__(self) -> bool:
        return bool(self.username) and bool(self.domain)

    def __str__(self) -> str:
        return f"{self.username}@{self.domain}"

    def __repr__(self) -> str:
        return f"XCAPUser({self.username!r}, {self.domain!r})"

    @classmethod
    def parse(cls, user_id: str, default_domain: str | None = None) -> XCAPUser:
        if user_id.startswith("sip:"):
            user_id = user_id[4:]
        username, sep, domain = user_id.partition("@")
        return cls(username, domain if sep else (default_domain or ""))


class XCAPUri:
    def __init__(self, xcap_root: str, resource_selector: str, namespaces: dict[str, Any]):
        self.xcap_root = xcap_root
        self.resource_selector = unquote(resource_selector)
        realm = None
        # "@realm/auid/..." names the realm when the XUI has none (some clients do this).
        if self.resource_selector.startswith("@"):
            slash = self.resource_selector.find("/")
            realm = self.resource_selector[1:slash]
            self.resource_selector = self.resource_selector[slash:]
        doc_part, sep, node_part = self.resource_selector.partition("~~")
        self.doc_selector = DocumentSelector(doc_part)
        self.application_id = self.doc_selector.application_id
        self.node_selector: NodeSelector | None = None
        if sep:
            self.node_selector = NodeSelector(node_part, namespaces.get(self.application_id))
        if self.doc_selector.user_id:
            self.user = XCAPUser.parse(self.doc_selector.user_id, realm)
        else:
            self.user = XCAPUser(None, realm)

    def __str__(self) -> str:
        return self.xcap_root + self.resource_selector

    def __repr__(self) -> str:
        return f"XCAPUri({str(self)!r})"
