"""Completion (seed 7.4.5): load a model, decode fast, stop where the code block ends."""

from typing import Any

__all__ = ["CompleteConfig", "Completer", "Completion", "complete"]


def __getattr__(name: str) -> Any:
    # Decoding needs torch (1.5 s to import); the command line's --help and the settings do not.
    if name in __all__:
        from pycpilot.generate import complete as module

        return getattr(module, name)
    raise AttributeError(name)
