"""Errors raised by motion-adapters. Every message names the file or parameter, what was expected and what was found."""

from __future__ import annotations

from pathlib import Path


class MotionAdapterError(ValueError):
    """Base class: bad input the user can fix."""


class AdapterFormatError(MotionAdapterError):
    """A file is unreadable, of the wrong kind, or does not fit the loaded model."""

    def __init__(self, source: str | Path | None, expected: str, found: str, hint: str | None = None):
        self.source = str(source) if source is not None else "<state dict>"
        self.expected = expected
        self.found = found
        self.hint = hint
        msg = f"{self.source}: expected {expected}, found {found}."
        if hint:
            msg += f" {hint}"
        super().__init__(msg)


class UnsafePickleError(AdapterFormatError):
    """A .ckpt/.pt file needs more than plain tensors to unpickle; it is refused, never executed."""


def yaml_problem(error: Exception) -> str:
    """A YAML parser's error in one line: the problem and where (PyYAML's own message spans several lines,
    with a caret drawing)."""
    problem = getattr(error, "problem", None) or (str(error).splitlines() or [type(error).__name__])[0]
    mark = getattr(error, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else problem
