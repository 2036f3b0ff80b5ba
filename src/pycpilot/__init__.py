"""PYCPilot: from a pile of Python code to a trained, evaluated and served code-completion model."""

__version__ = "0.1.0"
