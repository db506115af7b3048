"""A local stand-in for SendGrid's v3 ``POST /v3/mail/send``, served over a real loopback socket.

In-process use::

    with SendGridStandin(api_key="SG.test", latency=0.0) as sg:
        SendGridAPIClient(api_key="SG.test", host=sg.url).send(mail)
        assert sg.count_by_key()["key-1"] == 1

Separate-process use (prints the URL on the first stdout line, serves until SIGINT/SIGTERM)::

    python -m tools.sendgrid_standin --port 0 --api-key SG.test --fail-rate 0.1 --seed 7

Endpoints: ``POST /v3/mail/send``, ``GET /v3/scopes`` (both need ``Authorization: Bearer <key>``) and the
unauthenticated control plane ``GET /standin/stats``, ``GET /standin/accepted``, ``GET|POST /standin/faults``
and ``POST /standin/reset``.

Every ``*_every`` fault counts mail-send requests that passed auth since the last :meth:`set_faults` /
:meth:`reset`, except ``drop_after_accept_every``, which counts *accepted* requests.  Deterministic faults
take precedence over random ones (``fail_rate``), which take precedence over the token bucket
(``rate_limit_per_sec``).  Faults are decided before validation, as a real outage would be.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import random
import re
import secrets
import signal
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

Json = dict[str, Any]

MAX_PERSONALIZATIONS = 1000
MAX_RECIPIENTS = 1000
MAX_CUSTOM_ARGS_BYTES = 10_000
MAX_SEND_AT_AHEAD_S = 72 * 3600
MAX_CATEGORIES = 10
MAX_BODY_BYTES = 30 * 1024 * 1024
DEFAULT_RATE_LIMIT = 600
FAULT_KINDS = ("rate_limit", "unavailable", "server_error", "drop_after_accept", "drop_before_accept")

_EVERY_FIELDS = ("rate_limit_every", "unavailable_every", "server_error_every", "drop_after_accept_every")
_EMAIL_RE = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;.]+(\.[^@\s<>,;.]+)+$")


def _error(message: str, field: str | None = None) -> Json:
    return {"message": message, "field": field, "help": None}


def _errors(*errs: Json) -> Json:
    return {"errors": list(errs)}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------------------------- faults


@dataclasses.dataclass(frozen=True)
class Faults:
    """Fault-injection settings; ``*_every=N`` faults every Nth request (0 = off)."""

    rate_limit_every: int = 0
    unavailable_every: int = 0
    server_error_every: int = 0
    drop_after_accept_every: int = 0
    latency: float = 0.0
    fail_rate: float = 0.0
    fail_kinds: tuple[str, ...] = ("rate_limit", "unavailable", "server_error", "drop_after_accept")
    seed: int | None = None
    rate_limit_per_sec: float = 0.0
    retry_after: int = 1

    def __post_init__(self) -> None:
        for name in _EVERY_FIELDS:
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        for name in ("latency", "rate_limit_per_sec"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        if not _is_number(self.fail_rate) or not 0.0 <= self.fail_rate <= 1.0:
            raise ValueError(f"fail_rate must be within [0, 1], got {self.fail_rate!r}")
        if not _is_int(self.retry_after) or self.retry_after < 1:
            raise ValueError(f"retry_after must be a positive int, got {self.retry_after!r}")
        if self.seed is not None and not _is_int(self.seed):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")
        kinds = tuple(self.fail_kinds)
        unknown = [k for k in kinds if k not in FAULT_KINDS]
        if unknown or not kinds:
            raise ValueError(f"fail_kinds must be a non-empty subset of {FAULT_KINDS}, got {kinds!r}")
        object.__setattr__(self, "fail_kinds", kinds)

    def updated(self, **changes: Any) -> Faults:
        """Return a copy with ``changes`` applied; unknown names raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - names)
        if unknown:
            raise ValueError(f"unknown fault setting(s): {', '.join(unknown)}")
        if isinstance(changes.get("fail_kinds"), (list, str)):
            kinds = changes["fail_kinds"]
            changes["fail_kinds"] = (kinds,) if isinstance(kinds, str) else tuple(kinds)
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> Json:
        """JSON-friendly view."""
        out = dataclasses.asdict(self)
        out["fail_kinds"] = list(self.fail_kinds)
        return out


# ----------------------------------------------------------------------------------------- validation


def validate_mail_send(body: Any, now: float | None = None) -> list[Json]:
    """Validate a ``/v3/mail/send`` payload the way SendGrid does; return SendGrid-style error dicts."""
    now = time.time() if now is None else now
    errors: list[Json] = []

    def err(field: str | None, message: str) -> None:
        errors.append(_error(message, field))

    if not isinstance(body, dict):
        err(None, "The request body must be a JSON object.")
        return errors
    templated = isinstance(body.get("template_id"), str) and bool(body["template_id"])

    sender = body.get("from")
    if not isinstance(sender, dict) or "email" not in sender:
        err(
            "from.email",
            "The from object must be provided for every email send. "
            "It is an object that requires an email parameter, but may also contain a name parameter.",
        )
    elif not isinstance(sender["email"], str) or not _EMAIL_RE.match(sender["email"]):
        err("from.email", "The from email does not contain a valid address.")
    if "reply_to" in body:
        reply_to = body["reply_to"]
        email = reply_to.get("email") if isinstance(reply_to, dict) else None
        if not isinstance(email, str) or not _EMAIL_RE.match(email):
            err("reply_to.email", "The reply_to email does not contain a valid address.")

    top_subject = body.get("subject")
    if top_subject is not None and not isinstance(top_subject, str):
        err("subject", "The subject must be a string.")
    has_top_subject = isinstance(top_subject, str) and bool(top_subject)

    _check_content(body.get("content"), templated, err)
    top_args = _check_custom_args(body.get("custom_args"), "custom_args", err)
    top_args_ok = _args_size(top_args) < MAX_CUSTOM_ARGS_BYTES
    if not top_args_ok:
        err("custom_args", f"The custom_args have a combined size limit of {MAX_CUSTOM_ARGS_BYTES:,} bytes.")
    if "send_at" in body:
        _check_send_at(body["send_at"], "send_at", now, err)
    if "headers" in body:
        _check_headers(body["headers"], "headers", err)
    if "categories" in body:
        _check_categories(body["categories"], err)
    if "asm" in body:
        _check_asm(body["asm"], err)

    pers = body.get("personalizations")
    if not isinstance(pers, list) or not pers:
        err(
            "personalizations",
            "The personalizations field is required and must have at least one personalization.",
        )
        return errors
    if len(pers) > MAX_PERSONALIZATIONS:
        err(
            "personalizations",
            f"The personalizations field must have between 1 and {MAX_PERSONALIZATIONS} "
            f"items; got {len(pers)}.",
        )
        return errors

    total = 0
    missing_subject = False
    for i, p in enumerate(pers):
        f = f"personalizations.{i}"
        if not isinstance(p, dict):
            err(f, "Each personalization must be an object.")
            continue
        total += _check_recipients(p, f, err)
        subject = p.get("subject")
        if subject is not None and not isinstance(subject, str):
            err(f"{f}.subject", "The subject must be a string.")
        if not (isinstance(subject, str) and subject):
            missing_subject = True
        args = _check_custom_args(p.get("custom_args"), f"{f}.custom_args", err)
        if top_args_ok and _args_size({**top_args, **args}) >= MAX_CUSTOM_ARGS_BYTES:
            err(
                f"{f}.custom_args",
                f"The custom_args (top-level plus personalization) have a combined size "
                f"limit of {MAX_CUSTOM_ARGS_BYTES:,} bytes.",
            )
        if "send_at" in p:
            _check_send_at(p["send_at"], f"{f}.send_at", now, err)
        if "headers" in p:
            _check_headers(p["headers"], f"{f}.headers", err)
    if missing_subject and not has_top_subject and not templated:
        err(
            "subject",
            "The subject is required. You can get around this requirement if you use a template "
            "with a subject defined or if every personalization has a subject defined.",
        )
    if total > MAX_RECIPIENTS:
        err(
            "personalizations",
            f"The total number of recipients (to, cc and bcc) must be no more than "
            f"{MAX_RECIPIENTS}; got {total}.",
        )
    return errors


_Err = Callable[[str | None, str], None]


def _check_recipients(p: Json, f: str, err: _Err) -> int:
    to = p.get("to")
    if not isinstance(to, list) or not to:
        err(
            f"{f}.to",
            "The to array is required for all personalization objects, and must have at least one "
            "email object with a valid email address.",
        )
    seen: dict[str, str] = {}
    count = 0
    for kind in ("to", "cc", "bcc"):
        entries = p.get(kind)
        if entries is None or (kind == "to" and not isinstance(entries, list)):
            continue
        if not isinstance(entries, list):
            err(f"{f}.{kind}", f"The {kind} field must be an array of email objects.")
            continue
        count += len(entries)
        for j, entry in enumerate(entries):
            field = f"{f}.{kind}.{j}.email"
            email = entry.get("email") if isinstance(entry, dict) else None
            if not isinstance(email, str) or not _EMAIL_RE.match(email):
                err(field, "Does not contain a valid address.")
                continue
            first = seen.setdefault(email.lower(), field)
            if first != field:
                err(
                    field,
                    "Each email address in the personalization block should be unique between to, cc, "
                    f"and bcc. We found the first duplicate instance of [{email}] in the {first} field.",
                )
    return count


def _check_content(content: Any, templated: bool, err: _Err) -> None:
    if content is None:
        if not templated:
            err(
                "content",
                "Unless a valid template_id is provided, the content parameter is required. "
                "There must be at least one defined content block.",
            )
        return
    if not isinstance(content, list) or not content:
        err("content", "The content parameter must be a non-empty array of content blocks.")
        return
    types: list[str] = []
    for i, block in enumerate(content):
        if not isinstance(block, dict):
            err(f"content.{i}", "Each content block must be an object with a type and a value.")
            continue
        ctype, value = block.get("type"), block.get("value")
        if not isinstance(ctype, str) or not ctype:
            err(f"content.{i}.type", "The content type must be a string at least one character in length.")
        else:
            types.append(ctype.lower())
        if not isinstance(value, str) or not value:
            err(f"content.{i}.value", "The content value must be a string at least one character in length.")
    if {"text/plain", "text/html"} <= set(types) and types.index("text/plain") > types.index("text/html"):
        err(
            "content",
            "If present, text/plain and text/html may only be provided in the following order: "
            "text/plain, text/html.",
        )


def _check_custom_args(value: Any, field: str, err: _Err) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        err(field, "The custom_args must be an object of string keys and string values.")
        return {}
    bad = sorted(k for k, v in value.items() if not isinstance(v, str))
    if bad:
        err(field, f"The custom_args values must be strings; offending key(s): {', '.join(bad)}.")
    return {k: v for k, v in value.items() if isinstance(v, str)}


def _args_size(args: dict[str, str]) -> int:
    return len(json.dumps(args, separators=(",", ":"), ensure_ascii=False).encode()) if args else 0


def _check_send_at(value: Any, field: str, now: float, err: _Err) -> None:
    if not _is_int(value) or value < 0:
        err(field, "The send_at parameter must be an integer Unix timestamp.")
    elif value > now + MAX_SEND_AT_AHEAD_S:
        err(field, "The send_at parameter can't be scheduled more than 72 hours in advance.")


def _check_headers(value: Any, field: str, err: _Err) -> None:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        err(field, "The headers must be an object of string keys and string values.")


def _check_categories(value: Any, err: _Err) -> None:
    if not isinstance(value, list):
        err("categories", "The categories must be an array of strings.")
    elif len(value) > MAX_CATEGORIES:
        err("categories", f"You may not have more than {MAX_CATEGORIES} categories per request.")
    elif not all(isinstance(c, str) and 0 < len(c) <= 255 for c in value):
        err("categories", "Each category must be a non-empty string of at most 255 characters.")


def _check_asm(value: Any, err: _Err) -> None:
    if not isinstance(value, dict):
        err("asm", "The asm parameter must be an object with a group_id.")
        return
    if not _is_int(value.get("group_id")):
        err("asm.group_id", "The asm.group_id must be an integer.")
    groups = value.get("groups_to_display")
    if groups is not None and (
        not isinstance(groups, list) or len(groups) > 25 or not all(_is_int(g) for g in groups)
    ):
        err("asm.groups_to_display", "The asm.groups_to_display must be an array of at most 25 integers.")


def _records(body: Json, message_id: str, now: float) -> list[Json]:
    top_args = body.get("custom_args") or {}
    top_headers = body.get("headers") or {}
    sender = body["from"]["email"]
    records = []
    for i, p in enumerate(body["personalizations"]):
        records.append(
            {
                "to": [e["email"] for e in p["to"]],
                "cc": [e["email"] for e in p.get("cc") or []],
                "bcc": [e["email"] for e in p.get("bcc") or []],
                "from": sender,
                "subject": p.get("subject") or body.get("subject"),
                "custom_args": {**top_args, **(p.get("custom_args") or {})},
                "message_id": message_id,
                "send_at": p.get("send_at", body.get("send_at")),
                "categories": list(body.get("categories") or []),
                "headers": {**top_headers, **(p.get("headers") or {})},
                "content": body.get("content"),
                "template_id": body.get("template_id"),
                "dynamic_template_data": p.get("dynamic_template_data"),
                "personalization_index": i,
                "received_at": now,
            }
        )
    return records


# ----------------------------------------------------------------------------------------------- HTTP


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def __init__(self, address: tuple[str, int], standin: SendGridStandin) -> None:
        self.standin = standin
        self._handlers: list[threading.Thread] = []
        self._handlers_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        # ThreadingMixIn does not track daemon threads; track them so stop() can join every one.
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"sendgrid-standin-conn-{client_address[1]}",
            daemon=True,
        )
        with self._handlers_lock:
            self._handlers = [t for t in self._handlers if t.is_alive()]
            self._handlers.append(thread)
        thread.start()

    def join_handlers(self, timeout: float) -> None:
        """Join every connection thread (each waits at most ``timeout`` seconds)."""
        with self._handlers_lock:
            handlers, self._handlers = self._handlers, []
        for thread in handlers:
            thread.join(timeout)

    def server_bind(self) -> None:
        # Skip HTTPServer.server_bind's socket.getfqdn(), which can stall on reverse DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if self.standin.verbose and not isinstance(exc, (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "SendGridStandin/1.0"
    sys_version = ""
    disable_nagle_algorithm = True
    timeout = 60  # idle keep-alive connections are closed after this many seconds
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.standin._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.standin._untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the base class
        if self.server.standin.verbose:
            super().log_message(format, *args)

    # -- plumbing

    def _send(
        self, status: int, body: Json | list[Any] | None = None, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        payload = b"" if body is None else json.dumps(body).encode()
        if getattr(self, "_uncounted", False):
            self.server.standin._count_response(str(status))
            self._uncounted = False
        self.send_response(status)
        if payload:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _read_body(self) -> bytes | None:
        """Read the request body (Content-Length or chunked); ``None`` after answering a bad framing."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks: list[bytes] = []
            size_total = 0
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    self.close_connection = True
                    self._send(400, _errors(_error("Malformed chunked body.")))
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                size_total += size
                if size_total > MAX_BODY_BYTES:
                    self.close_connection = True
                    self._send(413, _errors(_error("Request body too large.")))
                    return None
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413 if length > 0 else 400, _errors(_error("Invalid or too large Content-Length.")))
            return None
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization")
        if auth == f"Bearer {self.server.standin.api_key}":
            return True
        message = (
            "authorization required"
            if not auth
            else "The provided authorization grant is invalid, expired, or revoked"
        )
        self._send(401, _errors(_error(message)))
        return False

    def _drop(self) -> None:
        """Close the connection without writing any response."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    # -- routes

    def do_GET(self) -> None:  # noqa: N802 - http.server naming
        url = urlsplit(self.path)
        standin = self.server.standin
        if url.path == "/v3/scopes":
            if self._authorized():
                self._send(200, {"scopes": ["mail.send"]})
        elif url.path == "/standin/stats":
            key = parse_qs(url.query).get("key", ["idempotency_key"])[0]
            self._send(200, standin.stats(key))
        elif url.path == "/standin/accepted":
            self._send(200, standin.accepted)
        elif url.path == "/standin/faults":
            self._send(200, standin.faults.as_dict())
        else:
            self._send(404, _errors(_error("Not Found")))

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        raw = self._read_body()
        if raw is None:
            return
        path = urlsplit(self.path).path
        standin = self.server.standin
        if path == "/v3/mail/send":
            self._mail_send(raw)
        elif path == "/standin/reset":
            standin.reset()
            self._send(200, {"reset": True})
        elif path == "/standin/faults":
            try:
                changes = json.loads(raw or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("expected a JSON object")
                clear = bool(changes.pop("clear", False))
                faults = standin.set_faults(clear=clear, **changes)
            except (ValueError, TypeError) as exc:
                self._send(400, _errors(_error(str(exc), "faults")))
            else:
                self._send(200, faults.as_dict())
        else:
            self._send(404, _errors(_error("Not Found")))

    def _mail_send(self, raw: bytes) -> None:
        self._uncounted = True  # counted before the answer is written, so a client never outruns stats
        status = self._mail_send_status(raw)
        if self._uncounted:  # no answer was written (a dropped connection)
            self.server.standin._count_response(status)
        self._uncounted = False

    def _mail_send_status(self, raw: bytes) -> str:
        standin = self.server.standin
        if not self._authorized():
            return "401"
        kind, retry_after, limit = standin._decide()
        latency = standin.faults.latency
        if latency > 0 and standin._stopping.wait(latency):
            self._drop()
            return "dropped"
        if kind == "drop_before_accept":
            self._drop()
            return "dropped_before_accept"
        if kind == "rate_limit":
            self._send(
                429,
                _errors(_error("too many requests")),
                [
                    ("Retry-After", str(retry_after)),
                    ("X-RateLimit-Limit", str(limit)),
                    ("X-RateLimit-Remaining", "0"),
                    ("X-RateLimit-Reset", str(int(time.time()) + retry_after)),
                ],
            )
            return "429"
        if kind == "unavailable":
            self._send(503, _errors(_error("Service Unavailable")), [("Retry-After", str(retry_after))])
            return "503"
        if kind == "server_error":
            self._send(500, _errors(_error("Internal Server Error")))
            return "500"
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            self._send(400, _errors(_error("Bad Request: the request body must be valid JSON.")))
            return "400"
        now = time.time()
        errors = validate_mail_send(body, now)
        if errors:
            self._send(400, {"errors": errors})
            return "400"
        message_id, drop = standin._accept(body, now, forced_drop=kind == "drop_after_accept")
        if drop:
            self._drop()
            return "dropped_after_accept"
        self._send(202, None, [("X-Message-Id", message_id)])
        return "202"


# -------------------------------------------------------------------------------------------- stand-in


class SendGridStandin:
    """Threaded loopback HTTP server imitating SendGrid v3 mail send, with accounting and fault injection."""

    def __init__(
        self,
        api_key: str = "SG.test",
        latency: float = 0.0,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        rate_limit_every: int = 0,
        unavailable_every: int = 0,
        server_error_every: int = 0,
        drop_after_accept_every: int = 0,
        fail_rate: float = 0.0,
        fail_kinds: Iterable[str] = ("rate_limit", "unavailable", "server_error", "drop_after_accept"),
        seed: int | None = None,
        rate_limit_per_sec: float = 0.0,
        retry_after: int = 1,
        verbose: bool = False,
    ) -> None:
        self.api_key = api_key
        self.host, self.port = host, port
        self.verbose = verbose
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._accepted: list[Json] = []
        self._responses: collections.Counter[str] = collections.Counter()
        self._accepted_requests = 0
        self._connections = 0
        self._faults = Faults()
        self._reset_fault_state()
        self.set_faults(
            latency=latency,
            rate_limit_every=rate_limit_every,
            unavailable_every=unavailable_every,
            server_error_every=server_error_every,
            drop_after_accept_every=drop_after_accept_every,
            fail_rate=fail_rate,
            fail_kinds=tuple(fail_kinds),
            seed=seed,
            rate_limit_per_sec=rate_limit_per_sec,
            retry_after=retry_after,
        )

    # -- lifecycle

    def start(self) -> SendGridStandin:
        """Bind and serve in a background thread (idempotent)."""
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_port
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sendgrid-standin-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close idle keep-alive connections and join every server thread."""
        server, thread = self._server, self._thread
        if server is None:
            return
        server.shutdown()
        with self._lock:
            self._stopping.set()
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        server.server_close()
        server.join_handlers(timeout=5.0)
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> SendGridStandin:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321``; pass it as ``SendGridAPIClient(host=...)``."""
        if self._server is None:
            raise RuntimeError("SendGridStandin is not running; use it as a context manager or call start()")
        return f"http://{self.host}:{self.port}"

    # -- faults

    @property
    def faults(self) -> Faults:
        """Current fault settings."""
        return self._faults

    def set_faults(self, *, clear: bool = False, **changes: Any) -> Faults:
        """Change fault settings (``clear=True`` starts from no faults); restarts the ``*_every`` counters."""
        with self._lock:
            base = Faults() if clear else self._faults
            self._faults = base.updated(**changes)
            self._reset_fault_state()
            return self._faults

    def _reset_fault_state(self) -> None:
        self._requests_since = 0
        self._accepts_since = 0
        self._rng = random.Random(self._faults.seed)
        self._tokens = max(1.0, self._faults.rate_limit_per_sec)
        self._bucket_at = time.monotonic()

    def _decide(self) -> tuple[str | None, int, int]:
        """Pick the fault (if any) for one authenticated mail-send request: (kind, retry_after, limit)."""
        with self._lock:
            f = self._faults
            self._requests_since += 1
            n = self._requests_since
            limit = int(f.rate_limit_per_sec) or DEFAULT_RATE_LIMIT
            for kind, every in (
                ("rate_limit", f.rate_limit_every),
                ("unavailable", f.unavailable_every),
                ("server_error", f.server_error_every),
            ):
                if every and n % every == 0:
                    return kind, f.retry_after, limit
            if f.fail_rate and self._rng.random() < f.fail_rate:
                return self._rng.choice(f.fail_kinds), f.retry_after, limit
            if f.rate_limit_per_sec > 0:
                now = time.monotonic()
                capacity = max(1.0, f.rate_limit_per_sec)
                self._tokens = min(capacity, self._tokens + (now - self._bucket_at) * f.rate_limit_per_sec)
                self._bucket_at = now
                if self._tokens < 1.0:
                    wait = (1.0 - self._tokens) / f.rate_limit_per_sec
                    return "rate_limit", max(1, math.ceil(wait)), limit
                self._tokens -= 1.0
            return None, f.retry_after, limit

    # -- accounting

    def _accept(self, body: Json, now: float, forced_drop: bool) -> tuple[str, bool]:
        message_id = secrets.token_urlsafe(16)[:22]
        records = _records(body, message_id, now)
        with self._lock:
            self._accepted.extend(records)
            self._accepted_requests += 1
            self._accepts_since += 1
            every = self._faults.drop_after_accept_every
            drop = forced_drop or bool(every and self._accepts_since % every == 0)
            self._changed.notify_all()
        return message_id, drop

    def _count_response(self, status: str) -> None:
        with self._lock:
            self._responses[status] += 1

    def _track(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections += 1
            self._conns.add(conn)
            stopping = self._stopping.is_set()
        if stopping:  # raced with stop(): make the handler see EOF at once
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _untrack(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    @property
    def accepted(self) -> list[Json]:
        """Snapshot of accepted personalizations (to, cc, bcc, subject, custom_args, message_id, ...)."""
        with self._lock:
            return list(self._accepted)

    def count_by_recipient(self) -> collections.Counter[str]:
        """Accepted messages per recipient address (to, cc and bcc)."""
        with self._lock:
            return collections.Counter(
                email for r in self._accepted for email in (*r["to"], *r["cc"], *r["bcc"])
            )

    def count_by_key(self, arg: str = "idempotency_key") -> collections.Counter[str]:
        """Accepted personalizations per value of ``custom_args[arg]`` (records without it are skipped)."""
        with self._lock:
            return collections.Counter(
                r["custom_args"][arg] for r in self._accepted if arg in r["custom_args"]
            )

    def duplicates(self, arg: str = "idempotency_key") -> int:
        """How many accepted personalizations repeat an already-seen ``custom_args[arg]`` value."""
        return sum(c - 1 for c in self.count_by_key(arg).values() if c > 1)

    def stats(self, arg: str = "idempotency_key") -> Json:
        """Counters, as served by ``GET /standin/stats``."""
        with self._lock:
            out: Json = {
                "accepted": len(self._accepted),
                "accepted_requests": self._accepted_requests,
                "recipients": sum(len(r["to"]) + len(r["cc"]) + len(r["bcc"]) for r in self._accepted),
                "responses": dict(self._responses),
                "requests": sum(self._responses.values()),
                "connections": self._connections,
            }
        out["by_key_duplicates"] = self.duplicates(arg)
        return out

    def wait_for(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` personalizations are accepted; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: len(self._accepted) >= count, timeout)

    def reset(self) -> None:
        """Forget accepted messages and counters; keep fault settings but restart their counters."""
        with self._lock:
            self._accepted.clear()
            self._responses.clear()
            self._accepted_requests = 0
            self._connections = len(self._conns)
            self._reset_fault_state()


# ------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    """Run the stand-in until SIGINT/SIGTERM; the first stdout line is its URL."""
    parser = argparse.ArgumentParser(
        prog="python -m tools.sendgrid_standin",
        description="Local stand-in for SendGrid's v3 mail send API.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = ephemeral")
    parser.add_argument("--api-key", default="SG.test")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to sleep before responding")
    parser.add_argument("--fail-rate", type=float, default=0.0, help="probability of a random fault")
    parser.add_argument(
        "--fail-kinds",
        default="rate_limit,unavailable,server_error,drop_after_accept",
        help=f"comma-separated subset of {','.join(FAULT_KINDS)}",
    )
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--rate-limit-every", type=int, default=0)
    parser.add_argument("--unavailable-every", type=int, default=0)
    parser.add_argument("--server-error-every", type=int, default=0)
    parser.add_argument("--drop-after-accept-every", type=int, default=0)
    parser.add_argument("--rate-limit-per-sec", type=float, default=0.0)
    parser.add_argument("--retry-after", type=int, default=1)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    try:
        standin = SendGridStandin(
            args.api_key,
            args.latency,
            host=args.host,
            port=args.port,
            rate_limit_every=args.rate_limit_every,
            unavailable_every=args.unavailable_every,
            server_error_every=args.server_error_every,
            drop_after_accept_every=args.drop_after_accept_every,
            fail_rate=args.fail_rate,
            fail_kinds=[k for k in args.fail_kinds.split(",") if k],
            seed=args.seed,
            rate_limit_per_sec=args.rate_limit_per_sec,
            retry_after=args.retry_after,
            verbose=args.verbose,
        )
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    with standin:
        print(standin.url, flush=True)
        while not stop.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
