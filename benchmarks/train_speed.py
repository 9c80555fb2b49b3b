"""Training throughput of the zoo's architectures on CPU under the speed-ups issue 5 asks to try.

Run from the project root (seelike's own venv is enough):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/train_speed.py --threads 1      # writes benchmarks/train_speed.md

For each zoo architecture (vit-cls, resnet, mixer recipes) and each variant it times full training steps
(forward, cross-entropy, backward, AdamW step) on batches of the recipe's size of 28 x 28 images:

* ``fp32``           eager float32, the plain trainer;
* ``bf16``           ``torch.autocast("cpu", bfloat16)`` around the forward pass (``TrainConfig.bf16``);
* ``channels_last``  model and images in channels-last memory format (convolutional models only);
* ``compile``        ``torch.compile`` (inductor) of the module; its compile time is reported apart;
* ``a+b``            both.

Variants run interleaved per round (A, B, C, ...; then B, C, ..., A) so a busy machine slows each
alike; the figure is the median images/s over rounds.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from seelike.models import build_module
from seelike.models.zoo import RECIPES

ARCHITECTURES = ("vit-cls", "resnet", "mixer")
VARIANTS = ("fp32", "bf16", "channels_last", "bf16+channels_last", "compile", "bf16+compile")


def make_step(module: nn.Module, variant: str, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    """One optimizer step of ``module`` (a fresh copy per variant) as the trainer takes it."""
    flags = set(variant.split("+"))
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3)
    if "channels_last" in flags:
        module, images = module.to(memory_format=torch.channels_last), images.contiguous(memory_format=torch.channels_last)
    forward = torch.compile(module) if "compile" in flags else module

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in flags):
            logits = forward(images)
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(step: Callable[[], None], steps: int) -> float:
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--steps", type=int, default=8, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--models", default=",".join(ARCHITECTURES))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/train_speed.md"))
    parser.add_argument("--note", default="", help="what else ran on the machine, written under the table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for name in args.models.split(","):
        config = RECIPES[name][0]
        torch.manual_seed(0)
        base = build_module(config.arch, config.model).train()
        images = torch.randn(config.batch_size, 1, 28, 28)
        labels = torch.randint(0, 10, (config.batch_size,))
        variants = [v for v in VARIANTS if "channels_last" not in v or config.arch == "resnet"]
        steps, compile_seconds = {}, {}
        for variant in variants:
            steps[variant] = make_step(copy.deepcopy(base), variant, images.clone(), labels)
            started = time.perf_counter()
            steps[variant]()  # warm-up; for compile, the compilation
            compile_seconds[variant] = time.perf_counter() - started
        rates: dict[str, list[float]] = {v: [] for v in variants}
        for round_index in range(args.rounds):
            order = variants[round_index % len(variants):] + variants[: round_index % len(variants)]
            for variant in order:
                rates[variant].append(args.steps * config.batch_size / measure(steps[variant], args.steps))
        for variant in variants:
            rate = statistics.median(rates[variant])
            rows.append((name, variant, rate, rate / statistics.median(rates["fp32"]), compile_seconds[variant]))
            print(f"{name:8s} {variant:14s} {rate:7.0f} img/s  x{rows[-1][3]:.2f}  first step {compile_seconds[variant]:.1f} s", flush=True)
    lines = [
        "# Training throughput on CPU (benchmarks/train_speed.py)",
        "",
        f"`{' '.join(['OMP_NUM_THREADS=1', '.venv/bin/python', 'benchmarks/train_speed.py', *(['--threads', str(args.threads)] if args.threads else [])])}` "
        f"— {time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, {platform.machine()}, {torch.get_num_threads()} thread(s), "
        f"batch of the recipe, {args.steps} steps x {args.rounds} interleaved rounds, median.",
        "",
        "| model | variant | images/s | vs fp32 | first step (s) |",
        "|---|---|---|---|---|",
        *(f"| {n} | {v} | {r:.0f} | {x:.2f}x | {c:.1f} |" for n, v, r, x, c in rows),
        "",
        *([args.note, ""] if args.note else []),
    ]
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
