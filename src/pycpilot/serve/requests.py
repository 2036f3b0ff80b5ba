"""Request bodies of /v1/completions (OpenAI's legacy Completions) and /infill (llama.cpp's server), checked
field by field: a bad one is a `BadRequest` naming the field, answered 400 in OpenAI's error shape.

Written by hand rather than as pydantic models so each message says what is wrong in the client's words
(`max_tokens must be at least 1`), and the status is 400 as OpenAI's, not FastAPI's 422.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Any

from pycpilot.errors import PycpilotError
from pycpilot.generate.sampling import MIN_TEMPERATURE, SamplingParams
from pycpilot.generate.text import SCOPES

MAX_STOPS = 4
MAX_LOGPROBS = 5


# OpenAI's error types by status; other 4xx are invalid requests, 5xx server errors.
ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 404: "invalid_request_error",
               429: "rate_limit_error", 503: "server_error"}  # fmt: skip


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.param, self.code, self.status = message, param, code, status

    def body(self) -> dict[str, Any]:
        kind = ERROR_TYPES.get(self.status, "invalid_request_error" if self.status < 500 else "server_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


@dataclass
class PromptRequest:
    """One prompt of a request, whichever endpoint it came from, with its SamplingParams (max_new_tokens is
    fitted to the context when the job is made)."""

    prompt: str
    params: SamplingParams
    suffix: str | None = None
    logprobs: int | None = None
    echo: bool = False
    stream: bool = False
    time_limit_ms: float | None = None  # t_max_predict_ms
    heal: bool = True  # token healing of the prompt's last token (our extension)


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float, integer: bool = False) -> Any:
    value = body.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"{name} must be {kind}", name)
    if isinstance(value, int) and abs(value) > 2**53:  # float() of a huge integer overflows
        raise BadRequest(f"{name} must be between {low:g} and {high:g}", name)
    if (integer and not float(value).is_integer()) or not math.isfinite(value):
        raise BadRequest(f"{name} must be {kind}", name)
    if not low <= value <= high or (name == "top_p" and value <= 0):
        raise BadRequest(f"{name} must be {'in (0, 1]' if name == 'top_p' else f'between {low:g} and {high:g}'}", name)
    return int(value) if integer else float(value)


def _flag(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false", name)
    return value


def _stops(body: dict[str, Any], name: str = "stop") -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise BadRequest(f"{name} must be a string or a list of strings", name)
    if len(stops) > MAX_STOPS:
        raise BadRequest(f"{name} takes at most {MAX_STOPS} sequences, got {len(stops)}", name)
    return [s for s in stops if s]


def _scope(body: dict[str, Any], default: str) -> str:
    scope = body.get("scope", default)
    if scope not in SCOPES:
        raise BadRequest(f"scope must be one of {', '.join(SCOPES)}", "scope")
    return scope


def _common(body: dict[str, Any], max_n: int, default_scope: str, max_tokens: int) -> dict[str, Any]:
    """Fields both endpoints share (names as OpenAI's; llama.cpp's own names are mapped before): `params` and
    the request's own flags."""
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise BadRequest("seed must be an integer between 0 and 2**63 - 1", "seed")
    temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
    try:
        params = SamplingParams(
            max_new_tokens=max_tokens,
            temperature=temperature if temperature >= MIN_TEMPERATURE else 0.0,
            top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
            top_k=_number(body, "top_k", 0, 0, 1_000_000, integer=True),
            n=_number(body, "n", 1, 1, max_n, integer=True),
            seed=seed if seed is not None else secrets.randbits(63),
            stop=_stops(body),
            scope=_scope(body, default_scope),
        )
    except PycpilotError as e:  # what the checks above let through
        raise BadRequest(str(e)) from None
    return {
        "params": params,
        "stream": _flag(body, "stream"),
        "heal": _flag(body, "heal") if "heal" in body else True,
        "time_limit_ms": _number(body, "t_max_predict_ms", 0, 0, 3_600_000) or None,
    }


def _text(body: dict[str, Any], name: str, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{name} is required", name)
        return None
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string", name)
    return value


def parse_completion(
    body: Any, model_name: str, context: int, max_n: int, default_scope: str
) -> tuple[list[PromptRequest], str]:
    """One `PromptRequest` per prompt of a /v1/completions body, and the model name to answer with."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = body.get("model", model_name)
    if model != model_name:
        raise BadRequest(f"unknown model {model!r}: this server has {model_name!r}", "model", "model_not_found")
    prompts = body.get("prompt", "")
    if isinstance(prompts, str):
        prompts = [prompts]
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise BadRequest("prompt must be a string or a non-empty list of strings (token ids are not taken)", "prompt")
    max_tokens = _number(body, "max_tokens", 16, -math.inf, math.inf, integer=True)
    if max_tokens < 1:
        raise BadRequest("max_tokens must be at least 1", "max_tokens")
    if max_tokens > context - 1:
        raise BadRequest(f"max_tokens must be at most {context - 1}: the model's context is {context}", "max_tokens")
    logprobs = body.get("logprobs")
    if logprobs is not None and (isinstance(logprobs, bool) or not isinstance(logprobs, int)):
        raise BadRequest(f"logprobs must be an integer between 0 and {MAX_LOGPROBS}", "logprobs")
    if logprobs is not None and not 0 <= logprobs <= MAX_LOGPROBS:
        raise BadRequest(f"logprobs must be between 0 and {MAX_LOGPROBS}", "logprobs")
    common = _common(body, max_n, default_scope, max_tokens)
    if len(prompts) * common["params"].n > max_n:
        raise BadRequest(f"prompts x n must be at most {max_n} (this server's batch)", "n")
    shared = dict(suffix=_text(body, "suffix"), logprobs=logprobs, echo=_flag(body, "echo"), **common)
    return [PromptRequest(prompt=p, **shared) for p in prompts], model


def parse_infill(body: Any, context: int, default_scope: str) -> PromptRequest:
    """A llama.cpp /infill body: input_prefix, input_suffix, input_extra [{filename, text}], prompt, n_predict."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    prefix = _text(body, "input_prefix") or ""
    suffix = _text(body, "input_suffix") or ""
    extra = body.get("input_extra") or []
    if not isinstance(extra, list) or not all(
        isinstance(c, dict) and isinstance(c.get("text", ""), str) and isinstance(c.get("filename", ""), str)
        for c in extra
    ):
        raise BadRequest("input_extra must be a list of {filename, text} objects", "input_extra")
    # Other files first, each under a comment naming it: context the model can read like code above the cursor.
    chunks = "".join(f"# {c.get('filename', '')}\n{c.get('text', '')}\n" for c in extra)
    prompt = chunks + prefix + (_text(body, "prompt") or "")
    n_predict = _number(body, "n_predict", -1, -math.inf, math.inf, integer=True)
    if n_predict == 0 or n_predict < -1:
        raise BadRequest("n_predict must be -1 (up to the context) or at least 1", "n_predict")
    max_tokens = context - 1 if n_predict == -1 else n_predict
    if max_tokens > context - 1:
        raise BadRequest(f"n_predict must be at most {context - 1}: the model's context is {context}", "n_predict")
    common = _common({k: v for k, v in body.items() if k != "n"}, 1, default_scope, max_tokens)
    return PromptRequest(prompt=prompt, suffix=suffix, **common)
