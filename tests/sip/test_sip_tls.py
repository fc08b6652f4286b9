"""SIP over TLS with certificate and host name verification on (sip.transport).

A test CA and server certificates are made at test time with ``cryptography``; the
``FakeTcpUas`` answering logic runs behind ``listenSSL`` on loopback.  Needs pyOpenSSL
and service_identity (requirements-test.txt); skipped without them.
``twisted.trial.unittest.TestCase`` like tests/sip/test_sip_transport.py.
"""

from __future__ import annotations

import datetime
import ipaddress
import warnings
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.protocol import Factory
from twisted.trial import unittest

from tests.sip.sip_fakes import FakeTcpUas, _Stream
from xcapdiff_ext.errors import ConfigError, TransportError
from xcapdiff_ext.interfaces import Publication, PublishOutcome
from xcapdiff_ext.sip.transaction import Timers
from xcapdiff_ext.sip.transport import SipPublishTransport

try:
    import service_identity  # noqa: F401
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    from twisted.internet import ssl
except ImportError as _err:  # pragma: no cover - the TLS extra is missing
    _MISSING: str | None = f"TLS test deps missing: {_err}"
else:
    _MISSING = None

reactor: Any = _reactor

OWNER = "sip:alice@localhost"
BODY = b'<?xml version="1.0"?><xcap-diff xmlns="urn:ietf:params:xml:ns:xcap-diff" xcap-root="http://x/"/>'
FAST = Timers(t1=0.02, t2=0.08, t4=0.1)


def _name(common_name: str) -> Any:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: Any) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Any) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


class Pki:
    """A throw-away CA issuing server certificates for given names."""

    def __init__(self, name: str = "xcapdiff test CA") -> None:
        now = datetime.datetime.now(datetime.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = _name(name)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def client_pem(self, name: str = "xcapdiff") -> bytes:
        """A client certificate and its key, as one PEM (what ``sip_tls_cert_file`` holds)."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        return _key_pem(key) + _pem(cert)

    def server(self, *names: str, require_client: bool = False) -> Any:
        """Twisted server options for a certificate naming ``names`` (DNS or IP);
        with ``require_client`` the server demands a client certificate of this CA."""
        now = datetime.datetime.now(datetime.UTC)
        key = ec.generate_private_key(ec.SECP256R1())
        san: list[Any] = []
        for n in names:
            try:
                san.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                san.append(x509.DNSName(n))
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(names[0]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        authorities = [ssl.Certificate.loadPEM(_pem(self.cert))] if require_client else []
        options = ssl.PrivateCertificate.loadPEM(_key_pem(key) + _pem(cert)).options(*authorities)
        with warnings.catch_warnings():  # Twisted hands pyOpenSSL X509/PKey (deprecated)
            warnings.simplefilter("ignore", DeprecationWarning)
            options.getContext()  # built once here, cached by Twisted
        return options

    def write_ca(self, path: str) -> str:
        with open(path, "wb") as f:
            f.write(_pem(self.cert))
        return path


class FakeTlsUas(FakeTcpUas):
    """``FakeTcpUas`` behind TLS on a loopback port (``listenSSL``)."""

    def __init__(self, server_options: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._options = server_options

    def start(self, reactor: Any) -> int:
        self.connections: list[_Stream] = []
        self.accepted = 0

        def build() -> _Stream:
            self.accepted += 1
            return _Stream(self)

        self._port = reactor.listenSSL(
            0, Factory.forProtocol(build), self._options, interface="127.0.0.1"
        )
        self.port: int = self._port.getHost().port
        return self.port


class TlsTests(unittest.TestCase):
    pki: Any

    def setUp(self) -> None:
        if _MISSING:
            raise unittest.SkipTest(_MISSING)
        self.pki = Pki()
        self.ca_file = self.pki.write_ca(self.mktemp())

    def uas(self, *names: str, require_client: bool = False) -> FakeTlsUas:
        uas = FakeTlsUas(self.pki.server(*names, require_client=require_client))
        uas.start(reactor)
        self.addCleanup(uas.stop)
        return uas

    def transport(self, host: str, port: int, **kwargs: Any) -> SipPublishTransport:
        kwargs.setdefault("timers", FAST)
        transport = SipPublishTransport(reactor, next_hop=("tls", host, port), **kwargs)
        self.addCleanup(self.stop_clean, transport)
        return transport

    @inlineCallbacks
    def stop_clean(self, transport: SipPublishTransport) -> Any:
        yield transport.stop()
        self.assertEqual(transport.pending, 0)

    @inlineCallbacks
    def test_publish_with_the_test_ca(self) -> Any:
        uas = self.uas("localhost", "127.0.0.1")
        transport = self.transport("localhost", uas.port, tls_ca_file=self.ca_file)
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome, PublishOutcome("e1", 3600))
        via = uas.requests[0].header("Via") or ""
        self.assertTrue(via.startswith("SIP/2.0/TLS "), via)
        self.assertEqual(uas.requests[0].body, BODY)
        outcome = yield transport.publish(Publication(OWNER, BODY, etag="e1"))
        self.assertEqual(outcome.etag, "e2")
        self.assertEqual(uas.accepted, 1)  # the TLS connection is reused

    @inlineCallbacks
    def test_publish_to_an_ip_address(self) -> Any:
        uas = self.uas("localhost", "127.0.0.1")
        transport = self.transport("127.0.0.1", uas.port, tls_ca_file=self.ca_file)
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome.etag, "e1")

    @inlineCallbacks
    def test_platform_trust_rejects_the_test_ca(self) -> Any:
        uas = self.uas("localhost", "127.0.0.1")
        transport = self.transport("localhost", uas.port)  # no tls_ca_file
        err = yield self.assertFailure(transport.publish(Publication(OWNER, BODY)), TransportError)
        self.assertEqual(uas.requests, [])  # nothing sent in clear or otherwise
        self.assertIn("certificate", str(err).lower())

    @inlineCallbacks
    def test_another_host_name_is_rejected(self) -> Any:
        uas = self.uas("sip.example.org")
        transport = self.transport("localhost", uas.port, tls_ca_file=self.ca_file)
        err = yield self.assertFailure(transport.publish(Publication(OWNER, BODY)), TransportError)
        self.assertEqual(uas.requests, [])
        self.assertIn("localhost", str(err))

    @inlineCallbacks
    def test_another_ca_is_rejected(self) -> Any:
        uas = self.uas("localhost")
        other = Pki("another CA").write_ca(self.mktemp())
        transport = self.transport("localhost", uas.port, tls_ca_file=other)
        yield self.assertFailure(transport.publish(Publication(OWNER, BODY)), TransportError)
        self.assertEqual(uas.requests, [])

    @inlineCallbacks
    def test_ca_bundle_uses_every_certificate(self) -> Any:
        uas = self.uas("localhost")
        bundle = self.mktemp()
        with open(bundle, "wb") as f:  # our CA second: loadPEM alone took the first only
            f.write(b"# a bundle\n" + _pem(Pki("another CA").cert) + _pem(self.pki.cert))
        transport = self.transport("localhost", uas.port, tls_ca_file=bundle)
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome.etag, "e1")

    def test_unreadable_ca_file_is_a_config_error(self) -> None:
        missing = self.mktemp()
        with self.assertRaises(ConfigError) as caught:
            SipPublishTransport(reactor, next_hop=("tls", "localhost", 5061), tls_ca_file=missing)
        self.assertEqual(caught.exception.key, "sip_tls_ca_file")
        empty = self.mktemp()
        with open(empty, "wb") as f:
            f.write(b"not a certificate\n")
        with self.assertRaises(ConfigError) as caught:
            SipPublishTransport(reactor, next_hop=("tls", "localhost", 5061), tls_ca_file=empty)
        self.assertIn("no PEM certificate", str(caught.exception))
        broken = self.mktemp()
        with open(broken, "wb") as f:
            f.write(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
        with self.assertRaises(ConfigError):
            SipPublishTransport(reactor, next_hop=("tls", "localhost", 5061), tls_ca_file=broken)


class ClientCertificateTests(TlsTests):
    """``sip_tls_cert_file``: the optional client certificate (issue 5 item 2)."""

    @inlineCallbacks
    def test_a_server_that_requires_a_client_certificate_accepts_ours(self) -> Any:
        uas = self.uas("localhost", require_client=True)
        cert_file = self.mktemp()
        with open(cert_file, "wb") as f:
            f.write(self.pki.client_pem())
        transport = self.transport(
            "localhost", uas.port, tls_ca_file=self.ca_file, tls_cert_file=cert_file
        )
        outcome = yield transport.publish(Publication(OWNER, BODY))
        self.assertEqual(outcome.etag, "e1")

    @inlineCallbacks
    def test_without_a_client_certificate_such_a_server_refuses(self) -> Any:
        uas = self.uas("localhost", require_client=True)
        transport = self.transport("localhost", uas.port, tls_ca_file=self.ca_file)
        error = yield self.assertFailure(
            transport.publish(Publication(OWNER, BODY)), TransportError
        )
        self.assertIn("certificate required", str(error))
        self.assertEqual(uas.requests, [])

    def test_an_unreadable_client_certificate_is_a_config_error(self) -> None:
        with self.assertRaises(ConfigError) as caught:
            SipPublishTransport(
                reactor,
                next_hop=("tls", "localhost", 5061),
                tls_ca_file=self.ca_file,
                tls_cert_file=self.mktemp(),
            )
        self.assertEqual(caught.exception.key, "sip_tls_cert_file")
