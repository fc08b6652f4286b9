"""Application usages (RFC 4825 §5) and the storage OpenXCAP builds at import.

Importing this module loads the backend module named by ``[Server] backend``
(``ServerConfig.backend`` here is that module) and creates the one ``storage``
(``ServerConfig.backend.Storage()``); no backend configured -> critical log, exit 1.

Element and attribute operations (CONTRACT §3): ``get_document(uri)`` first, the new
whole document computed from it, then ``put_document(uri, new_document, check_etag)``
with the same ``uri`` object, also for element/attribute DELETEs.  Elements are spliced
into the stored bytes (``xcap.element``); attributes are set on an lxml tree and the
whole document re-serialised (``tostring(..., encoding='UTF-8', xml_declaration=True)``).
An element PUT that inserted answers 201 even when the storage said 200.

Validation: well-formed (hardened lxml parser), UTF-8, and for resource-lists the
uniqueness of ``list/@name``, ``entry/@uri``, ``entry-ref/@ref``, ``external/@anchor``
among siblings.  No XML-schema validation (the stand-in ships no XSDs).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from io import BytesIO
from typing import Any
from xml.parsers import expat

from application.configuration import ConfigSetting
from lxml import etree

from xcap import element, errors
from xcap.backend import StatusResponse
from xcap.configuration import ServerConfig as XCAPServerConfig
from xcap.configuration.datatypes import Backend

__all__ = [
    "ApplicationUsage",
    "ServerConfig",
    "applications",
    "getApplicationForId",
    "getApplicationForURI",
    "namespaces",
    "storage",
]

log = logging.getLogger("openxcap")


class ServerConfig(XCAPServerConfig):
    backend = ConfigSetting(type=Backend, value=None)
    document_validation = True


if ServerConfig.backend is None:
    log.critical("OpenXCAP needs a backend to be specified in order to run")
    sys.exit(1)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


def _parse(document: bytes) -> Any:
    return etree.parse(BytesIO(document), _parser())


def _element_name(node: Any) -> tuple[str | None, str]:
    qname = etree.QName(node)
    return (qname.namespace, qname.localname)


def _select_elements(tree: Any, steps: list[Any]) -> list[Any]:
    return element.select(
        tree.getroot(),
        steps,
        lambda node: [child for child in node if isinstance(child.tag, str)],
        _element_name,
        lambda node, key: node.get(key),
    )


class ApplicationUsage:
    id: str | None = None
    default_ns: str | None = None
    mime_type: str | None = None

    def __init__(self, storage: Any) -> None:
        if storage is not None:
            self.storage = storage

    # ------------------------------------------------------------ validation
    def _check_UTF8_encoding(self, xml_doc: Any) -> None:
        encoding = xml_doc.docinfo.encoding or "UTF-8"
        if encoding.lower() != "utf-8":
            raise errors.NotUTF8Error(comment=f"document encoding is {encoding}")

    def _check_additional_constraints(self, xml_doc: Any) -> None:
        """Application-specific constraints (raise a 409 error)."""

    def validate_document(self, xcap_doc: bytes) -> None:
        try:
            xml_doc = _parse(xcap_doc)
        except etree.XMLSyntaxError as err:
            raise errors.NotWellFormedError(comment=str(err)) from None
        except Exception:
            raise errors.NotWellFormedError() from None
        self._check_UTF8_encoding(xml_doc)
        self._check_additional_constraints(xml_doc)

    # -------------------------------------------------------------- documents
    def _not_implemented(self, context: str) -> None:
        raise errors.ResourceNotFound(f"Application {self.id} does not implement {context} context")

    def get_document(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        context = uri.doc_selector.context
        if context == "global":
            return self.get_document_global(uri, check_etag)
        if context == "users":
            return self.get_document_local(uri, check_etag)
        return self._not_implemented(context)

    def get_document_global(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        self._not_implemented("global")

    async def get_document_local(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        return await self.storage.get_document(uri, check_etag)

    async def put_document(self, uri: Any, document: bytes, check_etag: Callable[..., Any]) -> Any:
        self.validate_document(document)
        return await self.storage.put_document(uri, document, check_etag)

    async def delete_document(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        return await self.storage.delete_document(uri, check_etag)

    # --------------------------------------------------------------- elements
    async def get_element(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        response = await self.get_document(uri, check_etag)
        if response.code == 404:
            raise errors.ResourceNotFound(
                f"The requested document {uri.doc_selector} was not found on this server"
            )
        try:
            result = element.get(response.data, uri.node_selector.element_selector)
        except element.SelectorError as err:
            raise errors.ResourceNotFound(str(err)) from None
        if not result:
            raise errors.ResourceNotFound(
                f"The requested element {uri.node_selector} was not found in the document "
                f"{uri.doc_selector}"
            )
        return StatusResponse(200, response.etag, result)

    async def put_element(
        self, uri: Any, element_body: bytes, check_etag: Callable[..., Any]
    ) -> Any:
        try:
            element.check_xml_fragment(element_body)
        except expat.ExpatError as err:
            raise errors.NotXMLFragmentError(comment=str(err)) from None
        except Exception:
            raise errors.NotXMLFragmentError() from None
        response = await self.get_document(uri, check_etag)
        if response.code == 404:
            raise errors.NoParentError
        selector = uri.node_selector.element_selector.fix_star(element_body)
        try:
            result = element.put(response.data, selector, element_body)
        except element.SelectorError as err:
            raise errors.NoParentError(comment=str(err)) from None
        if result is None:
            raise errors.NoParentError
        new_document, created = result
        if element.get(new_document, uri.node_selector.element_selector) != element_body.strip():
            raise errors.CannotInsertError("PUT request failed GET(PUT(x))==x invariant")
        stored = await self.put_document(uri, new_document, check_etag)
        if created and getattr(stored, "code", None) == 200:
            stored.code = 201
        return stored

    async def delete_element(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        response = await self.get_document(uri, check_etag)
        if response.code == 404:
            raise errors.ResourceNotFound(
                f"The requested document {uri.doc_selector} was not found on this server"
            )
        selector = uri.node_selector.element_selector
        new_document = element.delete(response.data, selector)
        if not new_document:
            raise errors.ResourceNotFound
        if element.find(new_document, selector):
            raise errors.CannotDeleteError("DELETE request failed GET(DELETE(x))==404 invariant")
        return await self.put_document(uri, new_document, check_etag)

    # ------------------------------------------------------------- attributes
    def _parent_element(self, uri: Any, document: bytes, missing: type[Exception]) -> Any:
        tree = _parse(document)
        found = _select_elements(tree, list(uri.node_selector.element_selector))
        if not found:
            raise missing()
        if len(found) != 1:
            raise missing("XPATH expression is ambiguous")
        return tree, found[0]

    async def get_attribute(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        response = await self.get_document(uri, check_etag)
        if response.code == 404:
            raise errors.ResourceNotFound
        _tree, elem = self._parent_element(uri, response.data, errors.ResourceNotFound)
        value = elem.get(uri.node_selector.terminal_selector.name)
        if value is None:
            raise errors.ResourceNotFound
        return StatusResponse(200, response.etag, value.encode("utf-8"))

    async def put_attribute(
        self, uri: Any, attribute: bytes, check_etag: Callable[..., Any]
    ) -> Any:
        response = await self.get_document(uri, check_etag)
        if response.code == 404:
            raise errors.NoParentError
        tree, elem = self._parent_element(uri, response.data, errors.NoParentError)
        elem.set(uri.node_selector.terminal_selector.name, attribute.decode("utf-8"))
        new_document = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
        return await self.put_document(uri, new_document, check_etag)

    async def delete_attribute(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        response = await self.get_document(uri, check_etag)
        if response.code == 404:
            raise errors.ResourceNotFound
        tree, elem = self._parent_element(uri, response.data, errors.ResourceNotFound)
        name = uri.node_selector.terminal_selector.name
        if not elem.get(name):
            raise errors.ResourceNotFound
        del elem.attrib[name]
        new_document = etree.tostring(tree, encoding="UTF-8", xml_declaration=True)
        return await self.put_document(uri, new_document, check_etag)

    # ----------------------------------------------------- namespace bindings
    async def get_ns_bindings(self, uri: Any, check_etag: Callable[..., Any]) -> Any:
        response = await self.get_document(uri, check_etag)
        if response.code == 404:
            raise errors.ResourceNotFound
        _tree, elem = self._parent_element(uri, response.data, errors.ResourceNotFound)
        nsmap = elem.nsmap
        bindings = "".join(
            f' xmlns{":" + prefix if prefix else ""}="{ns}"' for prefix, ns in nsmap.items()
        )
        return StatusResponse(200, response.etag, f"<{elem.tag}{bindings}/>".encode())


def _not_unique(node: Any, attribute: str) -> None:
    path = ""
    while node is not None:
        parent = node.getparent()
        if parent is None:
            path = "/*" + path
        else:
            siblings = [c for c in parent if isinstance(c.tag, str)]
            path = f"/*[{siblings.index(node) + 1}]" + path
        node = parent
    raise errors.UniquenessFailureError(exists=f"{path}/@{attribute}")


class ResourceListsApplication(ApplicationUsage):
    id = "resource-lists"
    default_ns = "urn:ietf:params:xml:ns:resource-lists"
    mime_type = "application/resource-lists+xml"

    @classmethod
    def check_list(cls, node: Any) -> None:
        """RFC 4826 §3.4.5: sibling ``list/@name``, ``entry/@uri``, ``entry-ref/@ref``
        and ``external/@anchor`` values are unique (recursively into lists)."""
        unique = {"list": "name", "entry": "uri", "entry-ref": "ref", "external": "anchor"}
        seen: dict[str, set[str | None]] = {tag: set() for tag in unique}
        for child in node:
            if not isinstance(child.tag, str):
                continue
            qname = etree.QName(child)
            if qname.namespace != cls.default_ns or qname.localname not in unique:
                continue
            attribute = unique[qname.localname]
            value = child.get(attribute)
            if value in seen[qname.localname]:
                _not_unique(child, attribute)
            seen[qname.localname].add(value)
            if qname.localname == "list":
                cls.check_list(child)

    def put_document(self, uri: Any, document: bytes, check_etag: Callable[..., Any]) -> Any:
        # Not a coroutine function in OpenXCAP either: it validates, then returns the
        # storage's awaitable.
        self.validate_document(document)
        self.check_list(_parse(document).getroot())
        return self.storage.put_document(uri, document, check_etag)


class PresenceRulesApplication(ApplicationUsage):
    id = "pres-rules"
    oma_id = "org.openmobilealliance.pres-rules"
    default_ns = "urn:ietf:params:xml:ns:pres-rules"
    mime_type = "application/auth-policy+xml"


class RLSServicesApplication(ApplicationUsage):
    id = "rls-services"
    default_ns = "urn:ietf:params:xml:ns:rls-services"
    mime_type = "application/rls-services+xml"


class PIDFManipulationApplication(ApplicationUsage):
    id = "pidf-manipulation"
    default_ns = "urn:ietf:params:xml:ns:pidf"
    mime_type = "application/pidf+xml"


class TestApplication(ApplicationUsage):
    """RFC 4825 §8.2.3's test application (its default namespace is ``test-app``)."""

    id = "test-app"
    default_ns = "test-app"
    mime_type = "application/test-app+xml"


storage = ServerConfig.backend.Storage()

applications: dict[str, ApplicationUsage] = {
    ResourceListsApplication.id: ResourceListsApplication(storage),
    PresenceRulesApplication.id: PresenceRulesApplication(storage),
    PresenceRulesApplication.oma_id: PresenceRulesApplication(storage),
    RLSServicesApplication.id: RLSServicesApplication(storage),
    PIDFManipulationApplication.id: PIDFManipulationApplication(storage),
    TestApplication.id: TestApplication(storage),
}

namespaces = {app_id: app.default_ns for app_id, app in applications.items()}


def getApplicationForURI(xcap_uri: Any) -> ApplicationUsage | None:
    return applications.get(xcap_uri.application_id)


def getApplicationForId(app_id: str) -> ApplicationUsage | None:
    return applications.get(app_id)
