"""Where a pretrained model comes from: `--init-from SRC` (train, run) and `--tokenizer SRC` (pack).

SRC is a model folder (`save_pretrained` layout), a `pycpilot train --out` (its final model, or its newest
whole checkpoint while it trains), one of its checkpoints, or `hf:NAME[@REVISION]` from the Hugging Face hub
(the usual transformers cache; offline, a name not in the cache fails in one line without waiting for the
hub's retries). Guarantee: `source_folder` returns a local folder with a model's config and weights, or a
one-line error naming SRC; `check_supported` refuses what is not a GPT-2 (the family our decode loop, `serve`
and the training loop run).
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pycpilot.errors import PycpilotError

HUB = "hf:"
# Configuration and tokenizer files; one kind of weights is added below (other frameworks' weights, READMEs and
# the like are not fetched).
HUB_FILES = ["*.json", "*.txt", "*.model"]
REACH_S = 3.0  # how long the hub may take to accept a connection before we call this machine offline


def is_hub(src: str) -> bool:
    return str(src).startswith(HUB)


def _hub_name(src: str, option: str) -> tuple[str, str | None]:
    name, _, revision = str(src)[len(HUB) :].partition("@")
    if not name or name.count("/") > 1 or any(c.isspace() for c in name):
        raise PycpilotError(f"{option} {src}: write hub models as hf:OWNER/NAME or hf:OWNER/NAME@REVISION")
    return name, revision or None


def _hub_reachable(timeout: float = REACH_S) -> bool:
    """A TCP connection to the hub's endpoint within `timeout` (no request is made)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    reached: list[bool] = []

    def connect() -> None:  # in a thread: a name lookup takes no timeout of its own
        try:
            with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
                reached.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return bool(reached)


def hub_folder(src: str, option: str = "--init-from") -> Path:
    """The local snapshot of `hf:NAME[@REVISION]`: from the cache, else downloaded; offline, one line."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    name, revision = _hub_name(src, option)
    disable_progress_bars()
    try:
        return Path(snapshot_download(name, revision=revision, local_files_only=True))
    except Exception:  # not cached (or only in part): the hub is asked below
        pass
    finally:
        enable_progress_bars()
    if not _hub_reachable():
        raise PycpilotError(
            f"{option} {src}: not in the local Hugging Face cache and the hub cannot be reached (offline?); "
            f"download it on a machine with a network (`hf download {name}`) and pass its folder: {option} DIR"
        )
    try:
        from huggingface_hub import HfApi

        files = HfApi().list_repo_files(name, revision=revision)
        # safetensors where the repository has them, else PyTorch's pickles (older repositories, codeparrot's)
        weights = ["*.safetensors"] if any(f.endswith(".safetensors") for f in files) else ["pytorch_model*.bin"]
        patterns = [*HUB_FILES, *weights]
        return Path(snapshot_download(name, revision=revision, allow_patterns=patterns, etag_timeout=REACH_S))
    except Exception as exc:  # unknown repository, gated model, revision not found, network trouble
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise PycpilotError(f"{option} {src}: cannot download it: {reason}") from None


def source_folder(src: str | Path, option: str = "--init-from") -> tuple[Path, str]:
    """(the folder holding SRC's weights, what was picked, for the user)."""
    from pycpilot.generate.load import resolve_model_dir

    if is_hub(str(src)):
        folder = hub_folder(str(src), option)
        return folder, f"{str(src)[len(HUB) :]} from the Hugging Face hub ({folder})"
    path = Path(src)
    if not path.exists():
        raise PycpilotError(f"{option} {src} does not exist (a model folder, a training --out, or hf:NAME)")
    try:
        return resolve_model_dir(path)
    except PycpilotError as exc:
        raise PycpilotError(f"{option} {src}: {exc}") from None


def check_supported(config: Any, src: str | Path, option: str = "--init-from") -> None:
    """The GPT-2 family is what the training loop, the decode step and `serve` run."""
    model_type = getattr(config, "model_type", None)
    odd = [k for k in ("scale_attn_by_inverse_layer_idx", "reorder_and_upcast_attn") if getattr(config, k, False)]
    if model_type != "gpt2" or odd:
        what = f"a {model_type} model" if model_type != "gpt2" else f"a GPT-2 with {', '.join(odd)}"
        raise PycpilotError(
            f"{option} {src} is {what}; PYCPilot trains, decodes and serves plain GPT-2 models "
            "(GPT2LMHeadModel: codeparrot/codeparrot-small, microsoft/CodeGPT-small-py, earlier PYCPilot runs)"
        )


def tokenizer_folder(src: str | Path, option: str = "--tokenizer") -> Path:
    """The folder of SRC's tokenizer: a tokenizer folder as it is, else SRC's model folder (hub or local)."""
    path = Path(src)
    own = any((path / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json"))
    if not is_hub(str(src)) and (not path.is_dir() or own):
        return path  # a tokenizer folder (whole or not), or nothing: load_tokenizer says so in its words
    return source_folder(src, option)[0]
