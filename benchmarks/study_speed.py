"""How many images `seelike study` forwards per model, and its wall time against its floor (issue 13, item 8).

Usage, from the repository root, with nothing else running:

    python benchmarks/study_speed.py --old PATH/TO/OLD/src [--threads 2]

In one run it measures, in this order: the floor (every model the study loads forwarded once over the
study's n images, under inference mode, no hooks); the study of the checkout at ``--old`` (e.g. a
worktree of the commit before the accumulator contract); the study of this checkout. Each study runs in
a subprocess with a forward hook on every model it loads that counts the images forwarded in batches
(1-image probe passes that read shapes are not counted), into a fresh output folder (nothing cached).
The floor adds the ERF step's own time (its backward passes are part of the method, not overhead).
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
    app(["study", "--out", sys.argv[2]], standalone_mode=False)
except SystemExit:
    pass
seconds = time.perf_counter() - started
document = json.load(open(f"{sys.argv[2]}/results.json"))
steps = {name: step.get("seconds") for name, step in document["steps"].items()}
print("RESULT " + json.dumps({"seconds": seconds, "images": counts, "steps": steps}))
"""


def run_study(src: Path, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        script = Path(out) / "child.py"
        script.write_text(CHILD)
        finished = subprocess.run([sys.executable, str(script), str(src), f"{out}/study", str(threads)], capture_output=True,
                                  text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    line = next((line for line in finished.stdout.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"study of {src} failed:\n{finished.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def floor_seconds(threads: int) -> tuple[float, dict[str, int]]:
    """Every model of the default study forwarded once over the study's images (no hooks, inference mode)."""
    sys.path.insert(0, str(ROOT / "src"))
    import torch

    from seelike.data import iterate_batches, load_dataset
    from seelike.models import load_model
    from seelike.study.presets import PRESET_MODELS, PRESET_SETTINGS, build_steps

    torch.set_num_threads(threads)
    settings = PRESET_SETTINGS["zoo"]
    steps = build_steps(dict(PRESET_MODELS["zoo"]))
    specs = list(dict.fromkeys(spec for step in steps for spec in step.specs))
    dataset = load_dataset(settings.data, split=settings.split)
    batches = list(iterate_batches(dataset, settings.batch_size, n=settings.n, shuffle=True, seed=settings.seed))
    seconds = 0.0
    for spec in specs:
        model = load_model(spec)
        started = time.perf_counter()
        with torch.inference_mode():
            for images, _, _ in batches:
                model.module(model.preprocess(images))
        seconds += time.perf_counter() - started
    return seconds, {spec: settings.n for spec in specs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="src/ of the checkout to compare with")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    forward, floor_images = floor_seconds(args.threads)
    old = run_study(args.old, args.threads)
    new = run_study(ROOT / "src", args.threads)
    erf = next((seconds for name, seconds in new["steps"].items() if "erf" in str(name) or "receptive" in str(name)), 0.0) or 0.0
    floor = forward + erf
    print("| | images forwarded per model (max / min) | wall time | / floor |")
    print("|---|---|---|---|")
    print(f"| floor: every model once over n + ERF step | {max(floor_images.values())} | {floor:.0f} s | 1.00 |")
    for label, run in (("study before (--old)", old), ("study now", new)):
        counts = [count for count in run["images"].values() if count]
        print(f"| {label} | {max(counts)} / {min(counts)} | {run['seconds']:.0f} s | {run['seconds'] / floor:.2f} |")
    print(f"\nnow / before: {new['seconds'] / old['seconds']:.2f}; forward-only {forward:.0f} s + ERF step {erf:.0f} s")
    print("images per model, now:", json.dumps(new["images"]))
    print("images per model, before:", json.dumps(old["images"]))


if __name__ == "__main__":
    main()
