"""Completion (seed 7.4.5): load a model, decode fast, stop where the code block ends."""

from pycpilot.generate.complete import CompleteConfig, Completer, Completion, complete

__all__ = ["CompleteConfig", "Completer", "Completion", "complete"]
