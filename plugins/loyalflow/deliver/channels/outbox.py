"""The embedded channel: JSON lines (and ``.eml`` files for all, none or a sample of emails) in a folder."""

from __future__ import annotations

import datetime as dt
import fcntl
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import format_datetime, formataddr, parseaddr
from pathlib import Path

import msgspec

from loyalflow.deliver.channels.base import Message, SendResult

_SEND_AT = "%Y-%m-%dT%H:%M:%SZ"
_encode = msgspec.json.Encoder().encode  # escapes strings exactly as json.dumps(..., ensure_ascii=False)


def _object(values: dict[str, str]) -> bytes:
    return b"{" + b", ".join([_encode(k) + b": " + _encode(v) for k, v in values.items()]) + b"}"


def outbox_line(msg: Message, send_at: str) -> bytes:
    """One outbox line without its newline: the contract fields (docs/architecture.md §2) byte for byte as
    ``json.dumps(record, ensure_ascii=False)`` writes them (same order, ``", "`` and ``": "``).

    The layout is spelled out and each value encoded by msgspec: 4x faster than ``json``, whose escaping
    of a message's HTML and text was most of the cost (tests/deliver/test_outbox.py compares the bytes).
    """
    e = _encode
    parts = [
        b'{"campaign": ',
        e(msg.campaign),
        b', "step": ',
        e(msg.step),
        b', "customer_id": ',
        e(msg.customer_id),
        b', "channel": ',
        e(msg.channel),
        b', "to": ',
        e(msg.to),
        b', "text": ',
        e(msg.text),
        b', "send_at": ',
        e(send_at),
        b', "idempotency_key": ',
        e(msg.idempotency_key),
    ]
    if msg.channel == "email":
        parts += [
            b', "subject": ',
            e(msg.subject),
            b', "html": ',
            e(msg.html),
            b', "headers": ',
            _object(msg.headers),
        ]
    if msg.test:
        parts.append(b', "test": true')
    parts.append(b"}")
    return b"".join(parts)


def jsonl(messages: list[Message]) -> bytes:
    """The outbox lines of ``messages``, each ending in a newline; send_at formatted once per value."""
    stamps: dict[dt.datetime, str] = {}
    lines = []
    for msg in messages:
        at = msg.send_at
        if at.tzinfo is None:  # naive (UTC): equal values format alike
            stamp = stamps.get(at)
            if stamp is None:
                stamp = stamps[at] = at.strftime(_SEND_AT)
        else:
            stamp = at.strftime(_SEND_AT)
        lines.append(outbox_line(msg, stamp))
    lines.append(b"")
    return b"\n".join(lines)


def _header(value: str) -> str:
    return value if value.isascii() else Header(value, "utf-8").encode()


def mime_message(msg: Message) -> MIMEMultipart:
    """A multipart/alternative email (text, then HTML) with the list headers.

    Built with the ``email.mime`` classes: several times faster than ``EmailMessage``'s
    header registry, which matters at tens of thousands of messages per run.
    """
    mail = MIMEMultipart("alternative")
    name, address = parseaddr(msg.sender or "")
    mail["Subject"] = _header(msg.subject or "")
    mail["From"] = formataddr((name, address), charset="utf-8")
    mail["To"] = msg.to
    if msg.reply_to:
        mail["Reply-To"] = msg.reply_to
    mail["Date"] = format_datetime(msg.send_at.replace(tzinfo=dt.UTC))
    mail["Message-ID"] = f"<{msg.idempotency_key}@loyalflow>"
    for key, value in msg.headers.items():
        mail[key] = value
    mail.attach(MIMEText(msg.text, "plain", "utf-8"))
    if msg.html:
        mail.attach(MIMEText(msg.html, "html", "utf-8"))
    return mail


class OutboxChannel:
    """Appends each message to ``<outbox>/<campaign>/<channel>.jsonl`` under a file lock.

    ``eml`` says which emails are also written as ``<outbox>/<campaign>/eml/<key>.eml``: ``"all"``,
    ``"none"``, or a number N (the first N of each campaign and step, counted across runs).
    """

    provider = "outbox"
    horizon = dt.timedelta(days=36500)  # records send_at; whoever reads the outbox honours it

    def __init__(self, folder: Path, eml: str = "all"):
        self.folder = Path(folder)
        self.eml = eml

    def send(self, messages: list[Message]) -> list[SendResult]:
        """Append the messages in one write per file, and their ``.eml`` files as ``eml`` says."""
        by_file: dict[tuple[str, str], list[Message]] = {}
        for msg in messages:
            key = (msg.campaign, msg.channel)
            batch = by_file.get(key)
            if batch is None:
                batch = by_file[key] = []
            batch.append(msg)
        for (campaign, channel), batch in by_file.items():
            path = self.folder / campaign / f"{channel}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = jsonl(batch)
            with path.open("ab") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)  # also serialises the .eml counters of this campaign
                if path.stem == "email":
                    self._write_eml(path.parent / "eml", batch)
                fh.write(lines)
                fh.flush()
        return [SendResult(m.idempotency_key, "sent", f"outbox-{m.idempotency_key}") for m in messages]

    def _write_eml(self, folder: Path, batch: list[Message]) -> None:
        if self.eml == "none":
            return
        chosen = batch if self.eml == "all" else self._first(folder, batch, int(self.eml))
        if chosen:
            folder.mkdir(exist_ok=True)
        for msg in chosen:
            (folder / f"{msg.idempotency_key}.eml").write_bytes(bytes(mime_message(msg)))

    @staticmethod
    def _first(folder: Path, batch: list[Message], limit: int) -> list[Message]:
        """The messages of ``batch`` still within ``limit`` per step; the counts persist in the folder."""
        chosen: list[Message] = []
        by_step: dict[str, list[Message]] = {}
        for msg in batch:
            by_step.setdefault(msg.step, []).append(msg)
        for step, msgs in by_step.items():
            counter = folder / f".written-{step}"
            written = int(counter.read_text()) if counter.exists() else 0
            take = msgs[: max(0, limit - written)]
            if take:
                folder.mkdir(exist_ok=True)
                counter.write_text(str(written + len(take)))
                chosen.extend(take)
        return chosen
