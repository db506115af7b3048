"""The secret key: weak keys are refused for real providers and a public server; rotation keeps links."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from loyalflow.compose.tokens import (
    DEFAULT_KEY,
    LinkToken,
    is_loopback,
    key_problem,
    require_production_key,
    sign,
    verify,
    verify_link,
)
from loyalflow.deliver.channels import channel_for
from loyalflow.errors import LoyalflowError
from loyalflow.ops.cli import app as cli
from loyalflow.settings import Settings, get_settings
from tests.conftest import TEST_KEY


def with_env(monkeypatch: pytest.MonkeyPatch, **env: str) -> Settings:
    for name, value in env.items():
        monkeypatch.setenv(f"LOYALFLOW_{name.upper()}", value)
    get_settings.cache_clear()
    return Settings()


def test_the_default_key_is_refused_for_a_real_provider(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOYALFLOW_SECRET_KEY")
    weak = with_env(monkeypatch, email_provider="sendgrid", sms_provider="sns")
    assert weak.secret_key == DEFAULT_KEY
    for kind, provider in (("email", "sendgrid"), ("sms", "sns")):
        with pytest.raises(LoyalflowError) as info:
            channel_for(kind, weak)
        message = str(info.value)
        assert f"refusing to send through {provider}" in message and "development default" in message
        assert "secrets.token_urlsafe(48)" in message and "\n" not in message
    for provider in ("ses", "smtp"):
        with pytest.raises(LoyalflowError, match="LOYALFLOW_SECRET_KEY is the development default"):
            channel_for("email", with_env(monkeypatch, email_provider=provider))
    short = with_env(monkeypatch, email_provider="smtp", secret_key="x" * 31)
    with pytest.raises(LoyalflowError, match="shorter than 32 bytes"):
        channel_for("email", short)
    outbox = with_env(monkeypatch, email_provider="outbox", sms_provider="outbox", secret_key=DEFAULT_KEY)
    assert channel_for("email", outbox).provider == "outbox"  # `make demo`: any key will do
    assert channel_for("sms", outbox).provider == "outbox"


def test_the_default_key_is_refused_for_serving_on_a_public_interface(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LOYALFLOW_SECRET_KEY")
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "1"])
    assert result.exit_code == 1
    assert "refusing to serve links on 0.0.0.0" in result.output
    assert "LOYALFLOW_SECRET_KEY" in result.output and "token_urlsafe" in result.output
    with pytest.raises(LoyalflowError):
        require_production_key(Settings(), host="192.0.2.10")
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        require_production_key(Settings(), host=host)  # loopback: development
    require_production_key(Settings(secret_key=TEST_KEY), host="0.0.0.0")
    assert not is_loopback("example.com") and not is_loopback("0.0.0.0")


def test_key_rules() -> None:
    assert key_problem(DEFAULT_KEY) == "the development default"
    assert key_problem("short") == "shorter than 32 bytes"
    assert key_problem("é" * 16) is None  # bytes, not characters
    assert key_problem(TEST_KEY) is None


def test_rotation_accepts_links_signed_with_the_previous_key(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    old, new = "o" * 40, "n" * 40
    link = LinkToken("C1", "email", "thank_you")
    before = sign(old, link)
    rotated = with_env(monkeypatch, secret_key=new, secret_key_previous=old)
    assert verify_link(rotated, before) == link
    assert verify_link(rotated, sign(new, link)) == link
    assert verify(new, before) is None  # without the previous key the old link is refused
    assert verify_link(rotated, sign("neither-key-" * 4, link)) is None
    # new links are signed with the new key only
    assert verify(new, sign(new, link)) == link and verify(old, sign(new, link)) is None


@pytest.mark.parametrize(
    "value",
    ["", ".", "..", "a.b", "x" * 5000, "é.ü", "%00", "W10.", "WyJDMSJd.AAAA", "null.sig", "🙂" * 3],
)
def test_malformed_tokens_are_none_never_an_exception(value: str) -> None:
    assert verify(TEST_KEY, value) is None
    assert verify(TEST_KEY, value, previous="p" * 40) is None


def test_a_token_with_a_valid_signature_but_an_odd_payload_is_refused() -> None:
    from itsdangerous import URLSafeSerializer

    from loyalflow.compose.tokens import SALT

    serializer = URLSafeSerializer(TEST_KEY, salt=SALT)
    for payload in ([{"a": 1}, "email", None], ["C1", 7, None], ["C1"], "C1", None, [["x"], "email", "c"]):
        assert verify(TEST_KEY, serializer.dumps(payload)) is None
    assert verify(TEST_KEY, serializer.dumps(["C1", "email", {"x": 1}])) == LinkToken("C1", "email", None)
