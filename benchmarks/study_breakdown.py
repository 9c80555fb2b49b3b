"""Where `seelike study` spends its time: phases, and each accumulator's reductions and updates.

Usage, from the repository root, with nothing else running:

    python benchmarks/study_breakdown.py [--threads 2] [--n N] [--batch-size B]

Runs the zoo study once into a fresh folder with timers wrapped around the study's phases (the probes'
training when their steps are planned, the shared pass, the steps run on their own such as ERF, figure
drawing, the report) and around every accumulator's ``reduce`` (in the forward hooks) and ``update``
(after each batch). Forward time is what the captured forward passes took minus the reductions inside
them. The timers add a few microseconds per call; the study's own wall time is printed beside.
:mod:`benchmarks.study_speed` gives the floor and the comparison with the old study; this says what to
make faster next.
"""

from __future__ import annotations

import argparse
import collections
import functools
import importlib
import pkgutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SECONDS: dict[str, float] = collections.defaultdict(float)


def timed(label: str, function: Callable[..., Any]) -> Callable[..., Any]:
    """``function`` adding its wall time to ``SECONDS[label]`` (a method's label gets its class name)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            key = f"{label} {type(args[0]).__name__}" if label in ("reduce", "update") else label
            SECONDS[key] += time.perf_counter() - started

    return wrapper


def subclasses(kind: type) -> set[type]:
    """Every subclass of ``kind``, at any depth."""
    found = set(kind.__subclasses__())
    for sub in list(found):
        found |= subclasses(sub)
    return found


def instrument() -> None:
    """Wrap the phases and every accumulator's reduce and update in timers."""
    import seelike.analyses as analyses
    import seelike.plots as plots
    import seelike.report as report
    from seelike.analyses.base import Accumulator
    from seelike.capture import Capture
    from seelike.study import analyses as study_analyses
    from seelike.study import engine

    for module in pkgutil.iter_modules(analyses.__path__):
        importlib.import_module(f"seelike.analyses.{module.name}")
    for kind in subclasses(Accumulator):
        for method in ("reduce", "update"):
            if method in vars(kind):
                setattr(kind, method, timed(method, vars(kind)[method]))
    Capture.__call__ = timed("forward passes with their reductions", Capture.__call__)
    engine.validate_study = timed("loading models", engine.validate_study)
    study_analyses.plan_step = timed("probe training (steps planned)", study_analyses.plan_step)
    study_analyses.run_shared_pass = timed("shared pass", study_analyses.run_shared_pass)
    study_analyses.run_analysis = timed("steps with passes of their own (ERF)", study_analyses.run_analysis)
    plots.FigureQueue.draw = timed("figures", plots.FigureQueue.draw)  # the study queues its figures and draws them at the end
    report.write_report = timed("report", report.write_report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--n", type=int, help="study images (default: the zoo preset's)")
    parser.add_argument("--batch-size", type=int, help="study batch size (default: the zoo preset's)")
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    torch.set_num_threads(args.threads)
    instrument()
    from seelike.cli import app

    options = [*(["--n", str(args.n)] if args.n else []), *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]
    with tempfile.TemporaryDirectory() as out:
        started = time.perf_counter()
        try:
            app(["study", "--out", f"{out}/study", *options], standalone_mode=False)
        except SystemExit:
            pass
        total = time.perf_counter() - started
    reductions = sum(seconds for key, seconds in SECONDS.items() if key.startswith("reduce "))
    SECONDS["forward passes alone"] = SECONDS.pop("forward passes with their reductions") - reductions
    print(f"\n`seelike study` (zoo, {args.threads} threads): {total:.0f} s\n")
    print("| part | seconds | share |\n|---|---|---|")
    for key, seconds in sorted(SECONDS.items(), key=lambda item: -item[1]):
        if seconds >= 0.5:
            print(f"| {key} | {seconds:.1f} | {seconds / total:.0%} |")
    print("\nPhases overlap the parts inside them: the shared pass and the probe training hold forward passes, "
          "reductions and updates; ERF holds its own forward and backward passes.")


if __name__ == "__main__":
    main()
