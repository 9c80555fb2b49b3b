"""How many images `seelike study` forwards per model, and its wall time against its floor (issue 13, item 8).

Usage, from the repository root, with nothing else running:

    python benchmarks/study_speed.py --old PATH/TO/OLD/src [--threads 2] [--rounds 1]
    python benchmarks/study_speed.py --old PATH/TO/OLD/src --count-only   # image counts only (deterministic)

Each study (the checkout at ``--old``, e.g. a worktree of the commit before the accumulator contract,
and this checkout) runs in a subprocess into a fresh output folder (nothing cached), with a forward hook
on every model it loads that counts the images forwarded in batches (1-image passes that read shapes are
not counted). The first table lists those counts per model, old and new, beside what the study's
methods need at least: each test image once, plus each training image a probe step fits on once.

Timing (left out with ``--count-only``) runs, per round, in this order: the floor, the old study, the
new study, so contention from elsewhere hits all three alike. The floor is every model the study loads
forwarded once over the study's n test images (inference mode, no hooks) plus the ERF step's own time
(its backward passes are the method, not overhead); "floor + probe training" adds each model's forward
passes over the training images its probe steps fit on (few-shot draws and full-data images, once).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, warnings
sys.path.insert(0, sys.argv[1])
warnings.simplefilter("ignore")
import torch
torch.set_num_threads(int(sys.argv[3]))
import seelike.models as models_module
from seelike.cli import app

counts = {}
original = models_module.load_model

def counting_load_model(spec, *args, **kwargs):
    model = original(spec, *args, **kwargs)
    counts.setdefault(spec, 0)
    def hook(module, inputs, output, spec=spec):
        size = len(inputs[0]) if inputs and hasattr(inputs[0], "__len__") else 0
        if size > 1:
            counts[spec] += size
    model.module.register_forward_hook(hook)
    return model

models_module.load_model = counting_load_model
started = time.perf_counter()
try:
    app(["study", "--out", sys.argv[2], *sys.argv[4:]], standalone_mode=False)
except SystemExit:
    pass
seconds = time.perf_counter() - started
document = json.load(open(f"{sys.argv[2]}/results.json"))
steps = {name: step.get("seconds") for name, step in document["steps"].items()}
print("RESULT " + json.dumps({"seconds": seconds, "images": counts, "steps": steps}))
"""


def run_study(src: Path, threads: int, options: list[str]) -> dict:
    """One study of the checkout at ``src`` in a subprocess: its wall time, images per model and step times."""
    with tempfile.TemporaryDirectory() as out:
        script = Path(out) / "child.py"
        script.write_text(CHILD)
        finished = subprocess.run([sys.executable, str(script), str(src), f"{out}/study", str(threads), *options],
                                  capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    line = next((line for line in finished.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"study of {src} failed:\n{finished.stderr[-3000:]}")
    print(f"study of {src}: {line}", file=sys.stderr)  # kept in the log whatever happens next
    return json.loads(line[len("RESULT "):])


def needed_images(n: int | None, batch_size: int | None) -> tuple[dict[str, int], dict[str, list[int]], object]:
    """Per model spec of the default study: its test images (n) and the training images its probe steps fit on (once each)."""
    sys.path.insert(0, str(ROOT / "src"))
    import dataclasses

    import torch

    from seelike.analyses.probes import few_shot_indices
    from seelike.data import load_dataset
    from seelike.study.analyses import PROBE_TRAIN_IMAGES
    from seelike.study.presets import PRESET_MODELS, PRESET_SETTINGS, build_steps

    settings = PRESET_SETTINGS["zoo"]
    settings = dataclasses.replace(settings, **{k: v for k, v in dict(n=n, batch_size=batch_size).items() if v is not None})
    steps = build_steps(dict(PRESET_MODELS["zoo"]))
    specs = list(dict.fromkeys(spec for step in steps for spec in step.specs))
    train = load_dataset(settings.data, split="train")
    training: dict[str, set[int]] = {spec: set() for spec in specs}
    for step in (s for s in steps if s.analysis == "probes"):
        images: set[int] = set()
        if step.params.get("shots"):
            draws = few_shot_indices(train.labels, train.num_classes, step.params["shots"], step.params.get("samples", 5), settings.seed)
            images |= {int(i) for draw in draws for part in draw for i in part}
        if step.params.get("full_data"):
            n_train = min(PROBE_TRAIN_IMAGES, settings.n, len(train))
            images |= {int(i) for i in torch.randperm(len(train), generator=torch.Generator().manual_seed(settings.seed))[:n_train]}
        for spec in step.specs:
            training[spec] |= images
    return {spec: settings.n for spec in specs}, {spec: sorted(found) for spec, found in training.items()}, settings


def floor_seconds(threads: int, training: dict[str, list[int]], settings) -> tuple[float, float]:
    """Forward-only seconds of every model over the study's test images once, and over its probe training images once."""
    import torch

    from seelike.data import BatchIterator, iterate_batches, load_dataset
    from seelike.models import load_model

    torch.set_num_threads(threads)
    test = list(iterate_batches(load_dataset(settings.data, split=settings.split), settings.batch_size, n=settings.n,
                                shuffle=True, seed=settings.seed))
    train_set = load_dataset(settings.data, split="train")
    forward = probes = 0.0
    for spec, indices in training.items():
        model = load_model(spec)
        for batches, is_test in ((test, True), (_batches_of(BatchIterator, train_set, indices, settings.batch_size), False)):
            started = time.perf_counter()
            with torch.inference_mode():
                for images, _, _ in batches:
                    model.module(model.preprocess(images))
            seconds = time.perf_counter() - started
            forward, probes = (forward + seconds, probes) if is_test else (forward, probes + seconds)
    return forward, probes


def _batches_of(batch_iterator, dataset, indices: list[int], batch_size: int) -> list:
    import torch

    if not indices:
        return []
    order = torch.tensor(indices)
    sizes = [min(batch_size, len(order) - start) for start in range(0, len(order), batch_size)]
    return list(batch_iterator(dataset, order, sizes))


def count_table(test: dict[str, int], training: dict[str, list[int]], old: dict, new: dict) -> str:
    """Markdown: images forwarded per model, old and new, beside what the methods need at least."""
    lines = ["| model | needed: test + probe training | old study | new study | new / needed |", "|---|---|---|---|---|"]
    for spec in sorted(set(test) | set(old["images"]) | set(new["images"])):
        needed = test.get(spec, 0) + len(training.get(spec, []))
        was, now = old["images"].get(spec, 0), new["images"].get(spec, 0)
        lines.append(f"| {spec} | {test.get(spec, 0)} + {len(training.get(spec, []))} = {needed} | {was} | {now} | "
                     f"{now / needed:.2f} |" if needed else f"| {spec} | 0 | {was} | {now} | |")
    total_needed = sum(test.get(spec, 0) + len(training.get(spec, [])) for spec in test)
    total_old, total_new = sum(old["images"].values()), sum(new["images"].values())
    lines.append(f"| all models | {total_needed} | {total_old} | {total_new} | {total_new / total_needed:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="src/ of the checkout to compare with")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="timing rounds (floor, old, new in turn); the medians are reported")
    parser.add_argument("--count-only", action="store_true", help="only the images forwarded per model (no floor, no timing table)")
    parser.add_argument("--n", type=int, help="study images (default: the zoo preset's)")
    parser.add_argument("--batch-size", type=int, help="study batch size (default: the zoo preset's)")
    args = parser.parse_args()
    options = [*(["--n", str(args.n)] if args.n else []), *(["--batch-size", str(args.batch_size)] if args.batch_size else [])]
    test, training, settings = needed_images(args.n, args.batch_size)
    rounds = []
    for _ in range(1 if args.count_only else args.rounds):
        forward, probes = (0.0, 0.0) if args.count_only else floor_seconds(args.threads, training, settings)
        old = run_study(args.old, args.threads, options)
        new = run_study(ROOT / "src", args.threads, options)
        rounds.append((forward, probes, old, new))
    print(f"images forwarded per model (n={settings.n}, batch {settings.batch_size}; ERF backward passes not counted):\n")
    print(count_table(test, training, rounds[0][2], rounds[0][3]))
    if args.count_only:
        return
    import statistics

    def median(values: list[float]) -> float:
        return statistics.median(values)

    erf = [next((s for name, s in new["steps"].items() if "receptive" in name), 0.0) or 0.0 for _, _, _, new in rounds]
    floor = median([forward + e for (forward, _, _, _), e in zip(rounds, erf)])
    with_probes = median([forward + probes + e for (forward, probes, _, _), e in zip(rounds, erf)])
    old_seconds, new_seconds = median([old["seconds"] for *_, old, _ in rounds]), median([new["seconds"] for *_, new in rounds])
    print(f"\nwall time ({args.threads} threads, {len(rounds)} round(s) of floor, old, new in turn; medians):\n")
    print("| | wall time | / floor | / floor + probe training |")
    print("|---|---|---|---|")
    print(f"| floor: every model once over n + ERF step | {floor:.0f} s | 1.00 | |")
    print(f"| floor + probe training images once | {with_probes:.0f} s | {with_probes / floor:.2f} | 1.00 |")
    for label, seconds in (("study before (--old)", old_seconds), ("study now", new_seconds)):
        print(f"| {label} | {seconds:.0f} s | {seconds / floor:.2f} | {seconds / with_probes:.2f} |")
    print(f"\nnow / before: {new_seconds / old_seconds:.2f}")
    print("step seconds, now:", json.dumps(rounds[-1][3]["steps"]))


if __name__ == "__main__":
    main()
