"""Hostile and awkward inputs to xmlsafe.parse_document: typed errors, quickly."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from lxml import etree

from xcapdiff_ext.errors import DocumentTooLarge, MalformedXml, UnsafeXml, XmlInputError
from xcapdiff_ext.xmlsafe import Limits, c14n, parse_document

FAST = 2.0  # seconds; every refusal must be immediate (no expansion, no I/O)

BILLION_LAUGHS = (
    b'<?xml version="1.0"?>\n<!DOCTYPE lolz [\n<!ENTITY lol "lol">\n'
    + b"".join(
        b'<!ENTITY lol%d "%s">\n' % (n, (b"&lol%d;" % (n - 1) if n > 2 else b"&lol;") * 10)
        for n in range(2, 10)
    )
    + b"]>\n<lolz>&lol9;</lolz>"
)
# The same without the amplification: entity declarations alone are refused.
ONE_ENTITY = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e "x">]><r>&e;</r>'
XXE = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
EXTERNAL_DTD = b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "http://example.invalid/r.dtd"><r/>'
DEEP = b"<a>" * 10_000 + b"</a>" * 10_000


@contextmanager
def fast() -> Iterator[None]:
    start = time.monotonic()
    yield
    assert time.monotonic() - start < FAST


@pytest.mark.parametrize(
    ("data", "error"),
    [
        pytest.param(BILLION_LAUGHS, UnsafeXml, id="billion-laughs"),
        pytest.param(ONE_ENTITY, UnsafeXml, id="entity-declaration"),
        pytest.param(XXE, UnsafeXml, id="external-entity"),
        pytest.param(EXTERNAL_DTD, UnsafeXml, id="external-dtd-network"),
        pytest.param(DEEP, UnsafeXml, id="10000-deep"),
        pytest.param(b"<r>&foo;</r>", UnsafeXml, id="undeclared-entity-reference"),
        pytest.param(
            b'<?xml version="1.0" encoding="UTF-8"?><r>\xff\xfe</r>',
            MalformedXml,
            id="bad-utf8",
        ),
        pytest.param(b"<r>\xc3\x28</r>", MalformedXml, id="bad-utf8-no-declaration"),
        pytest.param(b"hello, world", MalformedXml, id="not-xml"),
        pytest.param(b"", MalformedXml, id="empty"),
        pytest.param(b"<a/><b/>", MalformedXml, id="two-roots"),
        pytest.param(b"<a><b></a>", MalformedXml, id="unbalanced"),
        pytest.param(b"<a x='1' x='2'/>", MalformedXml, id="duplicate-attribute"),
        pytest.param(b"<p:a/>", MalformedXml, id="unbound-prefix"),
    ],
)
def test_hostile_input_is_refused_fast(data: bytes, error: type[XmlInputError]) -> None:
    with fast(), pytest.raises(error) as info:
        parse_document(data, where="tests/users/sip:joe@example.com/index")
    assert info.value.where == "tests/users/sip:joe@example.com/index"
    assert str(info.value).startswith("tests/users/sip:joe@example.com/index")


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE r SYSTEM "file:///etc/passwd"><r/>',
            id="external-dtd-file",
        ),
        pytest.param(
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % x SYSTEM "file:///etc/passwd"> %x;]><r/>',
            id="external-parameter-entity",
        ),
    ],
)
def test_local_external_references_are_refused(data: bytes) -> None:
    with fast(), pytest.raises(XmlInputError):
        parse_document(data)


def _opened_by_parser(tmp_path: Path, make_doc: Callable[[str], bytes]) -> bool:
    """Whether parsing ``make_doc(uri)`` opened the file at ``uri`` (a FIFO: a watcher
    thread sees the reader and releases it with EOF, so nothing can hang)."""
    fifo = tmp_path / "probe.dtd"
    os.mkfifo(fifo)
    opened, stop = threading.Event(), threading.Event()

    def watch() -> None:
        while not stop.is_set():
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet
                time.sleep(0.001)
                continue
            opened.set()
            os.close(fd)
            return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with fast(), pytest.raises(XmlInputError):
            parse_document(make_doc(fifo.as_uri()))
    finally:
        stop.set()
        watcher.join(5)
    return opened.is_set()


# Regression: XMLParser(collect_ids=False) made libxml2 2.14 / lxml 6 open the
# external subset and external parameter entities from local files.
@pytest.mark.parametrize(
    "template",
    [
        pytest.param('<?xml version="1.0"?><!DOCTYPE r SYSTEM "{}"><r/>', id="external-dtd"),
        pytest.param(
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY % x SYSTEM "{}"> %x;]><r/>',
            id="external-parameter-entity",
        ),
    ],
)
def test_external_files_are_never_opened(tmp_path: Path, template: str) -> None:
    assert not _opened_by_parser(tmp_path, lambda uri: template.format(uri).encode())


def test_str_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        parse_document("<r/>")  # type: ignore[arg-type]


def test_byte_limit() -> None:
    data = b"<r>" + b"x" * 100 + b"</r>"
    with fast(), pytest.raises(DocumentTooLarge):
        parse_document(data, limits=Limits(max_bytes=50))
    assert parse_document(data, limits=Limits(max_bytes=len(data))).getroot().tag == "r"


def test_huge_input_refused_before_parsing() -> None:
    data = b"<r>" + b"x" * (11 * 1024 * 1024) + b"</r>"
    with fast(), pytest.raises(DocumentTooLarge):
        parse_document(data)


def test_depth_limit() -> None:
    data = b"<a><b><c/></b></a>"
    with pytest.raises(UnsafeXml):
        parse_document(data, limits=Limits(max_depth=2))
    assert parse_document(data, limits=Limits(max_depth=3)).getroot().tag == "a"


def test_predefined_and_character_references_are_fine() -> None:
    root = parse_document(b"<r a='&quot;&amp;'>&amp;&lt;&gt;&#65;&#x263A;</r>").getroot()
    assert root.text == "&<>A\u263a"
    assert root.get("a") == '"&'


def test_internal_subset_without_entities_is_accepted() -> None:
    assert parse_document(b"<!DOCTYPE r [<!ELEMENT r ANY>]><r/>").getroot().tag == "r"


def test_whitespace_comments_pis_are_kept_and_cdata_becomes_text() -> None:
    data = (
        b'<?xml version="1.0"?>\n<!--before--><?top x?><r>\n  <a> x <![CDATA[<y>&]]> </a>\n'
        b"<!-- c --><?pi d?>\r\n\t</r><!--after-->"
    )
    tree = parse_document(data)
    root = tree.getroot()
    assert root.text == "\n  "
    assert root[0].text == " x <y>& "
    assert root[0].tail == "\n"
    assert isinstance(root[1], etree._Comment) and root[1].text == " c "
    assert isinstance(root[2], etree._ProcessingInstruction) and root[2].target == "pi"
    assert root[2].tail == "\n\t"  # CRLF normalised by XML end-of-line handling
    assert isinstance(root.getprevious(), etree._ProcessingInstruction)
    assert isinstance(root.getnext(), etree._Comment)
    assert c14n(tree) == (
        b"<!--before-->\n<?top x?>\n<r>\n  <a> x &lt;y&gt;&amp; </a>\n"
        b"<!-- c --><?pi d?>\n\t</r>\n<!--after-->"
    )


def test_non_ascii_encodings() -> None:
    text = "J\u00f6rg \u2603 \U0001f600"
    assert parse_document(f"<r>{text}</r>".encode()).getroot().text == text
    latin1 = '<?xml version="1.0" encoding="ISO-8859-1"?><r>J\u00f6rg</r>'.encode("latin-1")
    assert parse_document(latin1).getroot().text == "J\u00f6rg"
