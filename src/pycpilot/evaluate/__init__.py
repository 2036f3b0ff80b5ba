"""Evaluation (seed 7.4.5): HumanEval problems and the sandbox that runs generated code."""

from pycpilot.evaluate.problems import build_program, check_samples, load_problems
from pycpilot.evaluate.sandbox import (
    Isolation,
    Result,
    SandboxConfig,
    describe_isolation,
    detect_isolation,
    run_programs,
)

__all__ = [
    "Isolation",
    "Result",
    "SandboxConfig",
    "build_program",
    "check_samples",
    "describe_isolation",
    "detect_isolation",
    "load_problems",
    "run_programs",
]
