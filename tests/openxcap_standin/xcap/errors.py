"""OpenXCAP's error classes, as the HTTP layer answers them.

- ``HTTPError(code)``: a precondition failure raised by ``check_etag`` (412, or 304 for
  a GET); ``.code`` is the status.  (OpenXCAP wraps a starlette response instead.)
- ``ResourceNotFound``: 404.  ``NoDatabase`` is one of them, as in OpenXCAP (raised by
  ``get_db_session`` when no engine was configured); ``DBError`` is a 500.
- ``XCAPError`` and subclasses: 409 with an ``application/xcap-error+xml`` body whose
  child element is ``tag`` (RFC 4825 §11).
"""

from __future__ import annotations

from xml.sax.saxutils import quoteattr

__all__ = [
    "CannotDeleteError",
    "CannotInsertError",
    "ConstraintFailureError",
    "DBError",
    "HTTPError",
    "NoDatabase",
    "NoParentError",
    "NotFound",
    "NotUTF8Error",
    "NotWellFormedError",
    "NotXMLAtrributeValueError",
    "NotXMLFragmentError",
    "ResourceNotFound",
    "SchemaValidationError",
    "UniquenessFailureError",
    "XCAPError",
]


class HTTPError(Exception):
    def __init__(self, code: int, detail: str = "") -> None:
        super().__init__(code, detail)
        self.code = code
        self.detail = detail

    @property
    def status_code(self) -> int:
        return self.code

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.code}>"


class ResourceNotFound(Exception):
    status_code = 404

    def __init__(self, msg: str = "", content_type: str | None = None) -> None:
        super().__init__(msg)
        self.detail = msg
        self.headers = {"Content-Type": content_type or "text/plain"}

    @property
    def code(self) -> int:
        return self.status_code

    def __str__(self) -> str:
        return self.detail


class NotFound(ResourceNotFound):
    pass


class NoDatabase(ResourceNotFound):
    pass


class DBError(ResourceNotFound):
    status_code = 500


class XCAPError(Exception):
    status_code = 409
    namespace = "urn:ietf:params:xml:ns:xcap-error"
    tag = "undefined"
    phrase = ""

    def __init__(self, phrase: str | None = None, comment: str = "") -> None:
        super().__init__(phrase or comment or self.tag)
        if phrase is not None:
            self.phrase = phrase
        if comment:
            self.comment = "<!--\n" + str(comment).replace("-->", "--&gt;") + "\n-->"
        else:
            self.comment = ""

    @property
    def code(self) -> int:
        return self.status_code

    def format_my_body(self) -> str:
        return ""

    def format_my_tag(self) -> str:
        phrase = f" phrase={quoteattr(self.phrase)}" if self.phrase else ""
        body = self.format_my_body()
        if body or self.comment:
            return f"<{self.tag}{phrase}>{self.comment}{body}</{self.tag}>"
        return f"<{self.tag}{phrase}/>"

    def build_xml_output(self) -> str:
        return (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<xcap-error xmlns="{self.namespace}">{self.format_my_tag()}</xcap-error>'
        )

    def __str__(self) -> str:
        return self.format_my_tag()


class SchemaValidationError(XCAPError):
    tag = "schema-validation-error"


class NotXMLFragmentError(XCAPError):
    tag = "not-xml-frag"


class CannotInsertError(XCAPError):
    tag = "cannot-insert"


class CannotDeleteError(XCAPError):
    tag = "cannot-delete"


class NotXMLAtrributeValueError(XCAPError):  # sic: OpenXCAP's spelling
    tag = "not-xml-att-value"


class NotWellFormedError(XCAPError):
    tag = "not-well-formed"


class ConstraintFailureError(XCAPError):
    tag = "constraint-failure"


class NotUTF8Error(XCAPError):
    tag = "not-utf-8"


class NoParentError(XCAPError):
    tag = "no-parent"

    def __init__(self, phrase: str = "", ancestor: str = "", comment: str = "") -> None:
        self.ancestor = ancestor
        super().__init__(phrase, comment)

    def format_my_body(self) -> str:
        return f"<ancestor>{self.ancestor}</ancestor>" if self.ancestor else ""


class UniquenessFailureError(XCAPError):
    tag = "uniqueness-failure"

    def __init__(self, *, exists: str, phrase: str | None = None, comment: str = "") -> None:
        self.exists = exists
        super().__init__(phrase, comment)

    def format_my_body(self) -> str:
        return f"<exists field={quoteattr(self.exists)}/>"
