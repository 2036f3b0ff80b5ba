"""Reading a recipe file (YAML or JSON) safely: bounded in size, no YAML aliases, string keys only.

A few hundred bytes of nested aliases expand to gigabytes once anything walks the value (a "billion laughs"),
and no recipe needs them: they are refused while parsing, before any value is built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pycpilot.checks import short
from pycpilot.errors import PycpilotError

MAX_BYTES = 1 << 20  # a recipe is a few lines; anything near this is not one


def read_mapping(path: Path, what: str = "recipe") -> dict[str, Any]:
    """The file's top-level mapping ({} for an empty file); one-line errors naming the file and the problem."""
    path = Path(path)
    try:
        with open(path, "rb") as f:  # read to the cap, not to the size stat() says (a pipe says 0)
            raw = f.read(MAX_BYTES + 1)
        if len(raw) > MAX_BYTES:
            raise PycpilotError(f"{what} {path} is over {MAX_BYTES:,} bytes: too large for a recipe")
        text = raw.decode("utf-8")
    except OSError as exc:
        raise PycpilotError(f"cannot read {what} {path}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        raise PycpilotError(f"{what} {path} is not UTF-8 text") from None
    json_file = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if json_file else _yaml(text)
    except PycpilotError as exc:
        raise PycpilotError(f"{what} {path}: {exc}") from None
    except Exception as exc:  # yaml and json raise their own types: the first line names the place
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise PycpilotError(f"{what} {path} is not valid {'JSON' if json_file else 'YAML'}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise PycpilotError(f"{what} {path} must be a mapping of settings, not a {type(data).__name__}")
    check_keys(data, f"{what} {path}")
    return data


def check_keys(mapping: dict[Any, Any], where: str) -> None:
    for key in mapping:
        if not isinstance(key, str):
            raise PycpilotError(f"{where}: setting names must be text, not {type(key).__name__} {short(key)}")


def _yaml(text: str) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for event in yaml.parse(text, Loader=loader):
        if isinstance(event, yaml.AliasEvent):
            raise PycpilotError("YAML aliases (*name) are not allowed in a recipe: write the values out")
    return yaml.load(text, Loader=loader)
