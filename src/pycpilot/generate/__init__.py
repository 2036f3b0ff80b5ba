"""Completion (seed 7.4.5): load a model, decode fast, stop where the code block ends."""

import importlib
from typing import Any

__all__ = ["CompleteConfig", "Completer", "Completion", "complete"]


def __getattr__(name: str) -> Any:
    # Decoding needs torch (1.5 s to import); the command line's --help and the settings do not.
    if name in __all__:
        module = importlib.import_module("pycpilot.generate.complete")
        # The function `complete`, not the submodule of that name the import just set on this package.
        globals().update({n: getattr(module, n) for n in __all__})
        return globals()[name]
    raise AttributeError(name)
