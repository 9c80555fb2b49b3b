"""Resumable passes: a long pass saves its accumulators' state as it goes, so an interrupted one resumes at the
batch it reached instead of starting over (the study's shared pass holds most of a study's work).

A :class:`PassCheckpoint` names one pass by a ``key`` that the caller derives from everything that changes its
numbers (the study: its steps' cache keys); the driver adds the precision and the number of ranks. A file that
holds another key, other accumulators or cannot be read is ignored with a warning, never trusted: the pass then
starts over. Each rank of a distributed run saves and resumes its own share (batch i goes to rank i mod K).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seelike.analyses.base import Accumulator
from seelike.distributed import world

__all__ = ["PassCheckpoint"]

log = logging.getLogger(__name__)
progress = logging.getLogger("seelike.progress")


@dataclass
class PassCheckpoint:
    """Where a pass keeps its state between batches: ``path`` (one file per rank), at most every ``every_seconds``."""

    path: Path
    key: str
    every_seconds: float = 60.0
    _last_save: float = field(default_factory=time.monotonic, init=False, repr=False)

    def file(self) -> Path:
        """This rank's file: ``path`` itself in one process, ``stem.rankR.suffix`` for rank R of several."""
        rank, size = world()
        path = Path(self.path)
        return path if size == 1 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")

    def _identity(self, accumulators: Sequence[Accumulator], precision: str) -> dict:
        """What a saved state must match to be resumed from."""
        return {"key": self.key, "precision": precision, "ranks": world()[1], "kinds": [type(a).__name__ for a in accumulators]}

    def restore(self, accumulators: Sequence[Accumulator], precision: str) -> int:
        """Load the saved state into ``accumulators`` when it belongs to this pass; the number of this rank's
        batches it holds (0: start from the first batch)."""
        file = self.file()
        if not file.exists():
            return 0
        expected = self._identity(accumulators, precision)
        try:
            saved = torch.load(file, map_location="cpu", weights_only=True)
            if any(saved.get(name) != value for name, value in expected.items()):
                log.warning("%s belongs to another pass (other steps, settings or code); starting this pass over", file)
                return 0
            states = [accumulator.state_dict() for accumulator in accumulators]  # to put back if loading fails halfway
            try:
                for accumulator, state in zip(accumulators, saved["states"]):
                    accumulator.load_state_dict(state)
            except Exception:
                for accumulator, state in zip(accumulators, states):
                    accumulator.load_state_dict(state)
                raise
        except Exception as error:  # a truncated or damaged file: its work is lost, never trusted
            log.warning("could not resume from %s (%s); starting this pass over", file, error)
            return 0
        progress.info("resuming after %d batch(es) already summed in %s", saved["batches"], file)  # shown like progress lines
        return int(saved["batches"])

    def save_if_due(self, accumulators: Sequence[Accumulator], batches: int, precision: str) -> None:
        """Save the state of ``accumulators`` after this rank's first ``batches`` batches, if ``every_seconds`` have passed.

        A save that fails (a full disk) costs the resumability, never the pass: it is said once a minute and skipped."""
        if time.monotonic() - self._last_save < self.every_seconds:
            return
        file = self.file()
        partial = file.with_name(f"{file.name}.partial")
        document = {**self._identity(accumulators, precision), "batches": batches,
                    "states": [accumulator.state_dict() for accumulator in accumulators]}
        try:
            file.parent.mkdir(parents=True, exist_ok=True)
            torch.save(document, partial)
            os.replace(partial, file)  # atomic: an interruption while saving leaves the previous file whole
        except OSError as error:
            log.warning("could not save the pass's state to %s (%s); an interruption now loses this pass", file, error)
        self._last_save = time.monotonic()

    def remove(self) -> None:
        """Forget this rank's saved state (the pass finished; a file left behind would only be resumed from, correctly)."""
        try:
            self.file().unlink(missing_ok=True)
        except OSError as error:
            log.warning("could not remove %s (%s)", self.file(), error)
