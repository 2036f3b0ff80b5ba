"""`pycpilot serve`: the real server on a free loopback port, driven by the official openai client and raw HTTP."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest

from pycpilot.generate import Completer
from pycpilot.serve import ServeConfig
from pycpilot.serve.app import create_app
from serve_util import InProcess, start_process

PROMPT = "class Store:\n    def __init__(self, size):\n"


@pytest.fixture(scope="module")
def completer(tiny_run: Path) -> Completer:
    return Completer(tiny_run)


@pytest.fixture(scope="module")
def server(tiny_run: Path):
    proc, base = start_process(tiny_run, "--max-batch", "4", "--queue-size", "8")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_health_and_a_name_without_gpt(server: str) -> None:
    models = httpx.get(f"{server}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["pycpilot-gmodel"] and models["object"] == "list"
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["engine"] == "native" and health["queued"] == 0
    assert health["context"] == 256 and health["max_batch"] == 4  # the tiny run's n_positions


def test_openai_client_greedy_equals_complete(client: openai.OpenAI, completer: Completer) -> None:
    got = client.completions.create(model="pycpilot-gmodel", prompt=PROMPT, max_tokens=20, temperature=0)
    want = completer.complete(PROMPT, max_new_tokens=20, scope="file", heal=True).completions[0]
    choice = got.choices[0]
    assert choice.text == want.text and choice.finish_reason == want.finish_reason and choice.index == 0
    assert got.object == "text_completion" and got.model == "pycpilot-gmodel" and got.id.startswith("cmpl-")
    assert got.usage.prompt_tokens == len(completer.encode(PROMPT, None)) - 1  # the healed newline token
    assert got.usage.completion_tokens == want.tokens


def test_openai_client_streams_the_same_text(client: openai.OpenAI) -> None:
    kw = dict(model="pycpilot-gmodel", prompt=PROMPT, max_tokens=24, temperature=0)
    whole = client.completions.create(**kw).choices[0]
    chunks = list(client.completions.create(stream=True, **kw))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.text
    assert len([c for c in chunks if c.choices and c.choices[0].text]) > 1  # it came in pieces
    assert chunks[-1].choices[0].finish_reason == whole.finish_reason


def test_suffix_fills_in_the_middle(client: openai.OpenAI, completer: Completer) -> None:
    suffix = "\n        return self\n"
    got = client.completions.create(model="pycpilot-gmodel", prompt=PROMPT, suffix=suffix, max_tokens=12, temperature=0)
    want = completer.complete(PROMPT, suffix=suffix, max_new_tokens=12, scope="file").completions[0]
    plain = completer.complete(PROMPT, max_new_tokens=12, scope="file").completions[0]
    assert got.choices[0].text == want.text
    assert want.ids != plain.ids  # the suffix really reached the model


def test_n_samples_with_a_seed_like_complete_does(client: openai.OpenAI, completer: Completer) -> None:
    kw = dict(model="pycpilot-gmodel", prompt="def ", max_tokens=16, temperature=1.0, n=4, seed=7)  # n = --max-batch
    got = client.completions.create(**kw)
    again = client.completions.create(**kw)
    want = completer.complete("def ", n=4, max_new_tokens=16, temperature=1.0, seed=7, scope="file", heal=True)
    want = want.completions
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    assert [c.text for c in got.choices] == [c.text for c in again.choices] == [c.text for c in want]


def test_logprobs_echo_and_prompt_lists(client: openai.OpenAI) -> None:
    got = client.completions.create(
        model="pycpilot-gmodel", prompt=["def ", "import "], max_tokens=6, temperature=0, logprobs=2, echo=True
    )
    assert [c.index for c in got.choices] == [0, 1]
    plain = client.completions.create(model="pycpilot-gmodel", prompt="def ", max_tokens=6, temperature=0, logprobs=1)
    lp = plain.choices[0].logprobs
    assert "".join(lp.tokens) == plain.choices[0].text  # the healed space is the prompt's, not the completion's
    for choice, prompt in zip(got.choices, ["def ", "import "], strict=True):
        assert choice.text.startswith(prompt)
        lp = choice.logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
        assert lp.token_logprobs[0] is None  # echo: the first prompt token has nothing before it
        assert all(v <= 0 for v in lp.token_logprobs[1:]) and all(len(t) <= 2 for t in lp.top_logprobs[1:])
        assert "".join(lp.tokens) == choice.text


def test_prompt_cache_runs_only_what_is_new_and_changes_nothing(server: str, completer: Completer) -> None:
    # An editor's keystrokes: each prompt extends the last one, or goes back a little.
    typed = [PROMPT, PROMPT + "        self.", PROMPT + "        self.size = size\n", PROMPT + "        self.s"]
    before = httpx.get(f"{server}/health").json()
    for prompt in typed:
        body = {"prompt": prompt, "max_tokens": 12, "temperature": 0, "scope": "file"}
        got = httpx.post(f"{server}/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        assert got == completer.complete(prompt, max_new_tokens=12, scope="file", heal=True).completions[0].text
    after = httpx.get(f"{server}/health").json()
    reused = after["prompt_tokens_cached"] - before["prompt_tokens_cached"]
    total = after["prompt_tokens"] - before["prompt_tokens"]
    assert reused >= 3 * (len(completer.encode(PROMPT, None)) - 3) and reused < total
    # The same prompt again: all but its last two tokens come from the cache (those run as any prompt does).
    got = httpx.post(f"{server}/v1/completions", json={"prompt": typed[-1], "max_tokens": 4}, timeout=60).json()
    again = httpx.get(f"{server}/health").json()
    assert again["prompt_tokens_cached"] - after["prompt_tokens_cached"] == got["usage"]["prompt_tokens"] - 2


def test_a_growing_prompt_past_the_context_keeps_its_start_for_the_cache(server: str) -> None:
    import re

    long = "".join(f"x{i} = {i}\n" for i in range(300))  # far past the 256-token context
    cuts, cached = [], []
    for extra in ("", "y = 2\n", "y = 2\nz = 3\n"):
        before = httpx.get(f"{server}/health").json()["prompt_tokens_cached"]
        got = httpx.post(f"{server}/v1/completions", json={"prompt": long + extra, "max_tokens": 8}, timeout=60)
        cuts.append(int(re.search(r"first (\d+)", got.json()["warning"])[1]))
        cached.append(httpx.get(f"{server}/health").json()["prompt_tokens_cached"] - before)
        assert got.json()["usage"]["prompt_tokens"] <= 256 - 8
    assert all(c % 32 == 0 for c in cuts)  # cut in eighths of the context, not token by token
    assert cuts[1] == cuts[0] and cached[1] >= 200  # so the next keystroke's prompt starts alike


def test_a_prompt_run_in_two_parts_equals_it_run_whole(completer: Completer) -> None:
    import torch

    fast = completer.fast
    ids = torch.tensor([completer.encode(PROMPT * 3, None)])
    whole, parts = fast.new_cache(1, 256), fast.new_cache(1, 256)
    want = fast.step(ids, 0, whole)
    fast.step(ids[:, :17], 0, parts)
    got = fast.step(ids[:, 17:], 17, parts)
    assert torch.allclose(got, want, atol=1e-4) and got.argmax() == want.argmax()
    n = ids.shape[1]
    for a, b in zip([*whole.keys, *whole.values], [*parts.keys, *parts.values], strict=True):
        assert torch.allclose(a[:, :, :n], b[:, :, :n], atol=1e-5)


def test_time_cap_ends_a_completion_as_length(server: str) -> None:
    body = {"prompt": PROMPT, "max_tokens": 40, "temperature": 0, "t_max_predict_ms": 0.001}
    got = httpx.post(f"{server}/v1/completions", json=body).json()
    assert got["choices"][0]["finish_reason"] == "length" and got["usage"]["completion_tokens"] == 1


def test_a_prompt_past_the_context_is_cut_from_the_left_and_says_so(server: str) -> None:
    long = "x = 1\n" * 400
    got = httpx.post(f"{server}/v1/completions", json={"prompt": long, "max_tokens": 8}).json()
    assert "first" in got["warning"] and got["usage"]["prompt_tokens"] <= 256 - 8


def test_scope_line_stops_at_the_end_of_the_line(server: str) -> None:
    body = {"prompt": PROMPT, "max_tokens": 40, "temperature": 0, "scope": "line"}
    text = httpx.post(f"{server}/v1/completions", json=body).json()["choices"][0]["text"]
    assert "\n" not in text


def test_infill_like_llama_cpp(server: str, completer: Completer) -> None:
    body = {
        "input_prefix": PROMPT,
        "input_suffix": "\n        return self\n",
        "input_extra": [{"filename": "util.py", "text": "def helper():\n    pass\n"}],
        "n_predict": 12,
        "temperature": 0,
    }
    got = httpx.post(f"{server}/infill", json=body).json()
    prompt = "# util.py\ndef helper():\n    pass\n\n" + PROMPT
    want = completer.complete(prompt, suffix=body["input_suffix"], max_new_tokens=12, scope="block").completions[0]
    assert got["content"] == want.text and got["stop"] is True
    assert got["tokens_evaluated"] == len(completer.encode(prompt, body["input_suffix"]))
    assert got["stop_type"] in ("eos", "word", "limit") and got["truncated"] is False
    with httpx.stream("POST", f"{server}/infill", json={**body, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    assert "".join(e["content"] for e in events) == got["content"]
    assert events[-1]["stop"] is True and all(e["stop"] is False for e in events[:-1])


BAD = [
    (b"{bad json", None, "not valid JSON"),
    (b"[1, 2]", None, "JSON object"),
    (b"[" * 200_000 + b"]" * 200_000, None, "nested too deeply"),
    ("\udcff".encode("utf-8", "surrogatepass"), None, "not valid JSON"),
    ({"prompt": 5}, "prompt", "prompt must be"),
    ({"prompt": "x", "max_tokens": 0}, "max_tokens", "at least 1"),
    ({"prompt": "x", "max_tokens": 256}, "max_tokens", "at most 255: the model's context is 256"),
    ({"prompt": "x", "max_tokens": "10"}, "max_tokens", "integer"),
    ({"prompt": "x", "n": 0}, "n", "between 1 and 4"),
    ({"prompt": "x", "n": 5}, "n", "between 1 and 4"),
    ({"prompt": ["a", "b", "c"], "n": 2}, "n", "prompts x n"),
    ({"prompt": "x", "logprobs": 6}, "logprobs", "between 0 and 5"),
    ({"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop", "at most 4"),
    ({"prompt": "x", "stop": [1]}, "stop", "strings"),
    ({"prompt": "x", "model": "gpt-3.5-turbo-instruct"}, "model", "unknown model"),
    ({"prompt": "x", "temperature": "hot"}, "temperature", "number"),
    ({"prompt": "x", "temperature": 3}, "temperature", "between 0 and 2"),
    ({"prompt": "x", "top_p": float("nan")}, "top_p", None),
    ({"prompt": "x", "top_p": 0, "temperature": 1}, "top_p", "in (0, 1]"),
    ({"prompt": "x", "top_p": 1.5, "temperature": 1}, "top_p", "in (0, 1]"),
    ({"prompt": "x", "temperature": -1}, "temperature", "between 0 and 2"),
    ({"prompt": "x", "temperature": 10**400}, "temperature", "between 0 and 2"),
    (b'{"prompt": "x", "n": ' + b"1" * 5000 + b"}", None, "not valid JSON"),
    ({"prompt": "x", "stream": "yes"}, "stream", "true or false"),
    ({"prompt": "x", "suffix": 3}, "suffix", "string"),
    ({"prompt": "x", "seed": -1}, "seed", "seed must be"),
    ({"prompt": "x", "scope": "page"}, "scope", "scope must be"),
]


@pytest.mark.parametrize(("body", "param", "words"), BAD)
def test_bad_completion_requests_get_400_naming_the_field(server: str, body, param, words) -> None:
    if isinstance(body, bytes):
        r = httpx.post(f"{server}/v1/completions", content=body, headers={"content-type": "application/json"})
    elif body.get("top_p") != body.get("top_p"):  # NaN is not JSON: send what a careless client would
        nan = b'{"prompt": "x", "top_p": NaN}'
        r = httpx.post(f"{server}/v1/completions", content=nan, headers={"content-type": "application/json"})
    else:
        r = httpx.post(f"{server}/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words is None or words in error["message"]


def test_bad_infill_requests_get_400(server: str) -> None:
    for body, param in [
        ({"input_prefix": 3}, "input_prefix"),
        ({"input_extra": [{"filename": "a", "text": 5}]}, "input_extra"),
        ({"n_predict": 0}, "n_predict"),
        ({"n_predict": 500}, "n_predict"),
    ]:
        r = httpx.post(f"{server}/infill", json=body)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, (body, r.text)


def test_unknown_paths_and_methods_answer_in_the_error_shape(server: str) -> None:
    assert httpx.get(f"{server}/v1/nothing").json()["error"]["message"] == "Not Found"
    assert httpx.get(f"{server}/v1/completions").status_code == 405


def test_request_size_is_capped(tiny_run: Path) -> None:
    app = create_app(ServeConfig(model=tiny_run, max_request_kb=1), Completer(tiny_run))
    s = InProcess(app)
    try:
        big = {"prompt": "x" * 2000}
        r = httpx.post(f"{s.base}/v1/completions", json=big)
        assert r.status_code == 413 and "1 KiB" in r.json()["error"]["message"]

        def chunks():
            yield b'{"prompt": "'
            yield b"y" * 3000
            yield b'"}'

        json_type = {"content-type": "application/json"}
        r = httpx.post(f"{s.base}/v1/completions", content=chunks(), headers=json_type)  # no Content-Length: counted
        assert r.status_code == 413
    finally:
        s.close()


def test_api_key_and_cors(tiny_run: Path) -> None:
    key = "s3cret-key-123"
    cfg = ServeConfig(model=tiny_run, api_key=key, cors_origins=["https://editor.example"])
    s = InProcess(create_app(cfg, Completer(tiny_run)))
    url = f"{s.base}/v1/completions"
    body = {"prompt": "def ", "max_tokens": 2}
    try:
        assert httpx.post(url, json=body).status_code == 401
        wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert httpx.get(f"{s.base}/v1/models").status_code == 401
        assert httpx.post(url, json=body, headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert httpx.post(url, json=body, headers={"x-api-key": key}).status_code == 200
        assert httpx.get(f"{s.base}/health").status_code == 200 and httpx.get(s.base + "/").status_code == 200
        for origin, allowed in [
            ("http://localhost:5173", True),
            ("http://127.0.0.1:8080", True),
            ("https://editor.example", True),
            ("https://evil.example", False),
            ("http://localhost.evil.example", False),
        ]:
            pre = httpx.options(
                url,
                headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                         "Access-Control-Request-Headers": "authorization,content-type"},
            )  # fmt: skip
            assert (pre.headers.get("access-control-allow-origin") == origin) == allowed, origin
            assert (pre.status_code == 200) == allowed, origin
    finally:
        s.close()


def _held(tiny_run: Path, **kw) -> tuple[InProcess, object]:
    """A server whose model worker has not started: requests wait in its queue."""
    app = create_app(ServeConfig(model=tiny_run, **kw), Completer(tiny_run), start_worker=False)
    return InProcess(app), app.state.server.scheduler


def _health(s: InProcess) -> dict:
    return httpx.get(f"{s.base}/health").json()


def _wait_for(check, timeout: float = 10.0) -> None:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "timed out waiting"
        time.sleep(0.05)


def test_a_full_queue_answers_503_with_retry_after(tiny_run: Path) -> None:
    import concurrent.futures

    s, scheduler = _held(tiny_run, queue_size=1)
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(
                httpx.post, f"{s.base}/v1/completions", json={"prompt": "def ", "max_tokens": 4}, timeout=60
            )
            _wait_for(lambda: _health(s)["queued"] == 1)
            busy = httpx.post(f"{s.base}/v1/completions", json={"prompt": "def ", "max_tokens": 4})
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert busy.json()["error"]["code"] == "overloaded"
            scheduler.start()  # the worker catches up: the queued request is answered
            assert first.result().status_code == 200
        health = _health(s)
        assert health["rejected"] == 1 and health["served"] == 1 and health["queued"] == 0
    finally:
        s.close()


@pytest.mark.parametrize("stream", [False, True])
def test_a_client_that_leaves_cancels_its_request(stream: bool, tiny_run: Path) -> None:
    s, scheduler = _held(tiny_run)
    try:
        host, port = s.base.removeprefix("http://").split(":")
        body = json.dumps({"prompt": "def ", "max_tokens": 30, "stream": stream}).encode()
        raw = socket.create_connection((host, int(port)))
        raw.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        _wait_for(lambda: _health(s)["queued"] == 1)
        raw.close()  # gone before the worker took the request
        _wait_for(lambda: scheduler.pending[0].cancelled.is_set())  # the server noticed (it polls every 50 ms)
        scheduler.start()
        _wait_for(lambda: _health(s)["cancelled"] == 1)
        health = _health(s)
        assert health["served"] == 0 and health["queued"] == 0 and health["active_rows"] == 0
        ok = httpx.post(f"{s.base}/v1/completions", json={"prompt": "def ", "max_tokens": 3})
        assert ok.status_code == 200  # and the server goes on
    finally:
        s.close()


def test_a_request_that_fails_in_the_worker_fails_alone(tiny_run: Path, monkeypatch) -> None:
    import pycpilot.generate.batch as batch_module

    real, real_rows = batch_module.draw, batch_module.draw_rows  # the torch sampler and the C one

    def flaky(logits, temperature, *args, **kw):
        if bool(((temperature - 0.123).abs() < 1e-6).any()):  # this request's sampling breaks
            raise RuntimeError("sampling broke")
        return real(logits, temperature, *args, **kw)

    def flaky_rows(lib, rows, vocab, temperature, *args):
        if any(abs(t - 0.123) < 1e-6 for t in temperature):
            raise RuntimeError("sampling broke")
        return real_rows(lib, rows, vocab, temperature, *args)

    monkeypatch.setattr(batch_module, "draw", flaky)
    monkeypatch.setattr(batch_module, "draw_rows", flaky_rows)
    s, scheduler = _held(tiny_run)
    try:
        import concurrent.futures

        url = f"{s.base}/v1/completions"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            body = {"prompt": "def ", "max_tokens": 8}
            bad = pool.submit(httpx.post, url, json={**body, "temperature": 0.123}, timeout=60)
            good = pool.submit(httpx.post, url, json={**body, "temperature": 0}, timeout=60)
            _wait_for(lambda: _health(s)["queued"] == 2)
            scheduler.start()  # both are admitted together
            assert bad.result().status_code == 500 and "sampling broke" in bad.result().json()["error"]["message"]
            assert good.result().status_code == 200
        health = _health(s)
        assert health["status"] == "ok" and "sampling broke" in health["last_error"] and health["active_rows"] == 0
        assert httpx.post(url, json={"prompt": "def ", "max_tokens": 3}).status_code == 200
    finally:
        s.close()


def test_the_torch_engine_batches_like_the_native_step(tiny_run: Path, completer: Completer) -> None:
    import concurrent.futures

    app = create_app(ServeConfig(model=tiny_run), Completer(tiny_run, engine="torch"), start_worker=False)
    s, scheduler = InProcess(app), app.state.server.scheduler
    try:
        assert _health(s)["engine"] == "torch" and _health(s)["max_batch"] == 8
        prompts = [PROMPT, "def mean(xs):\n", "import os\n\n\ndef "]
        url = f"{s.base}/v1/completions"
        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            futures = [
                pool.submit(httpx.post, url, json={"prompt": p, "max_tokens": 10, "temperature": 0}, timeout=60)
                for p in prompts
            ]
            _wait_for(lambda: _health(s)["queued"] == 3)
            scheduler.start()  # all three are admitted together and decoded side by side
            got = [f.result().json()["choices"][0]["text"] for f in futures]
        want = [completer.complete(p, max_new_tokens=10, scope="file", heal=True).completions[0].text for p in prompts]
        assert got == want, (got, want)
        assert _health(s)["steps"] < 25  # 3 x 10 tokens in shared steps, not 30 one-row steps
        with httpx.stream(
            "POST", url, json={"prompt": PROMPT, "max_tokens": 10, "temperature": 0, "stream": True}
        ) as r:
            pieces = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ") and x != "data: [DONE]"]
        assert "".join(p["choices"][0]["text"] for p in pieces) == want[0]
    finally:
        s.close()


def test_concurrent_sampled_requests_share_steps_and_draw_as_alone(tiny_run: Path, completer: Completer) -> None:
    """n up to the server's batch, two sampled requests side by side: each sample is the one `complete` draws
    for its seed alone, and the rows advance in shared steps."""
    import concurrent.futures

    app = create_app(ServeConfig(model=tiny_run, max_batch=6), Completer(tiny_run), start_worker=False)
    s, scheduler = InProcess(app), app.state.server.scheduler
    try:
        asks = [("def mean(xs):\n", 4, 11), (PROMPT, 2, 5)]  # 4 + 2 rows: the batch full
        sampling = {"max_tokens": 12, "temperature": 0.9, "top_p": 0.9}
        url = f"{s.base}/v1/completions"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            bodies = [{"prompt": p, "n": n, "seed": seed, **sampling} for p, n, seed in asks]
            futures = [pool.submit(httpx.post, url, json=body, timeout=60) for body in bodies]
            _wait_for(lambda: _health(s)["queued"] == 2)
            scheduler.start()
            got = [[c["text"] for c in f.result().json()["choices"]] for f in futures]
        same = {"max_new_tokens": 12, "temperature": 0.9, "top_p": 0.9, "scope": "file", "heal": True}
        alone = [completer.complete(p, n=n, seed=seed, **same) for p, n, seed in asks]
        want = [[c.text for c in result.completions] for result in alone]
        assert got == want
        assert len(set(got[0])) > 1  # the samples of one request differ
        assert _health(s)["steps"] < 2 * 12  # side by side, not one request after the other
        too_many = httpx.post(url, json={"prompt": "x", "n": 7}, timeout=60)
        assert too_many.status_code == 400 and "between 1 and 6" in too_many.json()["error"]["message"]
    finally:
        s.close()


def test_the_torch_step_of_several_rows_equals_the_native_one(completer: Completer) -> None:
    import torch

    fast = completer.fast
    assert fast is not None and fast.lib is not None
    torch_fast = Completer(completer.loaded.path, engine="torch").fast
    caches = [fast.new_cache(4, 64), torch_fast.new_cache(4, 64, zero=True)]  # as the scheduler makes them
    prompts = [completer.encode(p, None) for p in (PROMPT, "def f(x):\n    return", "import os\n")]
    for f, cache in zip((fast, torch_fast), caches, strict=True):
        for slot, ids in zip((3, 0, 2), prompts, strict=True):
            f.step(torch.tensor([ids]), 0, cache.row(slot))
    native_step = __import__("pycpilot.generate.native", fromlist=["NativeStep"]).NativeStep(
        fast.lib, fast, caches[0], 2
    )
    ids, pos, slots = [5, 17, 40], [len(p) for p in prompts], [3, 0, 2]
    a = native_step.run_rows(ids, pos, slots)
    b = torch_fast.step_rows(ids, pos, slots, caches[1])
    assert torch.allclose(a, b, atol=1e-4) and (a.argmax(-1) == b.argmax(-1)).all()
    with pytest.raises(IndexError, match="past the cache"):
        torch_fast.step_rows([1], [64], [0], caches[1])
    with pytest.raises(IndexError, match="one position and one distinct slot"):
        torch_fast.step_rows([1, 2], [3, 3], [1, 1], caches[1])


def test_int8_without_the_c_step_is_not_batched(tiny_run: Path) -> None:
    # fbgemm quantises all rows of a call with one scale: rows of different requests would change each other
    app = create_app(ServeConfig(model=tiny_run), Completer(tiny_run, engine="torch", int8=True), start_worker=False)
    health = app.state.server.scheduler.health()
    assert health["max_batch"] == 1 and health["prompt_cache"] is False


def test_work_handed_to_the_worker_fails_as_a_500_and_stop_survives_a_cancelled_call(
    tiny_run: Path, completer: Completer, monkeypatch
) -> None:
    import pycpilot.serve.openai_api as app_module
    from pycpilot.serve.scheduler import Scheduler

    def broken(*args):
        raise ValueError("logprobs broke")

    monkeypatch.setattr(app_module, "logprobs_object", broken)
    s = InProcess(create_app(ServeConfig(model=tiny_run), completer))
    try:
        url = f"{s.base}/v1/completions"
        got = httpx.post(url, json={"prompt": "def ", "max_tokens": 3, "logprobs": 1}, timeout=60)
        assert got.status_code == 500 and "logprobs broke" in got.json()["error"]["message"]
        with httpx.stream("POST", url, json={"prompt": "def ", "max_tokens": 3, "logprobs": 1, "stream": True}) as r:
            lines = [x for x in r.iter_lines() if x.startswith("data: ")]
        assert any("logprobs broke" in x for x in lines)  # an SSE error event, not a cut-off stream
        assert httpx.post(url, json={"prompt": "def ", "max_tokens": 3}, timeout=60).status_code == 200
    finally:
        s.close()
    worker = Scheduler(completer, 2, 4)
    future = worker.call(lambda: 1)
    future.cancel()  # its caller went away
    worker.stop()
    worker.run_here()  # ends without tripping over the cancelled call
    assert future.cancelled() and worker.health()["worker"] == "stopped"


def test_the_hf_engine_runs_requests_one_by_one(tiny_run: Path, completer: Completer) -> None:
    s = InProcess(create_app(ServeConfig(model=tiny_run), Completer(tiny_run, engine="hf")))
    try:
        got = httpx.post(f"{s.base}/v1/completions", json={"prompt": PROMPT, "max_tokens": 10, "temperature": 0}).json()
        want = completer.complete(PROMPT, max_new_tokens=10, scope="file", heal=True).completions[0].text
        assert got["choices"][0]["text"] == want and _health(s)["max_batch"] == 1
        body = {"prompt": PROMPT, "max_tokens": 10, "temperature": 0, "stream": True}
        with httpx.stream("POST", f"{s.base}/v1/completions", json=body, timeout=60) as r:
            pieces = [json.loads(x[6:]) for x in r.iter_lines() if x.startswith("data: ") and x != "data: [DONE]"]
        texts = [p["choices"][0]["text"] for p in pieces if p["choices"]]
        assert "".join(texts) == want and len([t for t in texts if t]) > 1  # streamed as generate goes
        # A stop ends generate early, as in our loop: the same text and token count.
        body = {"prompt": PROMPT, "max_tokens": 30, "temperature": 0, "stop": ["\n"]}
        got = httpx.post(f"{s.base}/v1/completions", json=body).json()
        want = completer.complete(PROMPT, max_new_tokens=30, scope="file", stop=["\n"], heal=True).completions[0]
        assert got["choices"][0]["text"] == want.text and got["usage"]["completion_tokens"] == want.tokens
    finally:
        s.close()


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_server_cleanly(sig: str, tiny_run: Path) -> None:
    import signal

    proc, base = start_process(tiny_run)
    # logprobs run in the model worker (this server's main thread) as a call between steps
    got = httpx.post(f"{base}/v1/completions", json={"prompt": "def f(", "max_tokens": 4, "logprobs": 1}, timeout=60)
    assert got.status_code == 200 and len(got.json()["choices"][0]["logprobs"]["tokens"]) >= 1
    started = time.monotonic()
    proc.send_signal(getattr(signal, sig))
    assert proc.wait(timeout=30) == 0 and time.monotonic() - started < 10
    assert proc.stderr is not None and "Traceback" not in proc.stderr.read()


def test_serve_cli_errors_are_one_line(tiny_run: Path, tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("pycpilot"))
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = str(taken.getsockname()[1])
    try:
        for args, words in [
            (["--model", str(tiny_run), "--port", port], "cannot listen on 127.0.0.1"),
            (["--model", str(tmp_path / "none"), "--port", "0"], "does not exist"),
            (["--model", str(tiny_run), "--model-name", "my-gpt"], 'must not contain "gpt"'),
            (["--model", str(tiny_run), "--api-key", "short"], "at least 8"),
            (["--model", str(tiny_run), "--queue-size", "0"], "--queue-size must be between 1"),
            (["--model", str(tiny_run), "--threads", "-1"], "--threads must be between 1 and 64"),
            (["--model", str(tiny_run), "--cors-origin", "evil.example/path"], "--cors-origin takes"),
            (["--model", str(tiny_run), "--allowed-host", "http://box.lan/"], "--allowed-host takes a host name"),
        ]:
            done = subprocess.run([exe, "serve", *args], capture_output=True, text=True, timeout=120)
            assert done.returncode == 2 and words in done.stderr, (args, done.stderr)
            assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    finally:
        taken.close()


def test_the_listening_socket_says_tcp_so_asyncio_turns_nagle_off() -> None:
    from pycpilot.serve.run import bind

    sock = bind("127.0.0.1", 0)
    try:
        # asyncio sets TCP_NODELAY only on accepted sockets whose proto is TCP; without it every kept-alive
        # request waited ~40 ms for a delayed ACK (seen in bench_serve).
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
