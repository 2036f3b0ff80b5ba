"""`pycpilot serve`: the model behind an OpenAI-compatible HTTP API, llama.cpp's /infill and a playground."""

from pycpilot.serve.config import ServeConfig
from pycpilot.serve.run import serve

__all__ = ["ServeConfig", "serve"]
