"""The whole paper as one run: the engine (settings, steps as data, cache, plan, run, outcomes), one module
per research question (``rq1`` .. ``rq5``: steps and rules), the verdicts, and the presets.

Names are imported on first use, so that reading :mod:`seelike.study.roles` (the command line's help)
does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "QUESTIONS": "engine", "Section": "engine", "StepOutcome": "engine", "StudySettings": "engine", "StudyStep": "engine",
    "cache_key": "engine", "code_fingerprint": "engine", "run_study": "engine",
    "VERDICTS": "verdicts", "Finding": "verdicts", "Quantity": "verdicts", "judge": "verdicts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'seelike.study' has no attribute {name!r}")
    return getattr(importlib.import_module(f"seelike.study.{_EXPORTS[name]}"), name)
