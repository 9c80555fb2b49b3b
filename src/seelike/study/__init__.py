"""The whole paper as one run: the engine (settings, steps as data, cache, plan, run, outcomes), one module
per research question (``rq1`` .. ``rq5``: steps and rules), the verdicts, and the presets."""

from seelike.study.engine import (
    QUESTIONS,
    Section,
    StepOutcome,
    StudySettings,
    StudyStep,
    cache_key,
    code_fingerprint,
    run_study,
)
from seelike.study.verdicts import VERDICTS, Finding, Quantity, judge

__all__ = [
    "Finding",
    "QUESTIONS",
    "Quantity",
    "Section",
    "StepOutcome",
    "StudySettings",
    "StudyStep",
    "VERDICTS",
    "cache_key",
    "code_fingerprint",
    "judge",
    "run_study",
]
