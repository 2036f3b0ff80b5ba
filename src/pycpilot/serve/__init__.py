"""`pycpilot serve`: the model behind an OpenAI-compatible HTTP API, llama.cpp's /infill and a playground."""

from typing import Any

from pycpilot.serve.config import ServeConfig

__all__ = ["ServeConfig", "serve"]


def __getattr__(name: str) -> Any:
    # Serving needs torch (1.5 s to import); the command line's --help and the settings do not.
    if name == "serve":
        from pycpilot.serve.run import serve

        return serve
    raise AttributeError(name)
