"""Speed and memory benchmark of seelike's minibatch CKA against the forward pass and two published packages.

Run from the project root (see benchmarks/README.md for the set-up of the peers' venv):

    .bench-venv/bin/python benchmarks/cka_speed.py            # full run, writes benchmarks/results.md
    .bench-venv/bin/python benchmarks/cka_speed.py --quick    # smoke run with tiny n (results-quick.md)

Cases (all CPU, float32 models, unbiased minibatch CKA, linear kernel):

1. timm vit_tiny_patch16_224 + resnet18 (random init, seed 0), all 12 ViT blocks x all 8 ResNet units,
   1,024 deterministic synthetic 224 px images in batches of 64: forward-only time (no hooks,
   inference_mode) vs seelike (capture_batches + MinibatchCKA over the same batches).
2. Peak RSS of seelike's layer_similarity in a fresh subprocess at n = 1,024 and n = 4,096.
3. The same ViT x ResNet heatmap with pytorch-cka (compute_cka) and ckatorch (cka_batch), and the
   largest |difference| of their CKA values from seelike's float64 result.
4. Three models (+ timm mixer_b16_224), all blocks: seelike in one pass vs pytorch-cka run pairwise.
5. No forward pass: 12 + 8 already-captured float32 feature matrices of 512 x 20,000 (n x p):
   seelike MinibatchCKA (one batch of 512) vs pytorch-cka cka_from_features.

Timed commands are interleaved (A, B, A, B, ...) over several rounds; times are medians, ratios the
median of the per-round ratios (each round's commands ran back to back under the same load).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import glob
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / ".bench-venv"

from seelike.analyses.layer_similarity import layer_similarity  # noqa: E402
from seelike.capture import capture_batches  # noqa: E402
from seelike.data import iterate_batches, load_dataset  # noqa: E402
from seelike.models import Model, load_model  # noqa: E402
from seelike.similarity import MinibatchCKA  # noqa: E402

VIT, RESNET, MIXER = "timm:vit_tiny_patch16_224", "timm:resnet18", "timm:mixer_b16_224"


# ------------------------------------------------------------------------------------------ peers


def import_peers() -> tuple[object | None, object | None, str]:
    """pytorch-cka (module ``cka``) and ckatorch, from this interpreter or else from .bench-venv."""
    note = ""
    try:
        import cka as pytorch_cka  # noqa: F401
        import ckatorch  # noqa: F401
    except ImportError:
        extra = sorted(glob.glob(str(BENCH_VENV / "lib" / "python*" / "site-packages")))
        if extra:
            sys.path.append(extra[-1])  # after seelike's own site-packages: torch stays this venv's
            note = f"peers imported from {extra[-1]}"
    modules = []
    for name in ("cka", "ckatorch"):
        try:
            modules.append(__import__(name))
        except ImportError:
            modules.append(None)
    return modules[0], modules[1], note


class Batches:
    """An iterable of image batches with a len(), but not a list: pytorch-cka's compute_cka treats a
    list argument as a list of data loaders."""

    def __init__(self, images: list[Tensor]) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.images)


class Preprocessed(nn.Module):
    """model.preprocess then model.module, so the peers see exactly the input seelike's Capture feeds.

    Layer names get the prefix ``net.`` (``net.blocks.3``)."""

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.net = model.module
        self.preprocessing = model.preprocessing

    def forward(self, images: Tensor) -> Tensor:
        return self.net(self.preprocessing(images))


# ------------------------------------------------------------------------------------------ helpers


@contextlib.contextmanager
def threads(count: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def timed(function: Callable[[], object]) -> tuple[float, object]:
    gc.collect()
    start = time.perf_counter()
    value = function()
    return time.perf_counter() - start, value


def make_batches(n: int, batch_size: int) -> list[tuple[Tensor, Tensor, Tensor]]:
    """The first n deterministic synthetic 224 px RGB images, in batches (generated once, before timing)."""
    dataset = load_dataset(f"synthetic:n={n},size=224,channels=3")
    with threads(1):  # per-image small ops: one thread is ~20x faster than two on a loaded 2-core machine
        batches = list(iterate_batches(dataset, batch_size, n=n))
    sizes = {len(images) for images, _, _ in batches}
    if len(sizes) != 1:
        raise SystemExit(f"n={n} must be a multiple of the batch size {batch_size} (ckatorch stacks equal batches)")
    return batches


def interleave(commands: dict[str, Callable[[], object]], rounds: int, label: str) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run every command once per round, rotating the order each round; return times and last values."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    values: dict[str, object] = {}
    names = list(commands)
    for round_index in range(rounds):
        order = names[round_index % len(names):] + names[: round_index % len(names)]
        for name in order:
            seconds, values[name] = timed(commands[name])
            times[name].append(seconds)
            print(f"  [{label}] round {round_index + 1}/{rounds} {name}: {seconds:.2f} s", flush=True)
    return times, values


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median over rounds of numerator/denominator (both measured in the same round)."""
    return median([a / b for a, b in zip(numerator, denominator)])


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def reset_hwm() -> bool:
    """Reset the peak RSS (VmHWM) to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ case 1 and 3


def forward_only(models: list[Model], batches: list[tuple[Tensor, Tensor, Tensor]]) -> None:
    with torch.inference_mode():
        for images, _, _ in batches:
            for model in models:
                model.module(model.preprocess(images))


def forward_and_seelike(models: list[Model], copies: list[nn.Module], batches: list[tuple[Tensor, Tensor, Tensor]]):
    """Case 1, interleaved batch by batch: forward-only of batch i (on hook-free copies of the modules, same
    weights) and seelike's capture + MinibatchCKA.update of batch i, alternating which goes first. Returns
    (forward seconds, seelike seconds, seelike result); seelike's time includes result() and hook removal."""
    layers = [model.select("blocks") for model in models]
    accumulator = MinibatchCKA()
    stream = capture_batches(models, layers, iter(batches), progress=False)
    forward_seconds = seelike_seconds = 0.0
    gc.collect()
    for index, (images, _, _) in enumerate(batches):
        for step in ((0, 1) if index % 2 == 0 else (1, 0)):
            start = time.perf_counter()
            if step == 0:
                with torch.inference_mode():
                    for model, module in zip(models, copies):
                        module(model.preprocess(images))
                forward_seconds += time.perf_counter() - start
            else:
                activations, _, _ = next(stream)
                accumulator.update(activations)
                del activations
                seelike_seconds += time.perf_counter() - start
    start = time.perf_counter()
    for _ in stream:  # exhausts the generator: removes the hooks
        pass
    result = accumulator.result()
    seelike_seconds += time.perf_counter() - start
    return forward_seconds, seelike_seconds, result


def seelike_heatmap(models: list[Model], batches: list[tuple[Tensor, Tensor, Tensor]]):
    layers = [model.select("blocks") for model in models]
    accumulator = MinibatchCKA()
    for activations, _, _ in capture_batches(models, layers, batches, progress=False):
        accumulator.update(activations)
    return accumulator.result()


def pytorch_cka_pair(pytorch_cka, a: Model, b: Model, images: list[Tensor]) -> np.ndarray:
    layers_a = [f"net.{layer.module}" for layer in a.select("blocks")]
    layers_b = [f"net.{layer.module}" for layer in b.select("blocks")]
    (matrix,) = pytorch_cka.compute_cka(
        Preprocessed(a), Preprocessed(b), Batches(images),
        layers=layers_a, model2_layers=layers_b, device="cpu", progress=False,
    )
    return matrix.double().numpy()


def ckatorch_pair(ckatorch, a: Model, b: Model, images: list[Tensor]) -> np.ndarray:
    """ckatorch's minibatch CKA (cka_batch, Nguyen et al.) of every layer pair.

    cka_batch takes each layer's features of all k batches stacked as [k, batch, p]: features are read with
    plain forward hooks into such buffers during one forward pass per model and batch, then cka_batch runs
    once per layer pair. (ckatorch's CKA class cannot draw this heatmap: it feeds raw layer outputs to
    cka_batch, which reads a ViT output [B, tokens, C] as B separate Grams over tokens and fails on 4-D CNN
    outputs, and it keeps only the last batch's value of each pair.)
    """
    k, batch = len(images), len(images[0])
    features = []
    for model in (a, b):
        modules = dict(model.module.named_modules())
        layers = [layer.module for layer in model.select("blocks")]
        buffers: dict[str, Tensor] = {}
        position = {"batch": 0}

        def hook_for(name: str, buffers: dict[str, Tensor] = buffers, position: dict[str, int] = position):
            def hook(module: nn.Module, inputs: object, output: Tensor) -> None:
                flat = output.detach().reshape(batch, -1)
                if name not in buffers:
                    buffers[name] = torch.empty(k, batch, flat.shape[1])
                buffers[name][position["batch"]] = flat

            return hook

        handles = [modules[name].register_forward_hook(hook_for(name)) for name in layers]
        try:
            with torch.inference_mode():
                for index, images_batch in enumerate(images):
                    position["batch"] = index
                    model.module(model.preprocess(images_batch))
        finally:
            for handle in handles:
                handle.remove()
        features.append([buffers[name] for name in layers])
    rows, columns = features
    matrix = np.empty((len(rows), len(columns)))
    with torch.no_grad():
        for i, x in enumerate(rows):
            for j, y in enumerate(columns):
                matrix[i, j] = float(ckatorch.cka_batch(x, y))
    return matrix


# ------------------------------------------------------------------------------------------ case 2


def memory_child(n: int, batch_size: int) -> None:
    """In a fresh process: RSS before the run and peak RSS during layer_similarity on n images."""
    torch.set_num_threads(1)  # memory does not depend on it; synthetic images generate ~20x faster
    models = [load_model(VIT), load_model(RESNET)]
    dataset = load_dataset(f"synthetic:n={n},size=224,channels=3")
    gc.collect()
    before = rss_bytes()
    reset = reset_hwm()
    start = time.perf_counter()
    result = layer_similarity(models, dataset, n=n, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    peak = hwm_bytes()
    print(json.dumps({
        "n": n, "batch_size": batch_size, "rss_before": before, "peak": peak, "hwm_reset": reset,
        "ru_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "seconds": seconds, "layers": len(result.names),
    }))


def measure_memory(n: int, batch_size: int) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(n), "--batch-size", str(batch_size)]
    print(f"  [memory] n={n}: {' '.join(command[1:])}", flush=True)
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"memory child for n={n} failed:\n{done.stderr[-4000:]}")
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  [memory] n={n}: peak {report['peak'] / 2**30:.2f} GiB, before {report['rss_before'] / 2**30:.2f} GiB, "
          f"{report['seconds']:.0f} s", flush=True)
    return report


# ------------------------------------------------------------------------------------------ table


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, case: str, figure: str, value: str, target: str = "", status: str = "") -> None:
        self.rows.append((case, figure, value, target, status))

    def check(self, case: str, figure: str, value: float, fmt: str, target_text: str, passed: bool) -> None:
        self.add(case, figure, fmt.format(value), target_text, "PASS" if passed else "MISS")

    def markdown(self) -> str:
        lines = ["| case | figure | value | target | status |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {' | '.join(row)} |" for row in self.rows]
        return "\n".join(lines)


def seconds_text(values: list[float]) -> str:
    return f"{median(values):.1f} s (runs: {', '.join(f'{v:.1f}' for v in values)})"


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny n: a smoke run of every case")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of interleaved runs (default 3; quick 2)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--n", type=int, default=None, help="images for cases 1 and 3 (default 1024)")
    parser.add_argument("--n-three", type=int, default=None, help="images for case 4 (default 128)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--skip", default="", help="comma-separated cases to skip, e.g. 2,4")
    parser.add_argument("--out", type=Path, default=None, help="markdown output (default benchmarks/results.md)")
    parser.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.memory_child is not None:
        memory_child(args.memory_child, args.batch_size)
        return

    quick = args.quick
    rounds = args.rounds or (2 if quick else 3)
    n = args.n or (128 if quick else 1024)
    n_three = args.n_three or (64 if quick else 128)
    memory_ns = (128, 512) if quick else (1024, 4096)
    features_n, features_p = (128, 2000) if quick else (512, 20000)
    batch_size = args.batch_size
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    out = args.out or (Path(tempfile.gettempdir()) / "seelike-cka-speed-quick.md" if quick else ROOT / "benchmarks" / "results.md")
    if args.threads:
        torch.set_num_threads(args.threads)
    pytorch_cka, ckatorch, peer_note = import_peers()

    load = os.getloadavg()
    started = time.time()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, load average {load[0]:.2f}")
    table = Table()

    models = [load_model(VIT), load_model(RESNET)]
    vit, resnet = models
    print(f"generating {n} synthetic images ...", flush=True)
    batches = make_batches(n, batch_size)
    images = [images for images, _, _ in batches]

    # warm-up: one batch through every path (allocator, oneDNN primitives, lazy imports)
    forward_only(models, batches[:1])
    seelike_heatmap(models, batches[:1])
    if pytorch_cka is not None:
        pytorch_cka_pair(pytorch_cka, vit, resnet, images[:1])

    # ---- cases 1 and 3 -----------------------------------------------------------------------------------
    if not {"1", "3"} <= skip:
        copies = [copy.deepcopy(model.module) for model in models]  # forward-only runs while seelike's hooks are on
        pair_times: dict[str, list[float]] = {"forward": [], "seelike": []}

        def case_one():
            forward_seconds, seelike_seconds, result = forward_and_seelike(models, copies, batches)
            pair_times["forward"].append(forward_seconds)
            pair_times["seelike"].append(seelike_seconds)
            print(f"    forward {forward_seconds:.2f} s, seelike {seelike_seconds:.2f} s", flush=True)
            return result

        commands: dict[str, Callable[[], object]] = {"forward + seelike, batch-interleaved": case_one}
        if "3" not in skip and pytorch_cka is not None:
            commands["pytorch-cka"] = lambda: pytorch_cka_pair(pytorch_cka, vit, resnet, images)
        if "3" not in skip and ckatorch is not None:
            commands["ckatorch"] = lambda: ckatorch_pair(ckatorch, vit, resnet, images)
        print(f"cases 1 and 3: {n} images, batch {batch_size}, {rounds} rounds of {list(commands)}", flush=True)
        times, values = interleave(commands, rounds, "case 1/3")
        times.update(pair_times)
        result = values["forward + seelike, batch-interleaved"]
        cross, _, _ = result.block(vit.name, resnet.name)
        case = "1 ViT-Ti + R18"
        table.add(case, f"forward only, both models ({n} images, batch {batch_size})", seconds_text(times["forward"]))
        table.add(case, "seelike: capture + MinibatchCKA, 20 layers (20×20 heatmap)", seconds_text(times["seelike"]))
        ratio = paired_ratio(times["seelike"], times["forward"])
        table.check(case, "seelike / forward only", ratio, "{:.3f}", "≤ 1.05", ratio <= 1.05)
        clipped = np.clip(cross, 0.0, 1.0)
        table.add(case, "seelike ViT×ResNet CKA: min, max (float64)", f"{cross.min():.4f}, {cross.max():.4f}", "", "info")
        for peer in ("pytorch-cka", "ckatorch"):
            if peer not in times:
                table.add("3 peers", f"{peer}", "not installed (see README)")
                continue
            table.add("3 peers", f"{peer}: ViT×ResNet heatmap (12×8)", seconds_text(times[peer]))
            peer_ratio = paired_ratio(times[peer], times["seelike"])
            table.add("3 peers", f"{peer} time / seelike time", f"{peer_ratio:.2f}×", "", "info")
            difference = float(np.max(np.abs(values[peer] - cross)))
            table.add("3 peers", f"max abs(CKA {peer} − seelike float64)", f"{difference:.2e}", "", "info")
            if peer == "pytorch-cka":
                difference = float(np.max(np.abs(values[peer] - clipped)))
                table.add("3 peers", "max abs(CKA pytorch-cka − seelike clipped to [0, 1] as pytorch-cka clips)",
                          f"{difference:.2e}", "", "info")

    # ---- case 4 ------------------------------------------------------------------------------------------
    if "4" not in skip and pytorch_cka is not None:
        mixer = load_model(MIXER)
        three = [vit, resnet, mixer]
        batches_three = batches[: max(1, n_three // batch_size)] if n_three <= n else make_batches(n_three, batch_size)
        images_three = [images for images, _, _ in batches_three]
        seelike_heatmap(three, batches_three[:1])  # warm-up of the mixer
        pairs = [(vit, resnet), (vit, mixer), (resnet, mixer)]
        commands = {
            "seelike, 3 models, one pass": lambda: seelike_heatmap(three, batches_three),
            "pytorch-cka, 3 pairs": lambda: [pytorch_cka_pair(pytorch_cka, a, b, images_three) for a, b in pairs],
        }
        count = sum(len(images) for images in images_three)
        print(f"case 4: {count} images, {rounds} rounds", flush=True)
        times, values = interleave(commands, rounds, "case 4")
        case = "4 + Mixer-B/16"
        table.add(case, f"seelike, 3 models in one pass ({count} images, 36 layers)", seconds_text(times["seelike, 3 models, one pass"]))
        table.add(case, "pytorch-cka, run pairwise (3 pairs)", seconds_text(times["pytorch-cka, 3 pairs"]))
        speedup = paired_ratio(times["pytorch-cka, 3 pairs"], times["seelike, 3 models, one pass"])
        table.check(case, "seelike speed-up over pytorch-cka pairwise", speedup, "{:.2f}×", "≥ 1.8×", speedup >= 1.8)
        result = values["seelike, 3 models, one pass"]
        difference = max(
            float(np.max(np.abs(peer - result.block(a.name, b.name)[0])))
            for peer, (a, b) in zip(values["pytorch-cka, 3 pairs"], pairs)
        )
        table.add(case, "max abs(CKA pytorch-cka − seelike float64), 3 cross blocks", f"{difference:.2e}", "", "info")
        del mixer, three, batches_three, images_three
        gc.collect()

    # ---- case 5 ------------------------------------------------------------------------------------------
    if "5" not in skip and pytorch_cka is not None:
        generator = torch.Generator().manual_seed(0)
        X = torch.randn(12, features_n, features_p, generator=generator)
        Y = torch.randn(8, features_n, features_p, generator=generator)
        Y[:, :, : features_p // 2] += X[:8, :, : features_p // 2]  # some shared signal, so CKA is not ~0 everywhere

        def seelike_features():
            accumulator = MinibatchCKA()
            representations = {f"x/{i}": X[i] for i in range(len(X))}
            representations.update({f"y/{j}": Y[j] for j in range(len(Y))})
            accumulator.update(representations)  # one batch of features_n: the full-batch unbiased estimate
            return accumulator.result()

        everything = [*X, *Y]  # a sequence of 2-D tensors: cka_from_features accepts it without a copy
        seelike_features()
        pytorch_cka.cka_from_features(X[:1], Y[:1])
        commands = {
            "seelike": seelike_features,
            "pytorch-cka 20x20": lambda: pytorch_cka.cka_from_features(everything, everything),
            "pytorch-cka 12x8": lambda: pytorch_cka.cka_from_features(X, Y),
        }
        print(f"case 5: 20 feature matrices {features_n}×{features_p}, {2 * rounds + 1} rounds", flush=True)
        times, values = interleave(commands, 2 * rounds + 1, "case 5")
        case = "5 features only"
        table.add(case, f"seelike MinibatchCKA, 20 layers of {features_n}×{features_p} (one batch of {features_n}, 20×20)", seconds_text(times["seelike"]))
        table.add(case, "pytorch-cka cka_from_features(all 20, all 20): the same 20×20 heatmap, full batch", seconds_text(times["pytorch-cka 20x20"]))
        speedup = paired_ratio(times["pytorch-cka 20x20"], times["seelike"])
        table.check(case, "seelike speed-up over pytorch-cka, 20×20 heatmap", speedup, "{:.2f}×", "≥ 1.5×", speedup >= 1.5)
        table.add(case, "pytorch-cka cka_from_features(X, Y): cross block 12×8 only, full batch", seconds_text(times["pytorch-cka 12x8"]))
        speedup = paired_ratio(times["pytorch-cka 12x8"], times["seelike"])
        table.add(case, "seelike (20×20) speed-up over pytorch-cka cross block only (12×8)", f"{speedup:.2f}×", "(≥ 1.5×)",
                  "PASS" if speedup >= 1.5 else "MISS")
        full = values["pytorch-cka 20x20"].double().numpy()
        within = np.clip(values["seelike"].matrix, 0.0, 1.0)
        table.add(case, "max abs(CKA pytorch-cka 20×20 − seelike clipped to [0, 1])", f"{np.max(np.abs(full - within)):.2e}", "", "info")
        cross, _, _ = values["seelike"].block("x", "y")
        peer = values["pytorch-cka 12x8"].double().numpy()
        table.add(case, "seelike x×y CKA: min, max (float64)", f"{cross.min():.4f}, {cross.max():.4f}", "", "info")
        table.add(case, "max abs(CKA pytorch-cka − seelike float64)", f"{np.max(np.abs(peer - cross)):.2e}", "", "info")
        clipped = np.clip(cross, 0.0, 1.0)
        table.add(case, "max abs(CKA pytorch-cka − seelike clipped to [0, 1])", f"{np.max(np.abs(peer - clipped)):.2e}", "", "info")
        peer64 = pytorch_cka.cka_from_features(X.double(), Y.double()).numpy()  # once, untimed: its float32 rounding?
        table.add(case, "max abs(CKA pytorch-cka on float64 copies − seelike clipped)", f"{np.max(np.abs(peer64 - clipped)):.2e}", "", "info")
        del X, Y, values
        gc.collect()

    # ---- case 2 (own processes, after the timings so they do not disturb them) ----------------------------
    if "2" not in skip:
        small, large = (measure_memory(count, batch_size) for count in memory_ns)
        case = "2 memory"
        for report in (small, large):
            table.add(case, f"peak RSS, layer_similarity, n={report['n']} (RSS before run)",
                      f"{report['peak'] / 2**30:.2f} GiB ({report['rss_before'] / 2**30:.2f} GiB)")
        growth_small, growth_large = (r["peak"] - r["rss_before"] for r in (small, large))
        ratio = large["peak"] / small["peak"]
        table.check(case, f"peak RSS n={large['n']} / n={small['n']}", ratio, "{:.3f}", "≤ 1.10", ratio <= 1.10)
        table.add(case, f"RSS growth during the run, n={small['n']} → n={large['n']}",
                  f"{growth_small / 2**20:.0f} MiB → {growth_large / 2**20:.0f} MiB", "", "info")

    elapsed = time.time() - started
    load_after = os.getloadavg()
    header = [
        f"# seelike CKA speed benchmark{' (quick smoke run)' if quick else ''}",
        "",
        f"`{' '.join([Path(sys.executable).name, *sys.argv])}` — {time.strftime('%Y-%m-%d %H:%M')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), {rounds} interleaved rounds, {elapsed / 60:.0f} min; "
        f"load average {load[0]:.2f} at start, {load_after[0]:.2f} at end.",
        "Times are medians over rounds; ratios are medians of the per-round ratios.",
    ]
    if peer_note:
        header.append(peer_note + ".")
    text = "\n".join(header) + "\n\n" + table.markdown() + "\n"
    print("\n" + text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
