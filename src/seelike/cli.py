"""The ``seelike`` command line (typer). Side effects live here: files, progress, printing."""

from __future__ import annotations

import atexit
import contextvars
import dataclasses
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer
from rich.markup import escape
from typer.core import TyperGroup

from seelike.console import console, fitted_table, one_line_messages
from seelike.errors import InvalidInputError, OutputError, SeelikeError

#: ``seelike --help`` lists the commands in this order (analyses, the whole paper, models); others follow
COMMAND_ORDER = ("cka", "attention", "heads", "skips", "localize", "probe", "erf", "datascale",
                 "study", "demo", "layers", "zoo", "train", "export")


class SeelikeGroup(TyperGroup):
    """Runs a command so that any :class:`SeelikeError` ends it with its one-line message (exit 2), never a
    traceback, and finishes the output folders it prepared (see :func:`_prepare_out`) only when it succeeded."""

    def list_commands(self, ctx: Any) -> list[str]:
        names = super().list_commands(ctx)
        return sorted(names, key=lambda name: COMMAND_ORDER.index(name) if name in COMMAND_ORDER else len(COMMAND_ORDER))

    def invoke(self, ctx: Any) -> Any:
        folders: list[_OutputFolder] = []
        token = _OUTPUT_FOLDERS.set(folders)
        try:
            result = super().invoke(ctx)
            for folder in folders:
                folder.finish()
            return result
        except SeelikeError as error:
            _fail(error)
        finally:
            _OUTPUT_FOLDERS.reset(token)
            for folder in folders:
                folder.release()


app = typer.Typer(cls=SeelikeGroup, help="Do vision models see alike? The analyses of Raghu et al. (2021) for any vision model.",
                  no_args_is_help=True)
zoo_app = typer.Typer(help="seelike's shipped small models: list, verify, train.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")

DataOption = Annotated[str, typer.Option("--data", help="fashion-mnist | cifar10 | imagefolder:PATH | synthetic[:n=...,size=...,channels=...]")]
SplitOption = Annotated[str, typer.Option(help="the split of --data the images come from: test | train")]
BatchSizeOption = Annotated[int, typer.Option(help="images per forward pass (more: faster, more memory)")]
SeedOption = Annotated[int, typer.Option(help="seed of the class-balanced image subset and its order (same seed, same images)")]
DeviceOption = Annotated[str, typer.Option(help="cpu | cuda | cuda:N")]
ImagesOption = Annotated[Optional[int], typer.Option("--n", "--images", help="images (default: the whole split)")]
OutOption = Annotated[Path, typer.Option("--out", help="output folder (a rerun replaces what the last run wrote there)")]
SkipBadImagesOption = Annotated[bool, typer.Option("--skip-bad-images", help="drop unreadable image files (listed in the result) "
                                                   "instead of stopping at the first")]
#: the output folders the running command prepared (set by SeelikeGroup.invoke): finished on success, always released
_OUTPUT_FOLDERS: contextvars.ContextVar[list | None] = contextvars.ContextVar("seelike_output_folders", default=None)
OUTPUTS_RECORD = ".seelike-outputs.json"  # what the last run wrote into a folder, so a rerun can clear it
LOCK_FILE = ".seelike.lock"
MIN_FREE_BYTES = 16 << 20


def _fail(error: SeelikeError) -> None:
    console.print(f"[red]error:[/red] {escape(str(error))}", markup=True)
    raise typer.Exit(2)


class _OutputFolder:
    """An output folder checked and locked before the work starts (see :func:`_prepare_out`)."""

    def __init__(self, path: Path, clean: bool) -> None:
        self.path, self.clean, self.lock = path, clean, None
        if path.exists() and not path.is_dir():
            raise OutputError(f"--out {path} is a file, not a folder; choose a folder")
        try:
            path.mkdir(parents=True, exist_ok=True)
            self.lock = open(path / LOCK_FILE, "a+")  # noqa: SIM115 (held until release)
        except OSError as error:
            raise OutputError(f"cannot write into --out {path}: {error.strerror or error}; choose another folder") from None
        try:
            import fcntl

            fcntl.flock(self.lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # not POSIX: no lock, the content hash of each result still catches a mix
            pass
        except OSError:
            self.lock.seek(0)
            holder = self.lock.read().strip() or "unknown"
            self.lock.close()
            self.lock = None
            raise OutputError(f"another seelike run (pid {holder}) is writing into {path}; wait for it to finish or use another --out") from None
        self.lock.seek(0)
        self.lock.truncate()
        self.lock.write(str(os.getpid()))
        self.lock.flush()
        free = shutil.disk_usage(path).free
        if free < MIN_FREE_BYTES:
            self.release()
            raise OutputError(f"--out {path} has only {free >> 10} KiB free; free some space or choose another folder")
        self.before = self._snapshot()
        self.previous = self._read_record()

    def _files(self) -> Iterator[Path]:
        """The files a command writes: in the folder and one level down (``OUT/<model>/``); never a deep walk of
        whatever folder ``--out`` names."""
        for entry in self.path.iterdir():
            children = entry.iterdir() if entry.is_dir() and not entry.is_symlink() else [entry]
            yield from (child for child in children if child.is_file() and child.name not in (LOCK_FILE, OUTPUTS_RECORD))

    def _snapshot(self) -> dict[str, tuple[int, int, int]]:
        """(inode, size, mtime) of every file: a file whose entry changes during the run was written by it."""
        snapshot = {}
        for file in self._files():
            stat = file.stat()
            snapshot[str(file.relative_to(self.path))] = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        return snapshot

    def _read_record(self) -> set[str]:
        try:
            names = json.loads((self.path / OUTPUTS_RECORD).read_text())
            return {n for n in names if isinstance(n, str) and ".." not in Path(n).parts and not Path(n).is_absolute()
                    and len(Path(n).parts) <= 2}
        except (OSError, ValueError, TypeError):
            return set()

    def finish(self) -> None:
        """Record what this run wrote; with ``clean``, remove what the previous run wrote and this one did not."""
        written = {name for name, entry in self._snapshot().items() if self.before.get(name) != entry}
        if self.clean:
            for name in sorted(self.previous - written):
                stale = self.path / name
                stale.unlink(missing_ok=True)
                if stale.parent != self.path and not any(stale.parent.iterdir()):
                    stale.parent.rmdir()
        else:
            written |= {name for name in self.previous if (self.path / name).is_file()}
        from seelike.results import atomic_write_text

        try:
            atomic_write_text(self.path / OUTPUTS_RECORD, json.dumps(sorted(written), indent=1))
        except OSError as error:  # the results are written; only the next run's clean-up would miss them
            logging.getLogger(__name__).warning("could not record the outputs in %s: %s", self.path, error)

    def release(self) -> None:
        if self.lock is not None:
            (self.path / LOCK_FILE).unlink(missing_ok=True)
            self.lock.close()
            self.lock = None


def _prepare_out(out: Path, clean: bool = True) -> Path:
    """Check ``--out`` before any work (a folder we can write, not a file, with free space) and lock it against a
    second run into it. When the command succeeds, what a previous run wrote there and this one did not (figures
    of other models, say) is removed (``clean``), so the folder never mixes two runs; files seelike did not write
    are never touched.

    In a distributed run the other ranks write nowhere: an analysis command (``clean``) gets a throwaway folder
    (returned: write there), the study (which only reads its cache on those ranks) the folder itself, unlocked."""
    from seelike.distributed import is_main_process

    if not is_main_process():
        if not clean:
            return out
        scratch = Path(tempfile.mkdtemp(prefix="seelike-rank-"))
        atexit.register(shutil.rmtree, scratch, ignore_errors=True)
        return scratch
    folder = _OutputFolder(Path(out), clean)
    active = _OUTPUT_FOLDERS.get()
    if active is not None:
        active.append(folder)
    else:  # called outside a command (from Python): nothing will finish it, so hold no lock
        folder.release()
    return out


def _record_data(result: Any, *datasets: Any) -> Any:
    """The result with how its images were chosen (skipped files, held-out split) added to its metadata."""
    provenance: dict[str, Any] = {}
    for dataset in datasets:
        provenance.update(getattr(dataset, "provenance", {}))
    if not provenance:
        return result
    return dataclasses.replace(result, metadata={**result.metadata, "data_provenance": provenance})


def _load_data(data: str, split: str, skip_bad_images: bool, **kwargs: Any) -> Any:
    from seelike.data import load_dataset

    dataset = load_dataset(data, split=split, skip_bad_images=skip_bad_images, **kwargs)
    if skip_bad_images:
        dataset.provenance.setdefault("skipped_images", [])
        if dataset.provenance["skipped_images"]:
            console.print(f"[yellow]skipped {len(dataset.provenance['skipped_images'])} unreadable image(s)[/yellow] "
                          f"(listed in the result): {escape(str(dataset.provenance['skipped_images'][0]))}, ...", markup=True)
    return dataset


@app.callback()
def main(
    ctx: typer.Context,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log progress details")] = False,
    precision: Annotated[str, typer.Option(help="forward passes in fp32, or bf16 / fp16 autocast (Grams and sums stay full precision)")] = "fp32",
    workers: Annotated[int, typer.Option(help="DataLoader processes that read and decode images (image folders: try 4-8 with a GPU)")] = 0,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads for torch (default: torch's choice; on a busy machine 1 is often faster)")] = None,
) -> None:
    """Options before the command apply to every analysis: `seelike --precision bf16 --workers 8 cka ...`.
    Under `torchrun --nproc_per_node=K -m seelike ...` each process takes a share of the batches and rank 0 writes."""
    import torch

    from seelike.distributed import init_from_environment, is_main_process
    from seelike.driver import run_options

    ctx.with_resource(one_line_messages(verbose))  # warnings and log records as one line each; progress lines always
    if threads is not None:
        if threads < 1:
            _fail(InvalidInputError(f"--threads must be at least 1, got {threads}"))
        torch.set_num_threads(threads)
    try:
        ctx.with_resource(run_options(precision, workers))
        init_from_environment("cuda" if torch.cuda.is_available() else "cpu")
    except SeelikeError as error:
        _fail(error)
    if not is_main_process():
        console.quiet = True  # one voice: rank 0 prints and writes


@app.command()
def layers(
    model: Annotated[str, typer.Argument(help="model spec, e.g. zoo:vit-cls, timm:resnet18, torchvision:resnet50")],
    all_layers: Annotated[bool, typer.Option("--all", help="sub-layers too, not only blocks")] = False,
) -> None:
    """List a model's analysis layers in the order its forward pass runs them."""
    from seelike.models import load_model

    try:
        loaded = load_model(model)
    except SeelikeError as error:
        _fail(error)
    listing = fitted_table(f"{model}: {loaded.family}, {loaded.num_blocks} blocks, input {loaded.preprocessing.input_size}",
                           ("layer", "block", "role", "kind", "module"))
    for layer in loaded.layers if all_layers else loaded.block_layers():
        listing.add_row(layer.name, str(layer.block), layer.role, layer.kind, f"{layer.module} ({layer.hook})")
    console.print(listing)


class Augment(str, Enum):
    """``seelike train --augment`` choices (the trainer's augmentations)."""

    none = "none"
    flip = "flip"
    crop_flip = "crop-flip"


@app.command()
def train(
    arch: Annotated[str, typer.Argument(help="vit | resnet | mixer")],
    out: Annotated[Path, typer.Option("--out", help="run folder: checkpoints, model.safetensors, summary.json (a rerun resumes there)")],
    config: Annotated[list[str], typer.Option("--set", help="architecture setting KEY=VALUE (JSON value), repeatable")] = [],
    data: DataOption = "fashion-mnist",
    fraction: Annotated[float, typer.Option(help="class-balanced share of the training split to train on, in (0, 1]")] = 1.0,
    epochs: Annotated[int, typer.Option(help="passes over the (fraction of the) training split")] = 10,
    steps: Annotated[Optional[int], typer.Option(help="total optimizer steps, overriding --epochs (a small fraction can train as long as the full set)")] = None,
    batch_size: Annotated[int, typer.Option(help="images per optimizer step")] = 256,
    lr: Annotated[float, typer.Option(help="peak learning rate of AdamW (linear warm-up, then cosine decay to 0)")] = 2e-3,
    augment: Annotated[Augment, typer.Option(help="none, flip (horizontal flips) or crop-flip (flips and ±2 px shifts)")] = Augment.none,
    seed: Annotated[int, typer.Option(help="seed of the initial weights, the data order and the augmentation")] = 0,
    bf16: Annotated[bool, typer.Option("--bf16", help="bfloat16 autocast for the forward pass")] = False,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N; a run resumes on either")] = "cpu",
) -> None:
    """Train one of seelike's own models (resumes when OUT holds an interrupted run); one line per epoch."""
    from seelike.train import TrainConfig, Trainer

    _prepare_out(out, clean=False)
    try:
        model_config = {}
        for item in config:
            key, _, value = item.partition("=")
            try:
                model_config[key] = json.loads(value)
            except json.JSONDecodeError:
                model_config[key] = value
        train_config = TrainConfig(arch, model_config, data, fraction, epochs, steps, batch_size, lr, augment=augment.value, seed=seed, bf16=bf16)
        summary = Trainer(train_config, out, on_epoch=_print_epoch, device=device).run()
    except SeelikeError as error:
        _fail(error)
    console.print(f"test accuracy {summary['test_accuracy']:.2%} after {summary['epochs']} epochs "
                  f"({summary['images_per_second']:.0f} images/s); model: {out / 'model.safetensors'}")


def _print_epoch(record: dict) -> None:
    """``epoch 3/10  step 705  loss 0.5123  train accuracy 81.2%  41 s  1530 img/s  4.8 min left``."""
    of = f"/{record['epochs']}" if "epochs" in record else ""
    accuracy = f"  train accuracy {record['accuracy']:.1%}" if "accuracy" in record else ""
    timing = f"  {record['seconds']:.0f} s" if "seconds" in record else ""
    left = f"  {_duration(record['seconds_left'])} left" if "seconds_left" in record else ""
    console.print(f"epoch {record['epoch']:>3}{of}  step {record['step']:>6}  loss {record['loss']:.4f}{accuracy}{timing}  "
                  f"{record['images_per_second']:.0f} img/s{left}")


def _duration(seconds: float) -> str:
    """``42 s``, ``4.8 min``, ``2.1 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


@zoo_app.command("list")
def zoo_list(markdown: Annotated[bool, typer.Option("--markdown", help="print a Markdown table (for the README)")] = False) -> None:
    """The zoo recipes, and what each shipped model reaches."""
    from seelike.models.zoo import RECIPES, manifests

    shipped = manifests()
    header = ("name", "params", "test accuracy", "target", "training time", "description")
    rows = []
    for name, (_, target, description) in RECIPES.items():
        m = shipped.get(name)
        rows.append((
            name,
            f"{m['parameters'] / 1e3:.0f}k" if m else "-",
            f"{m['test_accuracy']:.2%}" if m else "not shipped",
            f"{target:.0%}" if target else "-",
            f"{m['train_seconds'] / 60:.1f} min" if m else "-",
            description,
        ))
    if markdown:
        print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    listing = fitted_table("seelike zoo (Fashion-MNIST)", ("name",), ("params", "test acc.", "target", "train time"))
    listing.add_column("description", min_width=16, overflow="fold")  # the description wraps; names and numbers stay whole
    for row in rows:
        listing.add_row(*row)
    console.print(listing)


@zoo_app.command("train")
def zoo_train(
    names: Annotated[list[str], typer.Argument(help="zoo names (see `seelike zoo list`)")],
    runs: Annotated[Path, typer.Option(help="where training runs (and their resumable checkpoints) live: RUNS/NAME")] = Path("runs/zoo"),
    out: Annotated[Optional[Path], typer.Option("--out", help="where the fp16 weights and manifest are published (default: RUNS/published; "
                                                "the shipped zoo inside the package is replaced only if you name its folder here)")] = None,
    device: Annotated[str, typer.Option(help="cpu | cuda | cuda:N; a run resumes on either")] = "cpu",
) -> None:
    """Train zoo models from their recipes and publish them (fp16 weights + manifest) into OUT, never over the shipped zoo
    unless OUT names it; one line per epoch."""
    from seelike.zoo_training import train_zoo_model

    destination = _prepare_out(out if out is not None else runs / "published", clean=False)
    for name in names:
        _prepare_out(runs / name, clean=False)  # two trainings of one recipe must not share a checkpoint folder
        manifest = train_zoo_model(name, runs, destination, on_epoch=_print_epoch, device=device)
        console.print(f"{name}: test accuracy {manifest['test_accuracy']:.2%} (fp16), {manifest['train_seconds'] / 60:.1f} min; "
                      f"load it as {destination / (name + '.safetensors')}")


@zoo_app.command("verify")
def zoo_verify(
    names: Annotated[Optional[list[str]], typer.Argument(help="zoo names (default: every shipped model)")] = None,
    hash_only: Annotated[bool, typer.Option("--hash-only", help="check the sha256 of the weights only, without re-evaluating accuracy")] = False,
) -> None:
    """Check each shipped model's hash and re-evaluate its test accuracy."""
    from seelike.models.zoo import manifests
    from seelike.zoo_training import verify

    failed = False
    for name in names or list(manifests()):
        try:
            report = verify(name, evaluate_accuracy=not hash_only)
        except SeelikeError as error:
            _fail(error)
        ok = report["sha256_ok"] and report.get("accuracy_ok", True)
        failed |= not ok
        accuracy = f"  accuracy {report['test_accuracy']:.2%} (recorded {report['recorded']:.2%})" if "test_accuracy" in report else ""
        console.print(f"{'[green]ok[/green]' if ok else '[red]FAILED[/red]'}  {escape(name)}  sha256 {'ok' if report['sha256_ok'] else 'MISMATCH'}{accuracy}",
                      markup=True)
    if failed:
        raise typer.Exit(1)


def _load_models(specs: list[str], device: str) -> list:
    """Load every model once, named so that no two models of the run share a name (:func:`unique_names`: a source
    or query that tells them apart is shown; the same spec given twice gets a numeric suffix)."""
    from seelike.models import load_model
    from seelike.models.model import unique_names

    names = unique_names(specs)
    models, seen = [], {}
    for spec in specs:
        model = load_model(spec, device=device)
        count = seen[spec] = seen.get(spec, 0) + 1
        if names[spec] != model.name or count > 1:
            model.label = names[spec] + (f"-{count}" if count > 1 else "")
        models.append(model)
    return models


def _folder(out: Path, name: str) -> Path:
    """``OUT/NAME`` for one model of several, with a file-system-friendly NAME (``resnet18 (timm)`` → ``resnet18-timm``)."""
    return out / (re.sub(r"[^\w.=+-]+", "-", name).strip("-") or "model")


@app.command()
def cka(
    models: Annotated[list[str], typer.Argument(help="one model (within-model heatmap) or several (all within- and cross-model heatmaps, one pass)")],
    out: OutOption = Path("runs/cka"),
    data: DataOption = "fashion-mnist",
    split: SplitOption = "test",
    n: ImagesOption = None,
    batch_size: Annotated[int, typer.Option(help="images per minibatch of the CKA estimate and per forward pass (the paper: 1,024)")] = 256,
    layers: Annotated[str, typer.Option(help="blocks | all | comma-separated globs such as 'blocks.*.attn'")] = "blocks",
    repeats: Annotated[int, typer.Option(help="reshuffled passes averaged, as in the paper")] = 1,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    skip_bad_images: SkipBadImagesOption = False,
) -> None:
    """Minibatch CKA heatmaps of every layer against every other (Raghu et al. 2021, Fig 1-2, 8; appendix H).

    Prints per model the mean CKA between layers and across each block, and per pair of models the best-match CKA."""
    from seelike.analyses.layer_similarity import layer_similarity
    from seelike.plots import save_figures
    from seelike.summaries import cka_summary

    out = _prepare_out(out)
    try:
        loaded = _load_models(models, device)
        dataset = _load_data(data, split, skip_bad_images, image_size=None)
        result = _record_data(layer_similarity(loaded, dataset, n=n, batch_size=batch_size, layers=layers, repeats=repeats, seed=seed), dataset)
    except SeelikeError as error:
        _fail(error)
    summary = cka_summary(result)
    result = _with_summary(result, summary)
    result.save(out)
    figures = save_figures(result, out)
    meta = result.metadata
    console.print(f"CKA over {meta['n']} images of {meta['data']} ({meta['split']}), batches of {batch_size}, "
                  f"{len(result.names)} layers, {meta['seconds']:.1f} s")
    within = fitted_table("within each model: mean CKA between distinct layers and between neighbours",
                          ("model",), ("layers", "between layers", "between neighbours"))
    for model, entry in summary["models"].items():
        within.add_row(model, str(entry["layers"]), _fixed(entry["mean_cka_between_layers"]), _fixed(entry["mean_cka_between_neighbours"]))
    console.print(within)
    across = {model: entry["cka_across_block"] for model, entry in summary["models"].items() if entry["cka_across_block"]}
    if across:
        table = fitted_table("across block i: CKA of blocks i-1 and i+1 (low where block i lost its skips, Fig 8)", ("i",), list(across))
        for block in dict.fromkeys(block for values in across.values() for block in values):
            table.add_row(block, *(_fixed(values.get(block)) for values in across.values()))
        console.print(table)
    if summary["pairs"]:
        pairs = fitted_table("across models: best-match CKA, the mean over MODEL's layers of its highest CKA with any layer of OTHER "
                             "(appendix H), and over MODEL's top third of layers and the rest (Fig 2)", ("model", "other"),
                             ("best match", "top third", "rest"))
        for pair in summary["pairs"]:
            pairs.add_row(pair["model"], pair["other"], f"{pair['best_match_cka']:.3f}", f"{pair['best_match_top_third']:.3f}",
                          _fixed(pair["best_match_rest"]))
        console.print(pairs)
    grid = figures.pop("cka_grid", None)
    heatmaps = [str(paths[0]) for paths in figures.values()]
    console.print(f"result: {out / 'result.json'} (summary under metadata.summary)\nheatmaps: "
                  + (", ".join(heatmaps) if len(heatmaps) <= 3 else f"{len(heatmaps)} in {out} (cka_MODEL.png, cka_A_vs_B.png)")
                  + (f"\nall models in one figure: {grid[0]}" if grid else ""))


def _fixed(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _with_summary(result: Any, summary: dict) -> Any:
    """The result with the numbers the command prints stored in its metadata (``summary``)."""
    return dataclasses.replace(result, metadata={**result.metadata, "summary": summary})


@app.command()
def demo(out: Annotated[Path, typer.Option("--out", help="output folder: the cache, results.json and report/ (a rerun resumes)")] = Path("runs/demo")) -> None:
    """The main job on the embedded default: `seelike study` on the shipped zoo."""
    study(out=out, preset="zoo", models=None, data=None, n=None, batch_size=None, seed=0, device="cpu", init="trained", plan=False)


def _roles_help() -> str:
    """The --models help: every role a study accepts, from the study's role table."""
    from seelike.study.roles import ROLES

    return ("ROLE=SPEC replacing or adding a preset model (repeatable). A step comparing a model with its twins (seed, data "
            "fraction, skips, classifier) runs only when all of them come from the preset or all from --models; otherwise it is "
            "skipped and says why. Roles: " + "; ".join(f"{role}: {text}" for role, text in ROLES.items()))


@app.command()
def study(
    out: Annotated[Path, typer.Option("--out", help="output folder: the cache, results.json and report/ (a rerun resumes)")] = Path("runs/study"),
    preset: Annotated[str, typer.Option(help="zoo (shipped models, Fashion-MNIST, offline) | paper (timm models, pretrained, ImageNet folder)")] = "zoo",
    models: Annotated[Optional[list[str]], typer.Option("--models", help=_roles_help())] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="data spec (default: the preset's)")] = None,
    n: Annotated[Optional[int], typer.Option("--n", "--images", help="images per analysis (default: the preset's)")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="images per forward pass (default: the preset's)")] = None,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    init: Annotated[str, typer.Option("--init", help="trained | random: every model replaced by its random-init twin, a dry run of "
                                      "the pipeline at the preset's scale (its findings are not the paper's claims)")] = "trained",
    plan: Annotated[bool, typer.Option("--plan", help="list the steps and models without running anything")] = False,
) -> None:
    """The whole paper in one run: every analysis, cached and resumable, and one HTML report.

    Settings and every model are checked before the first step (with --plan too, without loading
    weights). Steps whose models the preset lacks, or whose twins --models split up, are skipped
    with the reason; they do not fail the run. The command exits with status 1 when a step failed
    or a model could not be loaded."""
    from dataclasses import replace

    from seelike.distributed import is_main_process
    from seelike.study.analyses import images_needed
    from seelike.study.engine import planned_skip, run_study, validate_study
    from seelike.study.presets import PRESET_SETTINGS, plan_study

    given: dict[str, str] = {}
    for item in models or []:
        role, _, spec = item.partition("=")
        if not spec:
            _fail(SeelikeError(f"--models takes ROLE=SPEC (see seelike study --help for the roles); got {item!r}"))
        given[role] = spec
    try:
        steps = plan_study(preset, given, init)
    except SeelikeError as error:
        _fail(error)
    if not plan:
        _prepare_out(out, clean=False)  # the folder holds the study's cache: checked and locked, never cleared
    settings = PRESET_SETTINGS[preset]
    settings = replace(settings, **{k: v for k, v in dict(data=data, n=n, batch_size=batch_size).items() if v is not None},
                       seed=seed, device=device, init=init)
    try:
        pool = validate_study(steps, settings, load=not plan)
    except SeelikeError as error:
        _fail(error)
    if init == "random":
        console.print("[bold yellow]random-init dry run:[/bold yellow] every model is at random init; the findings test the pipeline, "
                      "not the paper's claims", markup=True)
    if plan:
        console.print(f"study preset {preset!r} on {settings.data} (n={settings.n}, batch {settings.batch_size}); every step reads at most n images of a split:")
        for step in steps:
            if step.skip:
                console.print(f"  {step.question}  {step.name:<26} [yellow]skipped: {escape(step.skip)}[/yellow]", markup=True)
                continue
            console.print(f"  {step.question}  {step.name:<26} {images_needed(step, settings):<44} "
                          + ", ".join(f"{role}={spec}" for role, spec in step.models.items()))
        return

    def report_step(index: int, total: int, outcome) -> None:
        colour = {"ok": "green", "cached": "cyan", "error": "red", "skipped": "yellow"}[outcome.status]
        console.print(f"[{index + 1}/{total}] [{colour}]{outcome.status:<7}[/{colour}] {outcome.step.name} ({outcome.seconds:.1f} s)"
                      + (f": {escape(outcome.error.splitlines()[0])}" if outcome.error else "")
                      + (f" [yellow]({escape(outcome.note)})[/yellow]" if outcome.note else ""), markup=True)

    outcomes = run_study(steps, settings, out, on_step=report_step, pool=pool)
    failed = [o.step.name for o in outcomes if o.status in ("error", "skipped") and not planned_skip(o)]
    planned = [o.step.name for o in outcomes if planned_skip(o)]
    if not is_main_process():  # rank 0 says what failed; another rank exiting non-zero would make torchrun stop rank 0 mid-report
        return
    console.print(f"[bold]report:[/bold] {escape(str((out / 'report' / 'index.html').resolve()))}\n"
                  f"[bold]numbers:[/bold] {escape(str((out / 'results.json').resolve()))}", markup=True)
    if planned:
        console.print(f"[yellow]{len(planned)} step(s) not planned to run (their models are not in the preset or were split up): "
                      f"{escape(', '.join(planned))}; their sections say why[/yellow]", markup=True)
    if failed:
        console.print(f"[red]{len(failed)} step(s) failed or were skipped: {escape(', '.join(failed))}; their sections show why[/red]", markup=True)
        raise typer.Exit(1)


@contextmanager
def _reporting() -> Iterator[None]:
    """Run an analysis for a command: a SeelikeError exits with its one-line message (warnings print as they come,
    one line each: see :func:`seelike.console.one_line_messages`)."""
    try:
        yield
    except SeelikeError as error:
        _fail(error)


@app.command()
def skips(
    models: Annotated[list[str], typer.Argument(help="one model (result in OUT) or several (OUT/<name>/ each), drawn side by side as in Fig 7")],
    out: OutOption = Path("runs/skips"),
    data: DataOption = "fashion-mnist",
    split: SplitOption = "test",
    n: ImagesOption = None,
    batch_size: BatchSizeOption = 256,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    skip_bad_images: SkipBadImagesOption = False,
) -> None:
    """Skip-connection norm ratios ‖skip‖/‖branch‖ per block (Raghu et al. 2021, Fig 7), e.g. a ViT beside a ResNet."""
    from seelike.analyses.skip_norms import skip_norm_ratios
    from seelike.plots import save_figures
    from seelike.summaries import skip_summary

    out = _prepare_out(out)
    with _reporting():
        loaded = _load_models(models, device)
        dataset = _load_data(data, split, skip_bad_images)
        results = [_record_data(skip_norm_ratios(model, dataset, n=n, batch_size=batch_size, seed=seed), dataset) for model in loaded]
    folders = [out if len(results) == 1 else _folder(out, result.metadata["model"]) for result in results]
    results = [_with_summary(result, skip_summary(result)) for result in results]
    for result, folder in zip(results, folders):
        result.save(folder)
        lines = result.lines()
        table = fitted_table(f"{result.metadata['model']}: ‖skip‖/‖branch‖ over {result.metadata['n']} images of {result.metadata['data']}",
                             ("block",), list(lines))
        for row, block in enumerate(result.blocks):
            table.add_row(str(block), *(f"{values[row]:.3g}" for values in lines.values()))
        console.print(table)
        over = "units" if result.structure == "residual" else "blocks, spatial tokens, attention and MLP"
        console.print(f"median over {over}: {result.metadata['summary']['median_spatial_ratio']:.3g}")
    figures = save_figures(results, out)
    console.print(f"results: {', '.join(map(str, folders))}\nfigure: {figures['skip_norms'][0]}")


@app.command()
def localize(
    model: Annotated[str, typer.Argument(help="model spec (ViT, CNN or Mixer)")],
    out: OutOption = Path("runs/localize"),
    data: DataOption = "fashion-mnist",
    split: SplitOption = "test",
    n: ImagesOption = None,
    batch_size: BatchSizeOption = 256,
    layer: Annotated[Optional[list[str]], typer.Option("--layer", help="layer name or glob, repeatable (default: penultimate and last block)")] = None,
    positions: Annotated[Optional[list[str]], typer.Option("--positions", help="ROW,COL grid positions to draw, e.g. '0,0 0,3 3,3' (default: corner, edge, interior)")] = None,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    skip_bad_images: SkipBadImagesOption = False,
) -> None:
    """Spatial localization (Raghu et al. 2021, Fig 9-10): CKA of each top-layer token with the pixels of every input cell."""
    from seelike.analyses.localization import parse_positions, spatial_localization
    from seelike.plots import save_figures

    out = _prepare_out(out)
    with _reporting():
        chosen = parse_positions(positions) if positions else None
        loaded = _load_models([model], device)[0]
        dataset = _load_data(data, split, skip_bad_images)
        result = _record_data(spatial_localization(loaded, dataset, n=n, batch_size=batch_size,
                                                   layers=",".join(layer) if layer else None, positions=chosen, seed=seed), dataset)
    result.save(out)
    figures = save_figures(result, out)
    console.print(f"token vs input-cell CKA, {result.metadata['model']}, {result.metadata['n']} images of {result.metadata['data']}:")
    for index, name in enumerate(result.layers):
        rows, columns = result.grid(name)
        console.print(f"  {name} ({rows}×{columns}): own cell first for {result['share_first'][index]:.0%} of positions, "
                      f"CKA on the diagonal {result['diagonal_mean'][index]:.3f} vs off it {result['off_diagonal_mean'][index]:.3f} "
                      f"(gap {result['diagonal_gap'][index]:.3f})")
    console.print(f"result: {out / 'result.json'}\nfigure: {figures['localization'][0]}")


@app.command()
def probe(
    models: Annotated[list[str], typer.Argument(help="one model (result in OUT) or several (OUT/<name>/ each, plus a Fig 13 comparison)")],
    out: OutOption = Path("runs/probes"),
    data: DataOption = "fashion-mnist",
    n_train: Annotated[Optional[int], typer.Option(help="training images for full-data probes (default: the whole train split; 0: few-shot only)")] = None,
    n_test: Annotated[Optional[int], typer.Option(help="test images (default: the whole test split)")] = None,
    readouts: Annotated[str, typer.Option(help="comma-separated: gap, cls, first, mean, tokens; or 'all' (the model's native readouts, Fig 11)")] = "gap",
    shots: Annotated[int, typer.Option(help="few-shot probes: images per class (0: none)")] = 10,
    samples: Annotated[int, typer.Option(help="few-shot draws, reported as mean ± std")] = 5,
    batch_size: BatchSizeOption = 256,
    seed: Annotated[int, typer.Option(help="seed of the image subsets, the few-shot draws and a held-out split")] = 0,
    device: DeviceOption = "cpu",
    holdout: Annotated[Optional[float], typer.Option(help="test on a seeded, class-balanced FRACTION of the data held out from "
                                                     "training (default 0.2 when the data has no separate test split)")] = None,
    skip_bad_images: SkipBadImagesOption = False,
) -> None:
    """Linear probes per block, full-data and few-shot (Raghu et al. 2021, Fig 11, 13).

    Ridge regression to ±1 targets; prints each probe's mean over the middle blocks."""
    from seelike.analyses.probes import probe_layers
    from seelike.data import holdout_split, shared_images
    from seelike.plots import save_figures
    from seelike.summaries import probe_columns, probe_summary

    out = _prepare_out(out)
    results = []
    with _reporting():
        train_set, test_set = _load_data(data, "train", skip_bad_images), _load_data(data, "test", skip_bad_images)
        if not shared_images(train_set, test_set):
            if holdout is not None:
                raise InvalidInputError(f"--holdout is for data without a separate test split, and {data} has one; drop --holdout")
        else:
            fraction = 0.2 if holdout is None else holdout
            train_set, test_set = holdout_split(test_set, fraction, seed)
            console.print(f"{data} has no separate test images: probes train on {1 - fraction:.0%} and test on a disjoint, "
                          f"class-balanced {fraction:.0%} (seed {seed}; recorded in the result)")
        for model in _load_models(models, device):
            results.append(_record_data(probe_layers(model, train_set, test_set, n_train=n_train, n_test=n_test, batch_size=batch_size,
                                                     readouts=readouts, shots=shots or None, samples=samples, seed=seed), train_set, test_set))
    summaries = {}
    for result in results:
        folder = out if len(results) == 1 else _folder(out, result.model)
        summary = summaries[result.model] = probe_summary(result)
        result = _with_summary(result, summary)
        result.save(folder)
        figures = save_figures(result, folder)
        meta = result.metadata
        middle = summary["middle_blocks"]
        for regime in ("full", "few_shot"):  # one table per regime: five readouts of both would not fit 80 columns
            columns = [(readout, label) for readout, kind, label in probe_columns(result) if kind == regime]
            if not columns:
                continue
            table = fitted_table(f"{result.model}: {'full-data' if regime == 'full' else 'few-shot'} probe test accuracy per block, % "
                                 f"(chance {100 * meta['chance']:.0f})", ("block",), [label for _, label in columns])
            curves = [result.curve(readout, regime) for readout, _ in columns]
            for row, block in enumerate(result.blocks):
                table.add_row(str(block), *(f"{100 * a[row]:.1f}" + (f"±{100 * s[row]:.1f}" if s is not None else "") for a, s in curves))
            table.add_row(f"middle {middle[0]}-{middle[-1]}", *(f"{100 * summary['middle_block_accuracy'][label]:.1f}" for _, label in columns),
                          style="bold")
            console.print(table)
        console.print(f"{meta['n_test']} test images of {meta['data']}, {meta['seconds']:.1f} s\n"
                      f"result: {folder / 'result.json'} (summary under metadata.summary)\nfigure: {figures['probes'][0]}")
    if len(results) > 1:
        for regime in ("full", "few_shot"):
            labels = list(dict.fromkeys(label for result in results for _, kind, label in probe_columns(result) if kind == regime))
            if not labels:
                continue
            table = fitted_table(f"{'full-data' if regime == 'full' else 'few-shot'} probes: mean test accuracy over the middle blocks, % (Fig 13)",
                                 ("model", "blocks"), labels)
            for model, summary in summaries.items():
                middle, accuracy = summary["middle_blocks"], summary["middle_block_accuracy"]
                table.add_row(model, f"{middle[0]}-{middle[-1]}", *(_fixed(100 * accuracy[label] if label in accuracy else None, 1) for label in labels))
            console.print(table)
    if len(results) > 1:
        readout = "gap" if all("gap" in r.readouts + r.few_shot_readouts for r in results) else (results[0].readouts + results[0].few_shot_readouts)[0]
        figures = save_figures(results, out, readout=readout)
        console.print(f"comparison (Fig 13): {figures['probe_comparison'][0]}")


@app.command()
def datascale(
    reference: Annotated[str, typer.Argument(help="the model trained on 100% of the data")],
    others: Annotated[list[str], typer.Argument(help="models trained on less data (same architecture)")],
    baseline: Annotated[str, typer.Option("--baseline", help="a second 100% model with another seed (e.g. zoo:vit-cls-seed1)")],
    out: OutOption = Path("runs/datascale"),
    data: DataOption = "fashion-mnist",
    split: SplitOption = "test",
    n: ImagesOption = None,
    batch_size: BatchSizeOption = 256,
    repeats: Annotated[int, typer.Option(help="reshuffled passes averaged (their spread gives the standard error)")] = 1,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    skip_bad_images: SkipBadImagesOption = False,
) -> None:
    """Per-block CKA of reduced-data models against the 100% model, with a seed baseline (Raghu et al. 2021, Fig 12)."""
    from seelike.analyses.data_scale import data_scale
    from seelike.plots import save_figures
    from seelike.validation import check_same_architecture

    out = _prepare_out(out)
    with _reporting():
        loaded = _load_models([reference, *others, baseline], device)
        check_same_architecture(loaded[0], loaded[1:])
        dataset = _load_data(data, split, skip_bad_images)
        result = _record_data(data_scale(loaded[0], loaded[1:-1], loaded[-1], dataset, n=n,
                                         batch_size=batch_size, repeats=repeats, seed=seed), dataset)
    result.save(out)
    figures = save_figures(result, out)
    meta = result.metadata
    columns = []
    for model in [*result.models, meta["baseline"]]:
        fraction = result.fractions.get(model)
        columns.append(model + (f" ({fraction:.0%})" if fraction is not None else "") + (" (seed baseline)" if model == meta["baseline"] else ""))
    table = fitted_table(f"CKA with {meta['reference']}, block by block (* = changed by data scale)", ("block",), columns)
    for row, block in enumerate(result["blocks"]):
        cells = [f"{result['per_block_cka'][m, row]:.3f}" + ("*" if result["changed"][m, row] else "") for m in range(len(result.models))]
        table.add_row(str(block), *cells, f"{result['baseline'][row]:.3f} ± {result['baseline_standard_error'][row]:.2g}")
    console.print(table)
    console.print(f"{meta['n']} images of {meta['data']}; changed = below the seed baseline by more than "
                  f"{meta['significance']:g} combined standard errors")
    for model in result.models:
        changed = result.changed_blocks(model)
        console.print(f"  {model}: {'blocks ' + ', '.join(map(str, changed)) + ' changed by data scale' if changed else 'no block changed beyond seed variation'}")
    console.print(f"result: {out / 'result.json'}\nfigure: {figures['data_scale'][0]}")


def _parse_blocks(text: Optional[str]) -> Optional[list[int]]:
    """'0,3,5' -> [0, 3, 5]; None stays None (the command's default)."""
    if text is None or not text.strip():
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInputError(f"blocks must be comma-separated integers such as '0,3,5', got {text!r}") from None


@app.command()
def attention(
    model: Annotated[str, typer.Argument(help="a ViT spec (own, timm, torchvision or hf; Swin too)")],
    out: OutOption = Path("runs/attention"),
    data: DataOption = "fashion-mnist",
    split: SplitOption = "test",
    n: Annotated[Optional[int], typer.Option("--n", "--images", help="images (default: the whole split; the paper used 5,000)")] = None,
    batch_size: BatchSizeOption = 256,
    blocks: Annotated[Optional[str], typer.Option(help="blocks in the per-block figure, e.g. '0,3,5' (default: first, middle, last)")] = None,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    skip_bad_images: SkipBadImagesOption = False,
) -> None:
    """Mean attention distance and entropy of every head of every block (Raghu et al. 2021, Fig 3-4; docs/methods.md §2)."""
    from seelike.analyses.attention_distance import LOCAL_FRACTION, MAX_PREFIX_MASS, attention_distances
    from seelike.plots import save_figures
    from seelike.summaries import attention_summary
    from seelike.validation import check_blocks, check_vit

    out = _prepare_out(out)
    with _reporting():
        chosen = _parse_blocks(blocks)
        loaded = _load_models([model], device)[0]
        check_vit(loaded, "MODEL")
        check_blocks(loaded, chosen)
        dataset = _load_data(data, split, skip_bad_images)
        result = _record_data(attention_distances(loaded, dataset, n=n, batch_size=batch_size, seed=seed), dataset)
        summary = attention_summary(result)
        result = _with_summary(result, summary)
    result.save(out)
    figures = save_figures(result, out, blocks=chosen)
    meta = result.metadata
    threshold = LOCAL_FRACTION * result.uniform_distance  # local: relative to uniform attention on this grid, not the image width
    table = fitted_table(f"{meta['model']}: mean attention distance (px) over {meta['n']} images of {meta['data']}",
                         ("block",), ("mean px", "min head", "max head", "local heads", "renorm. px", "prefix mass", "entropy"))
    shares = result.local_share()
    entropy = summary.get("entropy_fraction_of_uniform_per_block")
    for row, block in enumerate(result.blocks):
        distance = result.distance[row]
        table.add_row(str(block), f"{summary['mean_distance_per_block_px'][row]:.2f}", f"{np.nanmin(distance):.2f}", f"{np.nanmax(distance):.2f}",
                      f"{shares[row]:.0%}", f"{np.nanmean(result['renormalised'][row]):.2f}", f"{np.nanmean(result['prefix_mass'][row]):.3f}",
                      _fixed(entropy[row] if entropy else None, 2))
    console.print(table)
    console.print(f"uniform attention gives {meta['uniform_distance']:.1f} px; local heads: renormalised distance < {threshold:.1f} px "
                  f"({LOCAL_FRACTION:g} × uniform) and prefix mass < {MAX_PREFIX_MASS:g}: {summary['local_heads']} of {summary['heads']}")
    if entropy:
        console.print(f"entropy of a query's attention as a fraction of uniform attention's (1: uniform), over heads: "
                      f"{summary['entropy_fraction_of_uniform_min']:.2f}–{summary['entropy_fraction_of_uniform_max']:.2f}")
    console.print(f"result: {out / 'result.json'} (summary under metadata.summary)\n"
                  f"figures: {', '.join(str(paths[0]) for paths in figures.values())}")


@app.command()
def heads(
    vit: Annotated[str, typer.Argument(help="a ViT spec: its heads are sorted by attention distance")],
    cnn: Annotated[str, typer.Argument(help="a CNN spec (e.g. zoo:resnet, timm:resnet50): its lower units are compared")],
    out: OutOption = Path("runs/heads"),
    data: DataOption = "fashion-mnist",
    split: SplitOption = "test",
    n: ImagesOption = None,
    batch_size: BatchSizeOption = 256,
    block: Annotated[int, typer.Option(help="the ViT block whose heads are compared (the paper: the first)")] = 0,
    window: Annotated[Optional[int], typer.Option(help="heads per window (default: max(1, heads // 4))")] = None,
    cnn_blocks: Annotated[Optional[str], typer.Option(help="CNN units, e.g. '0,1,2' (default: the first half)")] = None,
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    skip_bad_images: SkipBadImagesOption = False,
) -> None:
    """CKA of windows of ViT heads (sorted by attention distance) with lower CNN units (Raghu et al. 2021, Fig 5; docs/methods.md §3)."""
    from seelike.analyses.head_similarity import head_similarity
    from seelike.plots import save_figures
    from seelike.validation import check_blocks, check_cnn, check_vit

    out = _prepare_out(out)
    with _reporting():
        chosen = _parse_blocks(cnn_blocks)
        vit_model, cnn_model = _load_models([vit, cnn], device)
        check_vit(vit_model, "VIT")
        check_cnn(cnn_model, "CNN")
        check_blocks(vit_model, [block], "--block")
        check_blocks(cnn_model, chosen, "--cnn-blocks")
        dataset = _load_data(data, split, skip_bad_images)
        result = _record_data(head_similarity(vit_model, cnn_model, dataset, n=n, batch_size=batch_size, seed=seed,
                                              block=block, window=window, cnn_blocks=chosen), dataset)
    result.save(out)
    figures = save_figures(result, out)
    meta = result.metadata
    distance = result["head_distance"]
    console.print(f"{meta['vit']} block {meta['block']}: {meta['num_heads']} heads, distances (px) "
                  f"{', '.join(f'{d:.1f}' for d in np.sort(distance))}; "
                  + (f"windows of {meta['window']} heads plus single heads" if meta["window"] > 1 else "single heads")
                  + f" ({len(result['window_size'])} in all), {meta['n']} images of {meta['data']}")
    for u, unit in enumerate(result.units):
        cka_values = result.cka[:, u]
        console.print(f"  {meta['cnn']}/{unit}: CKA {cka_values.min():.3f}..{cka_values.max():.3f}, Spearman(distance, CKA) "
                      f"{result['spearman'][u]:+.2f} over windows, {result['spearman_single_heads'][u]:+.2f} over single heads")
    console.print("  (the paper finds CKA falling with distance: negative correlations)")
    console.print(f"result: {out / 'result.json'}\nfigures: {', '.join(str(paths[0]) for paths in figures.values())}")


@app.command()
def erf(
    models: Annotated[list[str], typer.Argument(help="one or more model specs; several are measured with one channel averaging")],
    out: OutOption = Path("runs/erf"),
    data: DataOption = "fashion-mnist",
    split: SplitOption = "test",
    n: Annotated[int, typer.Option("--n", "--images", help="images averaged (the paper: 32)")] = 32,
    batch_size: BatchSizeOption = 32,
    blocks: Annotated[Optional[str], typer.Option(help="blocks, e.g. '0,2,5' (default: all)")] = None,
    pre_residual: Annotated[bool, typer.Option("--pre-residual", help="the residual branch only (ViT: MLP branch; ResNet: branch)")] = False,
    channels: Annotated[str, typer.Option(help="auto (exact when every model is narrow enough, else sum, the same for all) | exact (per-channel gradients) | sum (gradient of the channel sum)")] = "auto",
    seed: SeedOption = 0,
    device: DeviceOption = "cpu",
    skip_bad_images: SkipBadImagesOption = False,
) -> None:
    """Effective receptive fields of each block's central position (Raghu et al. 2021, Fig 6; docs/methods.md §4).

    Several models are written to OUT/NAME and share one channel averaging, so their radii compare."""
    from seelike.analyses.receptive_field import effective_receptive_fields, resolve_channel_average
    from seelike.plots import save_figures
    from seelike.validation import check_blocks

    out = _prepare_out(out)
    with _reporting():
        chosen = _parse_blocks(blocks)
        loaded = _load_models(list(models), device)
        for model in loaded:
            check_blocks(model, chosen)
        mode = resolve_channel_average(loaded, channels, chosen, pre_residual)
        dataset = _load_data(data, split, skip_bad_images)
        results = [_record_data(effective_receptive_fields(model, dataset, n=n, batch_size=batch_size, blocks=chosen,
                                                           pre_residual=pre_residual, channels=mode, seed=seed), dataset)
                   for model in loaded]
    for model, result in zip(loaded, results):
        directory = out if len(loaded) == 1 else _folder(out, model.name)
        result.save(directory)
        figures = save_figures(result, directory)
        meta = result.metadata
        table = fitted_table(f"{meta['model']}: ERF {'pre-residual' if pre_residual else 'after the residual add'}, "
                             f"{meta['n']} images, channels averaged: {meta['channel_average']}, input {meta['input_size'][1]}×{meta['input_size'][2]} px",
                             ("layer",), ("radius 50% (px)", "radius 90% (px)"))
        for name, r50, s50, r90, s90 in zip(result.layer_names, result["radius_50"], result["radius_50_se"], result["radius_90"], result["radius_90_se"]):
            table.add_row(name, f"{r50:.1f} ± {s50:.1f}", f"{r90:.1f} ± {s90:.1f}")
        console.print(table)
        console.print(f"result: {directory / 'result.json'}\nfigures: {', '.join(str(paths[0]) for paths in figures.values())}")


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="a `seelike study` folder (with results.json) or an analysis command's --out folder")],
    table_format: Annotated[str, typer.Option("--format", help="csv (no extra packages) | parquet (needs pandas and pyarrow)")] = "csv",
    out: Annotated[Optional[Path], typer.Option("--out", help="folder for the tables (default: RUN_DIR/tables)")] = None,
) -> None:
    """Tidy tables for pandas, R or a spreadsheet: a study's findings and numbers, or one result per model × layer × quantity."""
    from seelike.export import tables_of, write_tables

    if not run_dir.is_dir():
        _fail(InvalidInputError(f"{run_dir} is not a folder; give a study's --out folder or an analysis command's"))
    tables = tables_of(run_dir)
    try:
        written = write_tables(tables, out or run_dir / "tables", table_format)
    except OSError as error:
        _fail(OutputError(f"could not write the tables into {out or run_dir / 'tables'}: {error.strerror or error}; choose another --out"))
    for path, rows in zip(written, tables.values()):
        console.print(f"{path} ({len(rows)} rows)")
