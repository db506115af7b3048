"""Tests for the SendGrid v3 mail-send stand-in, driven by the real ``sendgrid`` client over loopback."""

from __future__ import annotations

import copy
import http.client
import json
import subprocess
import sys
import threading
import time
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import CustomArg, Mail

from tools.sendgrid_standin import SendGridStandin, validate_mail_send

API_KEY = "SG.test"
AUTH = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


def _mail(i: int = 0, key: str | None = None) -> Mail:
    mail = Mail(
        from_email="shop@example.com",
        to_emails=f"user{i}@example.com",
        subject="Welcome back",
        plain_text_content="hello",
        html_content="<p>hello</p>",
    )
    if key is not None:
        mail.custom_arg = CustomArg("idempotency_key", key)
    return mail


def _payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "personalizations": [{"to": [{"email": "user@example.com"}], "custom_args": {"campaign": "c1"}}],
        "from": {"email": "shop@example.com"},
        "subject": "Hi",
        "content": [{"type": "text/plain", "value": "hello"}, {"type": "text/html", "value": "<p>hello</p>"}],
    }
    body.update(overrides)
    return body


class Raw:
    """A keep-alive ``http.client`` connection to the stand-in."""

    def __init__(self, sg: SendGridStandin) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", sg.port, timeout=5)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], Any]:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        self.conn.request(method, path, body=data, headers=AUTH if headers is None else headers)
        resp = self.conn.getresponse()
        content = resp.read()
        return resp.status, dict(resp.getheaders()), json.loads(content) if content else None

    def send(self, body: Any) -> tuple[int, dict[str, str], Any]:
        return self.request("POST", "/v3/mail/send", body)


@pytest.fixture()
def sg() -> Iterator[SendGridStandin]:
    with SendGridStandin(api_key=API_KEY, latency=0.0) as standin:
        yield standin


@pytest.fixture()
def client(sg: SendGridStandin) -> SendGridAPIClient:
    return SendGridAPIClient(api_key=API_KEY, host=sg.url)


@pytest.fixture()
def raw(sg: SendGridStandin) -> Iterator[Raw]:
    r = Raw(sg)
    yield r
    r.conn.close()


# ------------------------------------------------------------------------------------------ happy path


def test_url_is_loopback_with_ephemeral_port(sg: SendGridStandin) -> None:
    assert sg.url == f"http://127.0.0.1:{sg.port}" and sg.port > 0


def test_sendgrid_client_send_is_accepted_and_recorded(
    sg: SendGridStandin, client: SendGridAPIClient
) -> None:
    resp = client.send(_mail(1, key="k-1"))
    assert resp.status_code == 202
    assert resp.body == b""
    message_id = resp.headers["X-Message-Id"]
    assert message_id
    [rec] = sg.accepted
    assert rec["to"] == ["user1@example.com"]
    assert rec["subject"] == "Welcome back"
    assert rec["custom_args"] == {"idempotency_key": "k-1"}
    assert rec["message_id"] == message_id
    assert [c["type"] for c in rec["content"]] == ["text/plain", "text/html"]
    assert sg.count_by_recipient() == {"user1@example.com": 1}
    assert sg.count_by_key() == {"k-1": 1}


def test_message_ids_are_unique(client: SendGridAPIClient) -> None:
    ids = {client.send(_mail(i)).headers["X-Message-Id"] for i in range(20)}
    assert len(ids) == 20


def test_custom_args_are_merged_per_personalization(sg: SendGridStandin, raw: Raw) -> None:
    body = _payload(
        custom_args={"campaign": "top", "tenant": "t1"},
        personalizations=[
            {"to": [{"email": "a@example.com"}], "custom_args": {"idempotency_key": "a", "campaign": "p"}},
            {
                "to": [{"email": "b@example.com"}],
                "cc": [{"email": "c@example.com"}],
                "custom_args": {"idempotency_key": "b"},
                "subject": "B",
            },
        ],
        categories=["welcome"],
        headers={"X-Top": "1"},
        asm={"group_id": 42},
    )
    status, headers, _ = raw.send(body)
    assert status == 202
    a, b = sg.accepted
    assert a["custom_args"] == {"campaign": "p", "tenant": "t1", "idempotency_key": "a"}
    assert b["custom_args"] == {"campaign": "top", "tenant": "t1", "idempotency_key": "b"}
    assert (a["subject"], b["subject"]) == ("Hi", "B")
    assert a["message_id"] == b["message_id"] == headers["X-Message-Id"]
    assert a["categories"] == ["welcome"] and a["headers"] == {"X-Top": "1"}
    assert sg.count_by_recipient() == {"a@example.com": 1, "b@example.com": 1, "c@example.com": 1}
    assert sg.count_by_key() == {"a": 1, "b": 1}
    assert sg.count_by_key("campaign") == {"p": 1, "top": 1}


def test_subject_in_every_personalization_and_template_without_content(sg: SendGridStandin, raw: Raw) -> None:
    body = _payload(personalizations=[{"to": [{"email": "a@example.com"}], "subject": "S"}])
    del body["subject"]
    assert raw.send(body)[0] == 202
    templated = _payload(template_id="d-123")
    del templated["subject"], templated["content"]
    assert raw.send(templated)[0] == 202
    assert len(sg.accepted) == 2


def test_send_at_within_72h_is_accepted(sg: SendGridStandin, raw: Raw) -> None:
    send_at = int(time.time()) + 71 * 3600
    assert raw.send(_payload(send_at=send_at))[0] == 202
    assert sg.accepted[0]["send_at"] == send_at


def test_scopes_endpoint(raw: Raw) -> None:
    status, _, body = raw.request("GET", "/v3/scopes")
    assert (status, body) == (200, {"scopes": ["mail.send"]})
    assert raw.request("GET", "/v3/scopes", headers={})[0] == 401


# ---------------------------------------------------------------------------------------------- auth


@pytest.mark.parametrize("key", ["SG.wrong", ""])
def test_bad_auth_is_401(sg: SendGridStandin, key: str) -> None:
    bad = SendGridAPIClient(api_key=key, host=sg.url)
    with pytest.raises(HTTPError) as info:
        bad.send(_mail())
    assert info.value.status_code == 401
    errors = json.loads(info.value.body)["errors"]
    assert errors and set(errors[0]) == {"message", "field", "help"}
    assert sg.accepted == []


def test_missing_authorization_header_is_401(raw: Raw) -> None:
    status, _, body = raw.request("POST", "/v3/mail/send", _payload(), headers={})
    assert status == 401 and body["errors"][0]["message"]


# ---------------------------------------------------------------------------------------- validation


def _without(key: str) -> dict[str, Any]:
    body = _payload()
    del body[key]
    return body


def _with_personalization(**fields: Any) -> dict[str, Any]:
    body = _payload()
    body["personalizations"][0].update(fields)
    return body


FAR_FUTURE = int(time.time()) + 73 * 3600
INVALID = {
    "personalizations missing": (_without("personalizations"), "personalizations"),
    "personalizations empty": (_payload(personalizations=[]), "personalizations"),
    "personalizations > 1000": (
        _payload(personalizations=[{"to": [{"email": f"u{i}@example.com"}]} for i in range(1001)]),
        "personalizations",
    ),
    "recipients > 1000": (
        _payload(
            personalizations=[
                {"to": [{"email": f"u{i}-{j}@example.com"} for j in range(501)]} for i in range(2)
            ]
        ),
        "personalizations",
    ),
    "to missing": (_payload(personalizations=[{"subject": "x"}]), "personalizations.0.to"),
    "to empty": (_with_personalization(to=[]), "personalizations.0.to"),
    "to bad email": (_with_personalization(to=[{"email": "not-an-email"}]), "personalizations.0.to.0.email"),
    "to no email": (_with_personalization(to=[{"name": "x"}]), "personalizations.0.to.0.email"),
    "cc duplicate of to": (
        _with_personalization(cc=[{"email": "USER@example.com"}]),
        "personalizations.0.cc.0.email",
    ),
    "from missing": (_without("from"), "from.email"),
    "from bad": (_payload(**{"from": {"email": "nope"}}), "from.email"),
    "subject missing": (_without("subject"), "subject"),
    "subject not string": (_payload(subject=5), "subject"),
    "content missing": (_without("content"), "content"),
    "content empty": (_payload(content=[]), "content"),
    "content no type": (_payload(content=[{"value": "x"}]), "content.0.type"),
    "content empty value": (_payload(content=[{"type": "text/plain", "value": ""}]), "content.0.value"),
    "html before plain": (
        _payload(content=[{"type": "text/html", "value": "<p>x</p>"}, {"type": "text/plain", "value": "x"}]),
        "content",
    ),
    "custom_args non-string": (_payload(custom_args={"n": 1}), "custom_args"),
    "personalization custom_args non-string": (
        _with_personalization(custom_args={"n": True}),
        "personalizations.0.custom_args",
    ),
    "custom_args too big": (_payload(custom_args={"blob": "x" * 10_000}), "custom_args"),
    "custom_args combined too big": (
        _payload(
            custom_args={"a": "x" * 5_000},
            personalizations=[{"to": [{"email": "u@example.com"}], "custom_args": {"b": "y" * 5_000}}],
        ),
        "personalizations.0.custom_args",
    ),
    "send_at beyond 72h": (_payload(send_at=FAR_FUTURE), "send_at"),
    "send_at not int": (_payload(send_at="tomorrow"), "send_at"),
    "send_at float": (_payload(send_at=float(int(time.time()))), "send_at"),
    "personalization send_at beyond 72h": (
        _with_personalization(send_at=FAR_FUTURE),
        "personalizations.0.send_at",
    ),
    "categories > 10": (_payload(categories=[f"c{i}" for i in range(11)]), "categories"),
    "categories non-string": (_payload(categories=["ok", 3]), "categories"),
    "asm group_id string": (_payload(asm={"group_id": "42"}), "asm.group_id"),
    "asm group_id missing": (_payload(asm={}), "asm.group_id"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_validation_rejects_with_field(sg: SendGridStandin, raw: Raw, case: str) -> None:
    body, field = INVALID[case]
    status, _, resp = raw.send(copy.deepcopy(body))
    assert status == 400, resp
    assert field in [e["field"] for e in resp["errors"]], resp
    assert all(set(e) == {"message", "field", "help"} and e["message"] for e in resp["errors"])
    assert sg.accepted == []


def test_invalid_json_is_400(sg: SendGridStandin, raw: Raw) -> None:
    status, _, resp = raw.request("POST", "/v3/mail/send", raw=b"{not json")
    assert status == 400 and resp["errors"][0]["message"]
    assert sg.accepted == []


def test_validation_errors_surface_through_sendgrid_client(
    sg: SendGridStandin, client: SendGridAPIClient
) -> None:
    with pytest.raises(HTTPError) as info:
        client.client.mail.send.post(request_body=_payload(send_at=FAR_FUTURE))
    assert info.value.status_code == 400
    assert [e["field"] for e in json.loads(info.value.body)["errors"]] == ["send_at"]
    with pytest.raises(HTTPError) as info:
        client.client.mail.send.post(request_body=INVALID["personalizations > 1000"][0])
    assert info.value.status_code == 400


def test_validator_reports_every_error() -> None:
    errors = validate_mail_send({"personalizations": [], "subject": 1, "categories": "x"})
    fields = {e["field"] for e in errors}
    assert {"personalizations", "from.email", "subject", "content", "categories"} <= fields


# ------------------------------------------------------------------------------------------- faults


def test_rate_limit_every_returns_429_with_headers(sg: SendGridStandin, client: SendGridAPIClient) -> None:
    sg.set_faults(rate_limit_every=2, retry_after=3)
    assert client.send(_mail(1)).status_code == 202
    with pytest.raises(HTTPError) as info:
        client.send(_mail(2))
    err = info.value
    assert err.status_code == 429
    assert err.headers["Retry-After"] == "3"
    assert err.headers["X-RateLimit-Remaining"] == "0"
    assert int(err.headers["X-RateLimit-Limit"]) > 0
    assert 0 <= int(err.headers["X-RateLimit-Reset"]) - time.time() <= 4
    assert client.send(_mail(3)).status_code == 202
    assert [r["to"] for r in sg.accepted] == [["user1@example.com"], ["user3@example.com"]]


@pytest.mark.parametrize(("setting", "status"), [("unavailable_every", 503), ("server_error_every", 500)])
def test_5xx_injection(sg: SendGridStandin, raw: Raw, setting: str, status: int) -> None:
    faults: dict[str, Any] = {setting: 3}
    sg.set_faults(**faults)
    statuses = [raw.send(_payload())[0] for _ in range(6)]
    assert statuses == [202, 202, status, 202, 202, status]
    assert len(sg.accepted) == 4


def test_drop_after_accept_records_but_client_sees_connection_error(
    sg: SendGridStandin, client: SendGridAPIClient
) -> None:
    sg.set_faults(drop_after_accept_every=1)
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        client.send(_mail(7, key="ambiguous"))
    assert sg.count_by_key() == {"ambiguous": 1}
    sg.set_faults(drop_after_accept_every=0)
    assert client.send(_mail(7, key="ambiguous")).status_code == 202  # the naive retry duplicates
    assert sg.stats()["by_key_duplicates"] == 1


def test_drop_after_accept_on_keep_alive_connection(sg: SendGridStandin, raw: Raw) -> None:
    sg.set_faults(drop_after_accept_every=2)
    assert raw.send(_payload())[0] == 202
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        raw.send(_payload())
    assert len(sg.accepted) == 2


def test_token_bucket_rate_limit(sg: SendGridStandin, raw: Raw) -> None:
    sg.set_faults(rate_limit_per_sec=3)
    statuses = [raw.send(_payload()) for _ in range(5)]
    assert [s for s, _, _ in statuses[:3]] == [202, 202, 202]
    limited = [h for s, h, _ in statuses if s == 429]
    assert limited, statuses
    assert int(limited[0]["Retry-After"]) >= 1 and limited[0]["X-RateLimit-Limit"] == "3"
    assert int(limited[0]["X-RateLimit-Reset"]) >= int(time.time())
    time.sleep(0.4)
    assert raw.send(_payload())[0] == 202


def test_random_faults_are_reproducible_with_seed() -> None:
    def run() -> list[int | str]:
        with SendGridStandin(
            api_key=API_KEY,
            fail_rate=0.5,
            seed=1234,
            fail_kinds=("rate_limit", "unavailable", "server_error"),
        ) as standin:
            r = Raw(standin)
            out: list[int | str] = [r.send(_payload())[0] for _ in range(30)]
            r.conn.close()
            return out

    first, second = run(), run()
    assert first == second
    assert {429, 503, 500, 202} <= set(first)


def test_latency_delays_responses() -> None:
    with SendGridStandin(api_key=API_KEY, latency=0.15) as standin:
        r = Raw(standin)
        start = time.perf_counter()
        assert r.send(_payload())[0] == 202
        assert time.perf_counter() - start >= 0.15
        r.conn.close()


def test_set_faults_rejects_unknown_and_invalid(sg: SendGridStandin) -> None:
    with pytest.raises(ValueError):
        sg.set_faults(explode=True)
    with pytest.raises(ValueError):
        sg.set_faults(fail_rate=2)
    with pytest.raises(ValueError):
        sg.set_faults(fail_kinds=["meteor"])


def test_faults_endpoint(sg: SendGridStandin, raw: Raw) -> None:
    status, _, faults = raw.request("POST", "/standin/faults", {"server_error_every": 1})
    assert status == 200 and faults["server_error_every"] == 1
    assert raw.send(_payload())[0] == 500
    assert raw.request("POST", "/standin/faults", {"clear": True})[2]["server_error_every"] == 0
    assert raw.send(_payload())[0] == 202
    assert raw.request("POST", "/standin/faults", {"nope": 1})[0] == 400
    assert raw.request("GET", "/standin/faults")[2] == sg.faults.as_dict()


# -------------------------------------------------------------------------- connections and control


def test_keep_alive_reuses_one_connection(sg: SendGridStandin, raw: Raw) -> None:
    for _ in range(5):
        status, headers, _ = raw.send(_payload())
        assert status == 202 and headers["Content-Length"] == "0"
    assert raw.request("GET", "/v3/scopes")[0] == 200
    assert raw.send(_payload(subject=None))[0] == 400  # error responses keep the connection too
    assert raw.send(_payload())[0] == 202
    assert sg.stats()["connections"] == 1
    assert len(sg.accepted) == 6


def test_stats_and_reset_endpoints(sg: SendGridStandin, client: SendGridAPIClient, raw: Raw) -> None:
    for key in ("a", "b", "a", "a"):
        client.send(_mail(key=key))
    status, _, stats = raw.request("GET", "/standin/stats")
    assert status == 200
    assert stats["accepted"] == 4 and stats["by_key_duplicates"] == 2
    assert stats["responses"] == {"202": 4}
    assert raw.request("GET", "/standin/accepted")[2][0]["custom_args"] == {"idempotency_key": "a"}
    assert raw.request("POST", "/standin/reset")[0] == 200
    assert raw.request("GET", "/standin/stats")[2]["accepted"] == 0
    assert sg.accepted == [] and sg.count_by_key() == {}
    assert raw.request("GET", "/nope")[0] == 404


def test_concurrent_clients_are_counted_exactly(sg: SendGridStandin) -> None:
    def worker(n: int) -> None:
        c = SendGridAPIClient(api_key=API_KEY, host=sg.url)
        for i in range(25):
            c.send(_mail(i, key=f"{n}-{i}"))

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sg.wait_for(200, timeout=5)
    assert len(sg.count_by_key()) == 200 and sg.duplicates() == 0


def test_clean_shutdown_leaves_no_threads_even_with_idle_keep_alive() -> None:
    before = set(threading.enumerate())
    standin = SendGridStandin(api_key=API_KEY, latency=0.0)
    with standin:
        r = Raw(standin)
        assert r.send(_payload())[0] == 202  # leaves an idle keep-alive handler thread behind
    leaked = [t for t in threading.enumerate() if t not in before]
    r.conn.close()
    assert leaked == []


def test_cli_runs_as_separate_process(tmp_path: Path) -> None:
    plugins = Path(__file__).resolve().parents[2] / "plugins"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tools.sendgrid_standin",
            "--port",
            "0",
            "--api-key",
            "SG.cli",
            "--server-error-every",
            "2",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(plugins), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        client = SendGridAPIClient(api_key="SG.cli", host=url)
        assert client.send(_mail(key="x")).status_code == 202
        with pytest.raises(HTTPError) as info:
            client.send(_mail(key="y"))
        assert info.value.status_code == 500
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=5)
        conn.request("GET", "/standin/stats")
        stats = json.loads(conn.getresponse().read())
        conn.close()
        assert stats["accepted"] == 1 and stats["by_key_duplicates"] == 0
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
