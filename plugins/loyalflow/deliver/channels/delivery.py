"""What every real provider shares: outcome classes, a token bucket, retries and a pool of workers.

A provider implements :meth:`PooledChannel.deliver_one` (send one message, return its provider id, or
raise :class:`Retryable`, :class:`Rejected` or :class:`InDoubt`); this module turns that into results:

- ``Retryable``: certainly not delivered (408, 429, 503, refused connection); retried with tenacity,
  honouring ``Retry-After`` / ``X-RateLimit-Reset``; once retries run out the result is ``failed`` with
  an error starting ``retryable:`` (the ledger releases it for a later run).
- ``Rejected``: certainly not delivered and not worth retrying (other 4xx, 500) → ``failed``.
- ``InDoubt``: may have been delivered (502/504, read timeout, connection dropped after the request
  was sent, any unexpected error) → ``unknown``, settled later from provider events.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.stop import stop_base

from loyalflow.deliver.channels.base import Message, SendResult

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 429, 503})
IN_DOUBT_STATUS = frozenset({502, 504})
RETRYABLE_PREFIX = "retryable:"
SCHEDULE_SLACK = dt.timedelta(minutes=5)  # a send_at this close to now counts as "now"
_EMAIL = re.compile(r"[^\s<>\"'@,;:\[\]]+@[^\s<>\"'@,;:\[\]]+")
_PHONE = re.compile(r"\+?\d[\d\s().-]{6,}\d")


class DeliveryError(Exception):
    """Base class of the three outcomes a provider call can end in besides acceptance."""

    def __init__(self, reason: str, retry_after: float | None = None, rate_limited: bool = False):
        super().__init__(redact(reason))
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class Retryable(DeliveryError):
    """Certainly not delivered and worth another try (optionally not before ``retry_after`` seconds)."""


class Rejected(DeliveryError):
    """Certainly not delivered; another try would fail the same way."""


class InDoubt(DeliveryError):
    """The provider may have accepted the message."""


def redact(text: str) -> str:
    """``text`` without email addresses or phone numbers (error texts go to logs and the ledger)."""
    return _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))[:500]


def wait_hint(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or HTTP date) and ``X-RateLimit-Reset`` (epoch)."""
    now = time.time() if now is None else now
    waits: list[float] = []
    lowered = {k.lower(): v for k, v in headers.items()}
    if value := lowered.get("retry-after"):
        try:
            waits.append(float(value))
        except ValueError:
            try:
                waits.append(parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    if value := lowered.get("x-ratelimit-reset"):
        try:
            waits.append(float(value) - now)
        except ValueError:
            pass
    return max(0.0, *waits) if waits else None


def raise_for_status(status: int, headers: Mapping[str, str], detail: str = "") -> None:
    """Raise the outcome class for a non-2xx HTTP answer (docs/architecture.md §5)."""
    if 200 <= status < 300:
        return
    reason = f"http {status}" + (f": {detail}" if detail else "")
    if status in RETRYABLE_STATUS:
        raise Retryable(reason, wait_hint(headers), rate_limited=status == 429)
    if status in IN_DOUBT_STATUS:
        raise InDoubt(reason)
    raise Rejected(reason)


def not_due(msg: Message, horizon: dt.timedelta, now: dt.datetime | None = None) -> dt.datetime | None:
    """The message's send_at when it lies beyond ``horizon`` from now (keep it for a later run)."""
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return msg.send_at if msg.send_at > now + horizon + SCHEDULE_SLACK else None


class TokenBucket:
    """A rate limit shared by the worker threads; a 429 pauses every thread, not just the one that got it."""

    def __init__(
        self, rate_per_sec: float, burst: float | None = None, clock: Callable[[], float] = time.monotonic
    ):
        self.rate = float(rate_per_sec)
        self.capacity = max(1.0, burst if burst is not None else self.rate / 20)
        self.clock = clock
        self._tokens = self.capacity
        self._at = clock()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Take one token, sleeping until one is available (no-op when the rate is 0: unlimited)."""
        if self.rate <= 0:
            return
        while True:
            with self._lock:
                now = self.clock()
                self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
                self._at = now
                wait = max(self._paused_until - now, (1.0 - self._tokens) / self.rate)
                if wait <= 1e-6:  # float slack: a microsecond early is on time
                    self._tokens -= 1.0
                    return
            sleep(wait)

    def pause(self, seconds: float) -> None:
        """Hold every thread for ``seconds`` (the provider asked us to slow down)."""
        with self._lock:
            self._paused_until = max(self._paused_until, self.clock() + seconds)


class _GiveUpIfTooLong(stop_base):
    """Stop retrying when the provider asks for a longer pause than ``max_wait``."""

    def __init__(self, max_wait: float):
        self.max_wait = max_wait

    def __call__(self, retry_state: RetryCallState) -> bool:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        return bool(getattr(exc, "retry_after", None) and exc.retry_after > self.max_wait)  # type: ignore[union-attr]


class PooledChannel:
    """Base of the real providers: bounded worker threads, one client per thread, shared rate limit."""

    provider = "abstract"
    horizon = dt.timedelta(0)  # how far ahead the provider can schedule a message (send_at)

    def __init__(
        self,
        rate_per_sec: float,
        concurrency: int,
        max_attempts: int = 5,
        max_wait: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.bucket = TokenBucket(rate_per_sec)
        self.concurrency = max(1, concurrency)
        self.max_attempts = max(1, max_attempts)
        self.max_wait = max_wait
        self.sleep = sleep
        self.local = threading.local()  # per worker thread: the provider's persistent client
        self._pool: ThreadPoolExecutor | None = None
        self._retry = self._retrying()  # tenacity keeps per-call state thread-local: safe to share

    def deliver_one(self, msg: Message) -> str:
        """Send ``msg``; return the provider's message id or raise a :class:`DeliveryError`."""
        raise NotImplementedError

    def send(self, messages: list[Message]) -> list[SendResult]:
        """Deliver every message through the worker pool; one result per message."""
        if not messages:
            return []
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix=f"loyalflow-{self.provider}")
        return list(self._pool.map(self.send_one, messages))

    def send_one(self, msg: Message) -> SendResult:
        """One message with rate limiting and retries, as a :class:`SendResult` (never raises)."""
        key = msg.idempotency_key
        if (due := not_due(msg, self.horizon)) is not None:
            return self._result(
                msg, "failed", f"{RETRYABLE_PREFIX} not due until {due:%Y-%m-%dT%H:%M}Z; kept"
            )
        try:
            message_id = self._retry(self._attempt, msg)
        except Retryable as exc:
            return self._result(msg, "failed", error=f"{RETRYABLE_PREFIX} {exc}")
        except Rejected as exc:
            return self._result(msg, "failed", error=str(exc))
        except InDoubt as exc:
            return self._result(msg, "unknown", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - anything unexpected may have happened after sending
            return self._result(msg, "unknown", error=f"{type(exc).__name__}: {redact(str(exc))}")
        log.debug("%s accepted customer %s key %s as %s", self.provider, msg.customer_id, key, message_id)
        return SendResult(key, "sent", message_id)

    def _attempt(self, msg: Message) -> str:
        self.bucket.acquire(self.sleep)
        try:
            return self.deliver_one(msg)
        except Retryable as exc:
            if exc.retry_after and exc.rate_limited:  # the account's limit: every thread slows down
                self.bucket.pause(min(exc.retry_after, self.max_wait))
            raise

    def _retrying(self) -> Retrying:
        def wait(state: RetryCallState) -> float:
            exc: Any = state.outcome.exception() if state.outcome else None
            backoff = min(self.max_wait, 0.25 * 2 ** (state.attempt_number - 1))
            return max(backoff, getattr(exc, "retry_after", None) or 0.0)

        return Retrying(
            retry=retry_if_exception_type(Retryable),
            stop=stop_after_attempt(self.max_attempts) | _GiveUpIfTooLong(self.max_wait),
            wait=wait,
            sleep=self.sleep,
            reraise=True,
        )

    def _result(self, msg: Message, status: Any, error: str) -> SendResult:
        log.warning(
            "%s %s for customer %s key %s: %s",
            self.provider,
            status,
            msg.customer_id,
            msg.idempotency_key,
            error,
        )
        return SendResult(msg.idempotency_key, status, None, error)
