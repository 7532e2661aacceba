"""The one error type the CLI catches: bad input or usage, with a slug naming the problem."""

from __future__ import annotations


class AuditError(Exception):
    """A problem with the input or the request, reported as one line (never a traceback).

    ``slug`` is stable and names the kind of problem (``file-not-found``, ``not-onnx``,
    ``external-data-outside``...), so scripts and the docs can refer to it.
    """

    def __init__(self, slug: str, message: str) -> None:
        super().__init__(message)
        self.slug = slug
        self.message = message

    def __str__(self) -> str:
        return f"{self.message} [{self.slug}]"
