"""SMTP over TLS as Airflow's SmtpHook reads the Connection: SSL by default, else STARTTLS; never a login
in plain text to a host that is not loopback. The servers are aiosmtpd on loopback with a self-signed
certificate made here; the client trusts it through ``SSL_CERT_FILE`` (the default, verifying context).
"""

from __future__ import annotations

import datetime as dt
import email
import ipaddress
import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loyalflow.deliver.channels.smtp import SmtpChannel
from loyalflow.errors import ConnectionSetupError, InsecureConnectionError, LoyalflowError
from loyalflow.hooks import SmtpConfig, is_loopback, refuse_plaintext_login
from tests.delivery_helpers import closed_port, message, set_connection

LOGIN, PASSWORD = "mailer", "s3cret"


class TlsInbox:
    """Keeps each message with whether it arrived over TLS and who had logged in."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(
            {
                "tls": server.transport.get_extra_info("ssl_object") is not None,
                "login": getattr(session.auth_data, "login", None),
                "content": envelope.content,
            }
        )
        return "250 OK"


def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
    from aiosmtpd.smtp import AuthResult, LoginPassword

    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        LOGIN.encode(),
        PASSWORD.encode(),
    )
    return AuthResult(success=ok, handled=False, auth_data=auth_data)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost: (cert.pem, key.pem)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loyalflow test smtp")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    return context


def serve(monkeypatch: pytest.MonkeyPatch, *, extra: dict[str, Any], **smtp: Any) -> Iterator[TlsInbox]:
    """An aiosmtpd server on loopback wired up as ``smtp_default`` (with the test login)."""
    from aiosmtpd.controller import Controller

    inbox, port = TlsInbox(), closed_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=authenticator, **smtp)
    controller.start()
    set_connection(
        monkeypatch,
        "smtp_default",
        conn_type="smtp",
        host="127.0.0.1",
        port=port,
        login=LOGIN,
        password=PASSWORD,
        extra=extra,
    )
    try:
        yield inbox
    finally:
        controller.stop()


@pytest.fixture
def trusted(monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path]) -> None:
    """The default (verifying) context trusts the test certificate, as a private CA bundle would."""
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))


@pytest.fixture
def ssl_inbox(monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path]) -> Iterator[TlsInbox]:
    """Implicit TLS (SMTPS): the Connection has no TLS extras at all, as the SmtpHook's default.

    The whole session is TLS, so AUTH is offered from the start (aiosmtpd only knows STARTTLS as TLS).
    """
    yield from serve(monkeypatch, extra={}, ssl_context=server_context(certificate), auth_require_tls=False)


@pytest.fixture
def starttls_inbox(monkeypatch: pytest.MonkeyPatch, certificate: tuple[Path, Path]) -> Iterator[TlsInbox]:
    """Plain SMTP that requires STARTTLS before AUTH and mail; the Connection only disables SSL."""
    yield from serve(
        monkeypatch,
        extra={"disable_ssl": True},
        tls_context=server_context(certificate),
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
    )


def channel(**kwargs: Any) -> SmtpChannel:
    return SmtpChannel(rate_per_sec=0, concurrency=1, max_attempts=1, sleep=lambda s: None, **kwargs)


def test_ssl_by_default_delivers_with_login(ssl_inbox: TlsInbox, trusted: None) -> None:
    ch = channel()
    assert (ch.config.ssl, ch.config.starttls) == (True, False)
    (result,) = ch.send([message(1)])
    assert result.status == "sent", result.error
    (got,) = ssl_inbox.messages
    assert got["tls"] and got["login"] == LOGIN.encode()
    assert email.message_from_bytes(got["content"])["Message-ID"] == "<key-00001@loyalflow>"


def test_starttls_delivers_with_login(starttls_inbox: TlsInbox, trusted: None) -> None:
    ch = channel()
    assert (ch.config.ssl, ch.config.starttls) == (False, True)
    results = ch.send([message(1), message(2)])
    assert {r.status for r in results} == {"sent"}, [r.error for r in results]
    assert [(m["tls"], m["login"]) for m in starttls_inbox.messages] == [(True, LOGIN.encode())] * 2


def test_starttls_is_never_skipped_when_the_server_does_not_offer_it(
    monkeypatch: pytest.MonkeyPatch, trusted: None
) -> None:
    for inbox in serve(monkeypatch, extra={"disable_ssl": True}):  # plain server: no STARTTLS, no AUTH
        (result,) = channel().send([message(1)])
        assert result.status == "failed" and "STARTTLS" in (result.error or "")
        assert inbox.messages == []


def test_an_untrusted_certificate_is_refused_by_default(ssl_inbox: TlsInbox) -> None:
    (result,) = channel().send([message(1)])
    assert result.status == "failed" and "CERTIFICATE_VERIFY_FAILED" in (result.error or "")
    assert ssl_inbox.messages == []


def test_ssl_context_none_encrypts_without_verifying(
    ssl_inbox: TlsInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = SmtpConfig.from_connection()
    set_connection(
        monkeypatch,
        "smtp_default",
        conn_type="smtp",
        host=conn.host,
        port=conn.port,
        login=LOGIN,
        password=PASSWORD,
        extra={"ssl_context": "none"},
    )
    (result,) = channel().send([message(1)])
    assert result.status == "sent", result.error
    assert ssl_inbox.messages[0]["tls"]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any socket use fails the test: the decision is made before connecting."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the SMTP safety check must not touch the network")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


PLAIN = {"disable_ssl": True, "disable_tls": True}


def test_plaintext_login_to_a_remote_host_is_refused_without_network(no_network: None) -> None:
    with pytest.raises(InsecureConnectionError) as info:
        SmtpConfig.from_fields("smtp_relay", "smtp.example.com", 25, LOGIN, PASSWORD, PLAIN)
    text = str(info.value)
    assert isinstance(info.value, ConnectionSetupError) and isinstance(info.value, LoyalflowError)
    assert "\n" not in text and "smtp_relay" in text and "disable_tls" in text
    assert PASSWORD not in text
    with pytest.raises(InsecureConnectionError):  # the URI form's strings mean what they say
        SmtpConfig.from_fields(
            "smtp_relay", "10.0.0.5", None, LOGIN, PASSWORD, {"disable_ssl": "true", "disable_tls": "True"}
        )
    with pytest.raises(InsecureConnectionError):
        refuse_plaintext_login("smtp_relay", "192.168.1.20", encrypted=False, sends_login=True)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.10.20.30", "::1", "[::1]", "localhost", "LOCALHOST."])
def test_plaintext_login_to_loopback_is_allowed(host: str, no_network: None) -> None:
    config = SmtpConfig.from_fields("smtp_default", host, 1025, LOGIN, PASSWORD, PLAIN)
    assert (config.ssl, config.starttls, config.port) == (False, False, 1025)


@pytest.mark.parametrize(
    "host", ["smtp.example.com", "10.0.0.1", "0.0.0.0", "127.0.0.1.example.com", "localhost.example.com"]
)
def test_only_loopback_counts_as_loopback(host: str) -> None:
    assert not is_loopback(host)


def test_airflow_defaults_and_safe_remote_configurations(no_network: None) -> None:
    default = SmtpConfig.from_fields("smtp_default", "smtp.example.com", None, LOGIN, PASSWORD, {})
    assert (default.ssl, default.starttls, default.port, default.timeout) == (True, False, 465, 30.0)
    explicit = SmtpConfig.from_fields(
        "smtp_default", "smtp.example.com", None, LOGIN, PASSWORD, {"disable_ssl": "false", "timeout": 5}
    )
    assert (explicit.ssl, explicit.starttls, explicit.port, explicit.timeout) == (True, False, 465, 5.0)
    starttls = SmtpConfig.from_fields(
        "smtp_default", "smtp.example.com", 587, LOGIN, PASSWORD, {"disable_ssl": True}
    )
    assert (starttls.ssl, starttls.starttls, starttls.port) == (False, True, 587)
    relay = SmtpConfig.from_fields("smtp_default", "relay.internal", None, None, None, PLAIN)
    assert (relay.ssl, relay.starttls, relay.port) == (False, False, 25)  # no login: nothing to leak
    with pytest.raises(ConnectionSetupError, match="ssl_context"):
        SmtpConfig.from_fields("smtp_default", "smtp.example.com", None, None, None, {"ssl_context": "off"})
    with pytest.raises(ConnectionSetupError, match="disable_tls"):
        SmtpConfig.from_fields("smtp_default", "smtp.example.com", None, None, None, {"disable_tls": "maybe"})


def test_the_channel_refuses_before_connecting(monkeypatch: pytest.MonkeyPatch, no_network: None) -> None:
    set_connection(
        monkeypatch,
        "smtp_default",
        conn_type="smtp",
        host="smtp.example.com",
        login=LOGIN,
        password=PASSWORD,
        extra=PLAIN,
    )
    with pytest.raises(InsecureConnectionError, match="smtp_default"):
        SmtpChannel(rate_per_sec=0, concurrency=1)
