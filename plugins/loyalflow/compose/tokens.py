"""HMAC-signed tokens for unsubscribe, preference and response links (itsdangerous), and the key rules.

Links are signed with ``LOYALFLOW_SECRET_KEY``. To rotate it, move the old value to
``LOYALFLOW_SECRET_KEY_PREVIOUS`` and set a new one: links in emails already sent keep working, new
links are signed with the new key. :func:`require_production_key` refuses real providers and a public
``loyalflow serve`` while the key is the development default or too short to be secret.
"""

from __future__ import annotations

import binascii
import hmac
import ipaddress
import zlib
from dataclasses import dataclass
from functools import lru_cache
from json.encoder import encode_basestring
from typing import TYPE_CHECKING

from itsdangerous import BadData, URLSafeSerializer

from loyalflow.errors import SettingsError

if TYPE_CHECKING:
    from loyalflow.settings import Settings

SALT = "loyalflow.link.v1"
DEFAULT_KEY = "dev-only-change-me"
MIN_KEY_BYTES = 32
MAX_TOKEN_CHARS = 1024  # real tokens are about 80 characters; anything far longer is not ours
REAL_PROVIDERS = frozenset({"sendgrid", "ses", "smtp", "sns"})
HOW_TO_SET = (
    'set LOYALFLOW_SECRET_KEY to a random value, e.g. the output of python -c "import secrets; '
    'print(secrets.token_urlsafe(48))"'
)


@dataclass(frozen=True)
class LinkToken:
    """Who a link is for: a customer on one channel, optionally about one campaign."""

    customer_id: str
    channel: str
    campaign: str | None = None


ZLIB_HEADER = b"\x78\x9c"  # zlib.compress at its default level and window
SMALL_PAYLOAD = 120  # bytes: below this a small deflate state finds the same matches (see LinkSigner)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _base64(data: bytes) -> bytes:
    """itsdangerous's ``base64_encode``: URL-safe base64 without padding."""
    return binascii.b2a_base64(data, newline=False).translate(_URLSAFE).rstrip(b"=")


def _compact_json(customer_id: str, channel: str, campaign: str | None) -> bytes:
    """``[customer_id, channel, campaign]`` as itsdangerous's compact JSON writes it (``json.dumps`` with
    ``separators=(",", ":")`` and ``ensure_ascii=False``, whose strings ``encode_basestring`` writes)."""
    last = "null" if campaign is None else encode_basestring(campaign)
    return f"[{encode_basestring(customer_id)},{encode_basestring(channel)},{last}]".encode()


class LinkSigner:
    """``URLSafeSerializer(secret, salt=SALT).dumps`` for many tokens, with the same output.

    itsdangerous derives the key, builds an HMAC and allocates a full zlib state (about 10 us) for
    every token. Here the key is derived once and its HMAC state copied per token. The serializer
    keeps a payload compressed when that saves two bytes or more; for payloads under
    :data:`SMALL_PAYLOAD` bytes the compression is tried with a 512-byte window and small hash table,
    which finds the same matches (every match is within the window, every hash chain shorter than
    zlib's chain limit, no block split) and so the same deflate stream, behind a different header.
    """

    def __init__(self, secret: str):
        serializer = URLSafeSerializer(secret, salt=SALT)
        signer = serializer.make_signer()
        self._sep = signer.sep
        self._mac = hmac.new(signer.derive_key(), digestmod=signer.digest_method)

    @staticmethod
    def _payload(json: bytes) -> bytes:
        if len(json) < SMALL_PAYLOAD:
            deflate = zlib.compressobj(6, zlib.DEFLATED, 9, 2)
            compressed = ZLIB_HEADER + (deflate.compress(json) + deflate.flush())[2:]
        else:
            compressed = zlib.compress(json)
        if len(compressed) < len(json) - 1:
            return b"." + _base64(compressed)
        return _base64(json)

    def sign(self, token: LinkToken) -> str:
        """A URL-safe signed token for ``token``."""
        return self.sign_fields(token.customer_id, token.channel, token.campaign)

    def sign_fields(self, customer_id: str, channel: str, campaign: str | None) -> str:
        """:meth:`sign` of ``LinkToken(customer_id, channel, campaign)``."""
        payload = self._payload(_compact_json(customer_id, channel, campaign))
        mac = self._mac.copy()
        mac.update(payload)
        return (payload + self._sep + _base64(mac.digest())).decode("ascii")


@lru_cache(maxsize=8)
def signer_for(secret: str) -> LinkSigner:
    """The signer for ``secret``, built once per process."""
    return LinkSigner(secret)


def sign(secret: str, token: LinkToken) -> str:
    """A URL-safe signed token for ``token``."""
    return signer_for(secret).sign(token)


def verify(secret: str, value: str, previous: str | None = None) -> LinkToken | None:
    """The token's content when signed with ``secret`` (or the ``previous`` key), else ``None``.

    Signatures are compared in constant time; anything malformed (empty, huge, not base64, not our
    payload) is ``None`` too, never an exception.
    """
    if not value or len(value) > MAX_TOKEN_CHARS:
        return None
    keys = [previous, secret] if previous else secret  # itsdangerous: the last key is the newest
    try:
        customer_id, channel, campaign = URLSafeSerializer(keys, salt=SALT).loads(value)
    except (BadData, ValueError, TypeError, UnicodeError):
        return None
    if not isinstance(customer_id, str | int) or not isinstance(channel, str):
        return None
    return LinkToken(str(customer_id), channel, campaign if isinstance(campaign, str) else None)


def verify_link(settings: Settings, value: str) -> LinkToken | None:
    """:func:`verify` with the settings' current and previous keys."""
    return verify(settings.secret_key, value, settings.secret_key_previous)


def key_problem(secret: str) -> str | None:
    """Why ``secret`` must not sign links people receive (None when it is fit)."""
    if secret == DEFAULT_KEY:
        return "the development default"
    if len(secret.encode("utf-8")) < MIN_KEY_BYTES:
        return f"shorter than {MIN_KEY_BYTES} bytes"
    return None


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: reachable from this machine only."""
    name = host.strip().strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def require_production_key(
    settings: Settings, *, provider: str | None = None, host: str | None = None
) -> None:
    """Refuse a real ``provider`` or serving on a non-loopback ``host`` with a weak secret key.

    The outbox and a server on loopback are development uses: any key will do there.
    """
    if provider is not None and provider not in REAL_PROVIDERS:
        return
    if host is not None and is_loopback(host):
        return
    problem = key_problem(settings.secret_key)
    if problem is None:
        return
    what = f"send through {provider}" if provider else f"serve links on {host}"
    raise SettingsError(f"LOYALFLOW_SECRET_KEY is {problem}: refusing to {what}; {HOW_TO_SET}")
