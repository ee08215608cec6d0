"""Errors raised while reading or using n2p2-style model files."""

from __future__ import annotations

from pathlib import Path


class N2p2FormatError(ValueError):
    """A file in n2p2's format could not be understood.

    The message always names the file, the line (when known), the keyword (when known) and what
    to do about it, because a user on a cluster usually meets this error in a job log.
    """

    def __init__(
        self,
        path: str | Path | None,
        message: str,
        *,
        line_number: int | None = None,
        keyword: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.line_number = line_number
        self.keyword = keyword
        self.hint = hint
        where = str(self.path) if self.path is not None else "<input>"
        if line_number is not None:
            where += f", line {line_number}"
        if keyword is not None:
            where += f", keyword '{keyword}'"
        text = f"{where}: {message}"
        if hint:
            text += f" (fix: {hint})"
        super().__init__(text)
