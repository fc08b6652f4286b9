"""MI commands without parameters (``which``), as ``xcapdiff check`` sends them."""

from __future__ import annotations

import xmlrpc.client

import pytest

from xcapdiff_ext.mi.codec import (
    CommandRequest,
    CommandResult,
    LocalProtocolError,
    MiError,
    RemoteProtocolError,
    decode_reply,
    encode_request,
    mi_command_names,
)

WHICH = CommandRequest("which")


@pytest.mark.parametrize(
    ("protocol", "transport", "extra", "expected"),
    [
        ("jsonrpc", "datagram", {"request_id": 7}, b'{"jsonrpc":"2.0","method":"which","id":7}'),
        ("jsonrpc", "http", {"request_id": 7}, b'{"jsonrpc":"2.0","method":"which","id":7}'),
        ("jsonrpc", "fifo", {"request_id": 7, "reply_fifo": "r1"},
         b':r1:{"jsonrpc":"2.0","method":"which","id":7}\n'),
        ("legacy", "datagram", {}, b":which:\n"),
        ("legacy", "fifo", {"reply_fifo": "r1"}, b":which:r1\n\n"),
    ],
)  # fmt: skip
def test_encoding(protocol: str, transport: str, extra: dict, expected: bytes) -> None:
    assert encode_request(WHICH, protocol=protocol, transport=transport, **extra) == expected


def test_xmlrpc_encoding_has_no_params() -> None:
    data = encode_request(WHICH, protocol="jsonrpc", transport="xmlrpc")
    params, method = xmlrpc.client.loads(data)
    assert (params, method) == ((), "which")


def test_command_names_are_checked() -> None:
    with pytest.raises(LocalProtocolError):
        CommandRequest("pua_publish\n:evil:")


def decode(data: bytes, protocol: str = "jsonrpc", transport: str = "datagram") -> object:
    return decode_reply(data, request=WHICH, protocol=protocol, transport=transport, request_id=7)


def test_jsonrpc_result_and_names() -> None:
    result = decode(b'{"jsonrpc":"2.0","result":["which","pua_publish"],"id":7}')
    assert isinstance(result, CommandResult)
    assert mi_command_names(result) == {"which", "pua_publish"}


def test_method_not_found_says_a_module_is_missing() -> None:
    with pytest.raises(MiError, match=r"Method not found.*not loaded"):
        decode(b'{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":7}')


def test_legacy_and_xmlrpc_results() -> None:
    legacy = decode(b"200 OK\n\twhich\n\tpua_publish\n\n", protocol="legacy")
    assert mi_command_names(legacy) == {"which", "pua_publish"}  # type: ignore[arg-type]
    with pytest.raises(MiError):
        decode(b"500 command 'which' not available\n", protocol="legacy")
    xml = xmlrpc.client.dumps((["which", "pua_publish"],), methodresponse=True).encode()
    assert mi_command_names(decode(xml, transport="xmlrpc")) == {"which", "pua_publish"}  # type: ignore[arg-type]


def test_a_reply_that_is_no_list_of_names() -> None:
    with pytest.raises(RemoteProtocolError):
        mi_command_names(CommandResult({"x": 1}))
    with pytest.raises(RemoteProtocolError):
        decode(b'{"jsonrpc":"2.0","result":[],"id":8}')  # another request's reply
