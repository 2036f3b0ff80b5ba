"""`add_command`: a subcommand whose options are a config class's fields and whose work is one entry function."""

from __future__ import annotations

import argparse
import functools
import importlib
from collections.abc import Iterable

from pycpilot.settings import add_options, given


def add_command(
    sub: argparse._SubParsersAction,
    name: str,
    config_class: type,
    entry: str,
    *,
    help: str,
    description: str,
    required: Iterable[str] = (),
) -> argparse.ArgumentParser:
    """`pycpilot NAME`: `entry` ("module:function", imported only when the command runs, so `--help` stays
    light) is called with `config_class(**options given)`."""
    p = sub.add_parser(name, help=help, description=description)
    add_options(p, config_class, required=set(required))
    p.set_defaults(run=functools.partial(_run, config_class, entry))
    return p


def _run(config_class: type, entry: str, args: argparse.Namespace) -> int:
    module, _, function = entry.partition(":")
    getattr(importlib.import_module(module), function)(config_class(**given(config_class, args)))
    return 0
