"""One exception hierarchy: every error a user can cause says what to do next."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class SeelikeError(Exception):
    """Base class of every error seelike raises on purpose."""


class DataNotFoundError(SeelikeError, FileNotFoundError):
    """A data set is not on this machine and could not be fetched."""


class InvalidInputError(SeelikeError, ValueError):
    """An argument or a tensor that no analysis can use (bad shape, NaN, too few images, ...)."""


class UnknownLayerError(SeelikeError, KeyError):
    """A layer name or pattern that matches no analysis layer of the model."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class ModelLoadError(SeelikeError):
    """A model spec that cannot be turned into a model (unknown name, no weights offline, bad checkpoint)."""


class CheckpointError(SeelikeError):
    """A training checkpoint that is damaged (truncated, garbage JSON) or does not fit its model."""


class BadImageError(InvalidInputError):
    """An image file that cannot be decoded (corrupt, truncated, empty, a decompression bomb, values out of range)."""

    def __init__(self, path: object, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"cannot read image {path} ({reason}); fix or remove it, or pass --skip-bad-images to go on without it")

    def __reduce__(self) -> tuple:  # keep it picklable (worker processes) despite the two-argument constructor
        return type(self), (self.path, self.reason)


class OutputError(SeelikeError):
    """An output folder that cannot be written (a file, read-only, full, in use by another run)."""


class CaptureError(SeelikeError):
    """Hooks could not capture what was asked (a module that runs twice, a layer that never ran)."""


class ResultSchemaError(SeelikeError):
    """A saved result written by a newer seelike, or not a seelike result at all."""


class DamagedResultError(ResultSchemaError):
    """A saved result whose files are truncated, garbage, or from two different runs."""


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The candidates nearest to ``name``: for 'did you mean' lists in error messages."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(name, candidates, n=n, cutoff=0.4)
    if not matches:
        matches = [c for c in candidates if name.split(".")[0] in c][:n]
    return matches
