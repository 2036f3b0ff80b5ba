"""What the server refuses before a route runs (Host, content type, key) and how it treats clients that leave
mid-upload or send megabyte prompts: the attack report's findings, one test each."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

from pycpilot.generate import Completer
from pycpilot.serve import ServeConfig
from pycpilot.serve.app import create_app
from pycpilot.serve.guard import host_name, host_ok
from serve_util import InProcess, start_process

BODY = {"prompt": "def ", "max_tokens": 2}


@pytest.fixture(scope="module")
def completer(tiny_run: Path) -> Completer:
    return Completer(tiny_run)


def _app(tiny_run: Path, completer: Completer, **kw) -> InProcess:
    return InProcess(create_app(ServeConfig(model=tiny_run, **kw), completer))


def test_host_names_the_server_answers_to() -> None:
    names = {"localhost", "127.0.0.1", "my.lan"}
    assert host_name("Example.COM:8000") == "example.com" and host_name("[::1]:80") == "::1"
    for header, ok in [
        ("127.0.0.1:8000", True), ("localhost:8000", True), ("[::1]:8000", True), ("10.1.2.3", True),
        ("app.localhost:5173", True), ("my.lan", True), (None, True),
        ("evil.example:8000", False), ("localhost.evil.example", False), ("127.0.0.1.nip.io", False),
    ]:  # fmt: skip
        assert host_ok(header, names) is ok, header
    assert host_ok("evil.example", None)  # --allowed-host '*'


def test_dns_rebinding_is_refused_by_the_host_check(tiny_run: Path, completer: Completer) -> None:
    s = _app(tiny_run, completer)
    port = s.base.rsplit(":", 1)[1]
    try:
        evil = httpx.post(f"{s.base}/v1/completions", json=BODY, headers={"Host": f"rebind.evil.example:{port}"})
        assert evil.status_code == 400 and evil.json()["error"]["code"] == "host_not_allowed"
        assert "--allowed-host rebind.evil.example" in evil.json()["error"]["message"]
        assert httpx.get(f"{s.base}/health", headers={"Host": "rebind.evil.example"}).status_code == 400
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            assert httpx.post(f"{s.base}/v1/completions", json=BODY, headers={"Host": host}).status_code == 200
    finally:
        s.close()
    s = _app(tiny_run, completer, allowed_hosts=["box.lan", "my_service"])
    try:
        for host, status in [("box.lan", 200), ("my_service:8000", 200), ("other.lan", 400)]:
            assert httpx.post(f"{s.base}/v1/completions", json=BODY, headers={"Host": host}).status_code == status
    finally:
        s.close()
    s = _app(tiny_run, completer, allowed_hosts=["*"])
    try:
        assert httpx.post(f"{s.base}/v1/completions", json=BODY, headers={"Host": "any.name"}).status_code == 200
    finally:
        s.close()


def test_json_routes_take_only_json_so_a_page_cannot_post_without_a_preflight(
    tiny_run: Path, completer: Completer
) -> None:
    s = _app(tiny_run, completer)
    raw = b'{"prompt": "def ", "max_tokens": 2}'
    try:
        for path in ("/v1/completions", "/infill"):
            for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None):
                headers = {"Content-Type": kind} if kind else {}
                r = httpx.post(f"{s.base}{path}", content=raw, headers=headers)
                assert r.status_code == 415 and r.json()["error"]["type"] == "invalid_request_error", (path, kind)
        utf8 = {"Content-Type": "application/json; charset=utf-8"}
        ok = httpx.post(f"{s.base}/v1/completions", content=raw, headers=utf8)
        assert ok.status_code == 200
    finally:
        s.close()


def test_errors_use_openai_types_and_head_health_answers(tiny_run: Path, completer: Completer) -> None:
    s = _app(tiny_run, completer, api_key="s3cret-key-123", max_request_kb=1)
    try:
        assert httpx.post(f"{s.base}/v1/completions", json=BODY).json()["error"]["type"] == "authentication_error"
        auth = {"x-api-key": "s3cret-key-123"}
        big = httpx.post(f"{s.base}/v1/completions", json={"prompt": "x" * 2000}, headers=auth)
        assert big.status_code == 413 and big.json()["error"]["type"] == "invalid_request_error"
        wrong = httpx.get(f"{s.base}/v1/completions", headers=auth)
        assert wrong.status_code == 405 and wrong.json()["error"]["type"] == "invalid_request_error"
        assert httpx.head(f"{s.base}/health").status_code == 200
        assert httpx.head(f"{s.base}/").status_code == 200
    finally:
        s.close()


def test_a_megabyte_prompt_is_tokenised_off_the_event_loop(
    tiny_run: Path, completer: Completer, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = threading.Event(), threading.Event()
    real = completer.prepare

    def slow_prepare(prompt, *args, **kw):  # stands in for a tokenizer busy with a huge prompt
        if len(prompt) > 100_000:
            entered.set()
            release.wait(30)
        return real(prompt, *args, **kw)

    monkeypatch.setattr(completer, "prepare", slow_prepare)
    s = _app(tiny_run, completer)
    try:
        big = threading.Thread(
            target=httpx.post, args=(f"{s.base}/v1/completions",), kwargs={"json": {"prompt": "x = 1\n" * 50_000,
                                                                                 "max_tokens": 1}, "timeout": 60},
        )  # fmt: skip
        big.start()
        assert entered.wait(30)
        assert httpx.get(f"{s.base}/health", timeout=5).status_code == 200  # answered while the prompt is held
    finally:
        release.set()
        s.close()


def test_a_client_leaving_mid_upload_is_one_log_line_not_a_traceback(tiny_run: Path) -> None:
    proc, base = start_process(tiny_run)
    head = b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    try:
        host, port = base.removeprefix("http://").split(":")
        for framing in (b"Content-Length: 100000\r\n\r\n", b"Transfer-Encoding: chunked\r\n\r\n3e8\r\n"):
            raw = socket.create_connection((host, int(port)))
            raw.sendall(head + framing + b'{"prompt": "' + b"x" * 988)
            time.sleep(0.3)
            raw.close()  # gone with most of the body unsent
        time.sleep(0.5)
        assert httpx.get(f"{base}/health").status_code == 200
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err and "ClientDisconnect" not in err, err
    lines = [line for line in err.splitlines() if "left while sending POST /v1/completions" in line]
    assert len(lines) == 2, err
