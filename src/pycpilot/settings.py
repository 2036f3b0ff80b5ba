"""Each setting declared once, on its config field; the command line, recipes and checks are derived from it.

    vocab_size: int | None = setting(None, help="merges + bytes + specials (default: the preset's)", low=300)

A field made with `setting` carries its help, choices and bounds. `add_options` turns a config class into
argparse options (their defaults stay the dataclass's: an option not given is not in the namespace),
`given` reads them back, `coerce` types a recipe's mapping, and `check` enforces choices and bounds with
one-line errors naming the option. `pycpilot run --STAGE.OPTION` parses with the same options.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from pycpilot.checks import short
from pycpilot.errors import PycpilotError


@dataclass(frozen=True)
class Spec:
    help: str
    choices: tuple[str, ...] | None = None
    low: float | None = None  # inclusive bounds of a number
    high: float | None = None
    above: float | None = None  # exclusive bounds: a rate that must be positive, a share below 1
    below: float | None = None
    parse: Callable[[str], Any] | None = None  # command-line text -> value (sizes, comma-separated lists)
    flag: str | None = None  # the option when it is not --field-name
    alias: str | None = None  # a second spelling, such as -q
    negative: bool = False  # a bool that is on by default: the option is --no-NAME and turns it off
    group: str | None = None  # the --help section
    metavar: str | None = None
    cli: bool = True  # False: Python and recipes only
    positional: bool = False  # an optional positional argument (`pycpilot complete PROMPT`)
    nargs: str | None = None  # "+": a list given as one option with several values (else: repeatable)
    alternative: bool = False  # one of a required group of alternatives (--model or --samples)


def setting(default: Any = MISSING, *, help: str, factory: Callable[[], Any] | None = None, **spec: Any) -> Any:
    """A dataclass field with its help, choices and bounds (see Spec)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"spec": Spec(help=help, **spec)})
    if default is MISSING:
        return field(metadata={"spec": Spec(help=help, **spec)})
    return field(default=default, metadata={"spec": Spec(help=help, **spec)})


def specs(cls: type) -> list[tuple[dataclasses.Field, Spec]]:
    return [(f, f.metadata["spec"]) for f in dataclasses.fields(cls) if "spec" in f.metadata]


def option(f: dataclasses.Field, spec: Spec) -> str:
    if spec.flag:
        return spec.flag
    return f"--no-{f.name.replace('_', '-')}" if spec.negative else f"--{f.name.replace('_', '-')}"


def kind(cls: type, f: dataclasses.Field) -> tuple[str, bool]:
    """(bool | int | float | str | path | list, whether None is allowed) of a field."""
    hint = typing.get_type_hints(cls)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    is_union = bool(args) and typing.get_origin(hint) is not list
    base = next((a for a in args if a is not type(None)), hint) if is_union else hint
    if typing.get_origin(base) is list:
        return "list", optional
    names = {bool: "bool", int: "int", float: "float", str: "str", Path: "path"}
    return names.get(base, "str"), optional


def item_type(cls: type, f: dataclasses.Field) -> type:
    """What a list field holds (str, or float for list[float])."""
    hint = typing.get_type_hints(cls)[f.name]
    lists = [a for a in (hint, *typing.get_args(hint)) if typing.get_origin(a) is list]
    return typing.get_args(lists[0])[0] if lists else str


def _default_text(f: dataclasses.Field, help: str) -> str:
    if "default:" in help:  # the help says it in words ("the preset's", "the cores")
        return ""
    if f.default is not MISSING:
        value = f.default
    elif f.default_factory is not MISSING:
        value = f.default_factory()
    else:
        return ""
    if value is None or isinstance(value, bool) or value == []:
        return ""
    if isinstance(value, list):
        return f" (default: {','.join(map(str, value))})"
    big = isinstance(value, int) and value >= 10_000  # 10,000 reads better; a port of 8000 does not
    return f" (default: {value:,})" if big else f" (default: {value})"


def add_options(
    parser: argparse.ArgumentParser, cls: type, skip: set[str] = frozenset(), required: set[str] = frozenset()
) -> None:
    """One option per `setting` field of `cls` (not in `skip`), grouped by Spec.group, in field order."""
    groups: dict[str | None, Any] = {None: parser}
    alternatives = None
    for f, spec in sorted(specs(cls), key=lambda fs: fs[0].kw_only):  # mixed-in (keyword-only) settings last
        if not spec.cli or f.name in skip:
            continue
        if spec.group not in groups:
            groups[spec.group] = parser.add_argument_group(spec.group)
        target = groups[spec.group]
        if spec.alternative:
            alternatives = alternatives or parser.add_mutually_exclusive_group(required=True)
            target = alternatives
        base, _ = kind(cls, f)
        if spec.positional:
            target.add_argument(f.name, nargs="?", default=argparse.SUPPRESS, help=spec.help)
            continue
        names = ([spec.alias] if spec.alias else []) + [option(f, spec)]
        extra: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS}
        if base == "bool":  # a flag; a bool that may be None ("the preset's") gets --NAME and --no-NAME
            optional = kind(cls, f)[1]
            extra["action"] = (
                argparse.BooleanOptionalAction if optional else "store_false" if spec.negative else "store_true"
            )
            target.add_argument(*names, help=spec.help, **extra)
            continue
        extra["type"] = spec.parse or {"int": int, "float": float, "path": Path}.get(base, str)
        if base == "list" and spec.parse is None:
            extra["type"] = item_type(cls, f)
            if spec.nargs:
                extra["nargs"] = spec.nargs
            else:
                extra["action"] = "append"  # repeatable
        if spec.choices:
            extra["choices"] = list(spec.choices)
        if spec.metavar:
            extra["metavar"] = spec.metavar
        if f.name in required:
            extra["required"] = True
        target.add_argument(*names, help=spec.help + _default_text(f, spec.help), **extra)


def given(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The options of `cls` written on the command line (the rest keep the dataclass defaults)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def coerce(
    cls: type,
    values: Mapping[Any, Any],
    where: str,
    fixed: set[str] = frozenset(),
    fixed_why: str = "is given on the command line, not in a recipe",
) -> dict[str, Any]:
    """A recipe's {name: value} (names with - or _) as the fields expect them; `fixed` names are refused
    (`fixed_why` says why); one-line errors."""
    fields = {f.name: f for f, _ in specs(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if not isinstance(key, str):
            raise PycpilotError(f"{where}: setting names must be text, not {type(key).__name__} {short(key)}")
        name = key.replace("-", "_")
        if name in fixed:
            raise PycpilotError(f"{where}: {key} {fixed_why}")
        if name not in fields:
            raise PycpilotError(f"{where}: unknown setting {short(key)}")
        out[name] = _typed(kind(cls, fields[name]), value, f"{where}: {key}", item_type(cls, fields[name]))
    return out


def load_settings(cls: type, path: Path, fixed: set[str] = frozenset()) -> dict[str, Any]:
    """A recipe file (YAML or JSON) of `cls` fields, typed and checked field by field."""
    from pycpilot.recipes import read_mapping

    return coerce(cls, read_mapping(path), f"recipe {path}", fixed=fixed)


def _typed(kind_: tuple[str, bool], value: Any, what: str, item: type = str) -> Any:
    base, optional = kind_
    if value is None and optional:
        return None
    try:
        if base == "bool" and isinstance(value, bool):
            return value
        if base == "int" and not isinstance(value, bool) and float(value) == int(float(value)):
            return int(float(value))
        if base == "float" and not isinstance(value, bool):
            return float(value)  # YAML reads 3e-3 as text
        if base in ("str", "path") and isinstance(value, (str, Path)):
            return Path(value) if base == "path" else str(value)
        if base == "list" and isinstance(value, list) and item is str and all(isinstance(v, str) for v in value):
            return list(value)
        numbers = isinstance(value, list) and all(isinstance(v, (int, float, str)) for v in value)
        if base == "list" and item is float and numbers and not any(isinstance(v, bool) for v in value):
            return [float(v) for v in value]
    except (TypeError, ValueError, OverflowError):
        pass
    wanted = {"list": f"a list of {'numbers' if item is float else 'strings'}", "path": "a path"}.get(base, base)
    raise PycpilotError(f"{what} must be {wanted}{' or null' if optional else ''}, not {short(value)}")


def check(config: Any) -> None:
    """Choices and bounds of every `setting` field of `config` (None passes where the field allows it)."""
    for f, spec in specs(type(config)):
        value = getattr(config, f.name)
        if value is None:
            continue
        flag = option(f, spec)
        if flag.startswith("--"):  # --no-heal's bounds are heal's: name the setting
            flag = "--" + flag.removeprefix("--no-").removeprefix("--")
        elif spec.positional:
            flag = f.name
        if spec.choices and value not in spec.choices:
            raise PycpilotError(f"{flag} must be one of {', '.join(spec.choices)}, not {short(value)}")
        if all(b is None for b in (spec.low, spec.high, spec.above, spec.below)):
            continue
        for one in value if isinstance(value, list) else [value]:
            number = isinstance(one, (int, float)) and not isinstance(one, bool) and not math.isnan(one)
            ok = number and (spec.low is None or one >= spec.low) and (spec.high is None or one <= spec.high)
            ok = ok and (spec.above is None or one > spec.above) and (spec.below is None or one < spec.below)
            if not ok:
                raise PycpilotError(f"{flag} must be {_bounds(spec)}, not {short(one)}")


def _bounds(spec: Spec) -> str:
    """'between 2 and 4,096', 'at least 1', 'in [0, 1)', ... as the bounds say."""
    if spec.low is not None and spec.high is not None:
        return f"between {_n(spec.low)} and {_n(spec.high)}"
    lower = "[" + _n(spec.low) if spec.low is not None else "(" + _n(spec.above) if spec.above is not None else None
    upper = _n(spec.high) + "]" if spec.high is not None else _n(spec.below) + ")" if spec.below is not None else None
    if lower and upper:
        return f"in {lower}, {upper}"
    if lower:
        return f"at least {_n(spec.low)}" if spec.low is not None else f"above {_n(spec.above)}"
    return f"at most {_n(spec.high)}" if spec.high is not None else f"below {_n(spec.below)}"


def _n(x: float | None) -> str:
    return f"{int(x):,}" if x is not None and float(x).is_integer() else f"{x:g}"


class _Raising(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:
        raise PycpilotError(message)


def parse_options(cls: type, argv: list[str], prefix: str, skip: set[str] = frozenset()) -> dict[str, Any]:
    """`--OPTION VALUE ...` (as `pycpilot run` passes a stage's) -> the fields given; one-line errors."""
    parser = _Raising(prog=prefix, add_help=False, allow_abbrev=False)
    add_options(parser, cls, skip)
    try:
        return given(cls, parser.parse_args(argv))
    except PycpilotError as exc:
        raise PycpilotError(f"{prefix}: {exc}") from None
