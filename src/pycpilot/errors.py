"""The one error type users see: a single line that names the problem, never a traceback."""


class PycpilotError(Exception):
    """A problem with the user's input or environment, reported as one line by the CLI."""


class Interrupted(PycpilotError):
    """Ctrl-C that the stage handled (e.g. training saved a checkpoint); the CLI exits with 130."""
