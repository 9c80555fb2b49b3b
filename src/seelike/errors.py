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


class CaptureError(SeelikeError):
    """Hooks could not capture what was asked (a module that runs twice, a layer that never ran)."""


class ResultSchemaError(SeelikeError):
    """A saved result written by a newer seelike, or not a seelike result at all."""


def close_matches(name: str, candidates: Iterable[str], n: int = 5) -> list[str]:
    """The candidates nearest to ``name``: for 'did you mean' lists in error messages."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(name, candidates, n=n, cutoff=0.4)
    if not matches:
        matches = [c for c in candidates if name.split(".")[0] in c][:n]
    return matches
