"""The ``seelike`` command line (typer). Side effects live here: files, progress, printing."""

from __future__ import annotations

import logging

import numpy as np
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from seelike.errors import SeelikeError

app = typer.Typer(help="Do vision models see alike? The analyses of Raghu et al. (2021) for any vision model.", no_args_is_help=True)
zoo_app = typer.Typer(help="seelike's shipped small models: list, verify, train.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
console = Console()

DataOption = Annotated[str, typer.Option("--data", help="fashion-mnist | cifar10 | imagefolder:PATH | synthetic[:...]")]
OutOption = Annotated[Path, typer.Option("--out", help="output folder")]


def _fail(error: SeelikeError) -> None:
    console.print(f"[red]error:[/red] {error}")
    raise typer.Exit(2)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="log progress details")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def layers(model: str, all_layers: Annotated[bool, typer.Option("--all", help="sub-layers too, not only blocks")] = False) -> None:
    """List a model's analysis layers in the order its forward pass runs them."""
    from seelike.models import load_model

    try:
        loaded = load_model(model)
    except SeelikeError as error:
        _fail(error)
    table = Table(title=f"{model}: {loaded.family}, {loaded.num_blocks} blocks, input {loaded.preprocessing.input_size}")
    for column in ("layer", "block", "role", "kind", "module"):
        table.add_column(column)
    for layer in loaded.layers if all_layers else loaded.block_layers():
        table.add_row(layer.name, str(layer.block), layer.role, layer.kind, f"{layer.module} ({layer.hook})")
    console.print(table)


@app.command()
def train(
    arch: Annotated[str, typer.Argument(help="vit | resnet | mixer")],
    out: OutOption,
    config: Annotated[list[str], typer.Option("--set", help="architecture setting KEY=VALUE (JSON value), repeatable")] = [],
    data: DataOption = "fashion-mnist",
    fraction: float = 1.0,
    epochs: int = 10,
    steps: Optional[int] = None,
    batch_size: int = 256,
    lr: float = 2e-3,
    augment: str = "none",
    seed: int = 0,
    bf16: bool = False,
) -> None:
    """Train one of seelike's own models (resumes when OUT holds an interrupted run)."""
    import json

    from seelike.train import TrainConfig, Trainer

    try:
        model_config = {}
        for item in config:
            key, _, value = item.partition("=")
            try:
                model_config[key] = json.loads(value)
            except json.JSONDecodeError:
                model_config[key] = value
        train_config = TrainConfig(arch, model_config, data, fraction, epochs, steps, batch_size, lr, augment=augment, seed=seed, bf16=bf16)
        summary = Trainer(train_config, out, on_epoch=_print_epoch).run()
    except SeelikeError as error:
        _fail(error)
    console.print(f"test accuracy {summary['test_accuracy']:.2%} after {summary['epochs']} epochs "
                  f"({summary['images_per_second']:.0f} images/s); model: {out / 'model.safetensors'}")


def _print_epoch(record: dict) -> None:
    console.print(f"epoch {record['epoch']:>3}  step {record['step']:>6}  loss {record['loss']:.4f}  {record['images_per_second']:.0f} img/s")


@zoo_app.command("list")
def zoo_list() -> None:
    """The shipped models and what they reach."""
    from seelike.models.zoo import RECIPES, manifests

    shipped = manifests()
    table = Table(title="seelike zoo (Fashion-MNIST)")
    for column in ("name", "params", "test acc", "target", "train time", "description"):
        table.add_column(column)
    for name, (_, target, description) in RECIPES.items():
        m = shipped.get(name)
        table.add_row(
            name,
            f"{m['parameters'] / 1e3:.0f}k" if m else "-",
            f"{m['test_accuracy']:.2%}" if m else "not shipped",
            f"{target:.0%}" if target else "-",
            f"{m['train_seconds'] / 60:.1f} min" if m else "-",
            description,
        )
    console.print(table)


@zoo_app.command("train")
def zoo_train(
    names: Annotated[list[str], typer.Argument(help="zoo names (see `seelike zoo list`)")],
    runs: Annotated[Path, typer.Option(help="where training runs (and their resumable checkpoints) live")] = Path("runs/zoo"),
) -> None:
    """Train zoo models from their recipes and publish them into the installed zoo."""
    from seelike.models.zoo import train_zoo_model

    for name in names:
        try:
            manifest = train_zoo_model(name, runs, on_epoch=_print_epoch)
        except SeelikeError as error:
            _fail(error)
        console.print(f"{name}: test accuracy {manifest['test_accuracy']:.2%} (fp16), {manifest['train_seconds'] / 60:.1f} min")


@zoo_app.command("verify")
def zoo_verify(names: Annotated[Optional[list[str]], typer.Argument()] = None, hash_only: bool = False) -> None:
    """Check each shipped model's hash and re-evaluate its test accuracy."""
    from seelike.models.zoo import manifests, verify

    failed = False
    for name in names or list(manifests()):
        try:
            report = verify(name, evaluate_accuracy=not hash_only)
        except SeelikeError as error:
            _fail(error)
        ok = report["sha256_ok"] and report.get("accuracy_ok", True)
        failed |= not ok
        accuracy = f"  accuracy {report['test_accuracy']:.2%} (recorded {report['recorded']:.2%})" if "test_accuracy" in report else ""
        console.print(f"{'[green]ok[/green]' if ok else '[red]FAILED[/red]'}  {name}  sha256 {'ok' if report['sha256_ok'] else 'MISMATCH'}{accuracy}")
    if failed:
        raise typer.Exit(1)


def _load_models(specs: list[str], device: str) -> list:
    """Load every model once, giving repeated short names a numeric suffix (never merging two models)."""
    from seelike.models import load_model

    models, seen = [], {}
    for spec in specs:
        model = load_model(spec, device=device)
        count = seen.get(model.name, 0)
        seen[model.name] = count + 1
        if count:
            model.label = f"{model.name}-{count + 1}"
        models.append(model)
    return models


@app.command()
def cka(
    models: Annotated[list[str], typer.Argument(help="one model (within-model heatmap) or several (all within- and cross-model heatmaps, one pass)")],
    out: OutOption = Path("runs/cka"),
    data: DataOption = "fashion-mnist",
    split: str = "test",
    n: Annotated[Optional[int], typer.Option(help="images (default: the whole split)")] = None,
    batch_size: int = 256,
    layers: Annotated[str, typer.Option(help="blocks | all | comma-separated globs such as 'blocks.*.attn'")] = "blocks",
    repeats: Annotated[int, typer.Option(help="reshuffled passes averaged, as in the paper")] = 1,
    seed: int = 0,
    device: str = "cpu",
) -> None:
    """Minibatch CKA heatmaps (paper Fig 1-2): every layer of every model against every other."""
    from seelike.analyses.layer_similarity import layer_similarity
    from seelike.data import load_dataset
    from seelike.plots import heatmap_figures

    try:
        loaded = _load_models(models, device)
        dataset = load_dataset(data, split=split, image_size=None)
        result = layer_similarity(loaded, dataset, n=n, batch_size=batch_size, layers=layers, repeats=repeats, seed=seed)
    except SeelikeError as error:
        _fail(error)
    result.save(out)
    figures = heatmap_figures(result, out)
    meta = result.metadata
    console.print(f"CKA over {meta['n']} images of {meta['data']} ({meta['split']}), batches of {batch_size}, "
                  f"{len(result.names)} layers, {meta['seconds']:.1f} s")
    for model in result.models:
        matrix, names, _ = result.block(model)
        off = matrix[~np.eye(len(names), dtype=bool)]
        adjacent = np.diag(matrix, 1)
        console.print(f"  {model}: {len(names)} layers, mean CKA between layers {off.mean():.3f}, between neighbours {adjacent.mean():.3f}")
    console.print(f"result: {out / 'result.json'}\nfigures: {', '.join(str(paths[0]) for paths in figures.values())}")


@app.command()
def demo(out: OutOption = Path("runs/demo")) -> None:
    """The main job on the embedded default: `seelike study` on the shipped zoo."""
    study(out=out, preset="zoo", models=None, data=None, n=None, batch_size=None, seed=0, device="cpu", plan=False)


@app.command()
def study(
    out: OutOption = Path("runs/study"),
    preset: Annotated[str, typer.Option(help="zoo (shipped models, Fashion-MNIST, offline) | paper (timm models, pretrained, ImageNet folder)")] = "zoo",
    models: Annotated[Optional[list[str]], typer.Option("--models", help="ROLE=SPEC replacing a preset model (roles: vit, vit_gap, resnet, mixer)")] = None,
    data: Annotated[Optional[str], typer.Option("--data", help="data spec (default: the preset's)")] = None,
    n: Annotated[Optional[int], typer.Option(help="images per analysis (default: the preset's)")] = None,
    batch_size: Optional[int] = None,
    seed: int = 0,
    device: str = "cpu",
    plan: Annotated[bool, typer.Option("--plan", help="list the steps and models without running anything")] = False,
) -> None:
    """The whole paper in one run: every analysis, cached and resumable, and one HTML report."""
    from dataclasses import replace

    from seelike.presets import PRESET_MODELS, PRESET_SETTINGS, build_steps
    from seelike.study import run_study

    if preset not in PRESET_MODELS:
        _fail(SeelikeError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_MODELS)}"))
    roles = dict(PRESET_MODELS[preset])
    for item in models or []:
        role, _, spec = item.partition("=")
        if role not in roles or not spec:
            _fail(SeelikeError(f"--models takes ROLE=SPEC with ROLE one of {', '.join(roles)}; got {item!r}"))
        roles[role] = spec
    settings = PRESET_SETTINGS[preset]
    settings = replace(settings, **{k: v for k, v in dict(data=data, n=n, batch_size=batch_size).items() if v is not None}, seed=seed, device=device)
    steps = build_steps(roles)
    if plan:
        console.print(f"study preset {preset!r} on {settings.data} (n={settings.n}, batch {settings.batch_size}):")
        for step in steps:
            console.print(f"  {step.question}  {step.name:<28} {', '.join(step.models)}")
        return

    def report_step(index: int, total: int, outcome) -> None:
        colour = {"ok": "green", "cached": "cyan", "error": "red", "skipped": "yellow"}[outcome.status]
        console.print(f"[{index + 1}/{total}] [{colour}]{outcome.status:<7}[/{colour}] {outcome.step.name} ({outcome.seconds:.1f} s)"
                      + (f": {outcome.error.splitlines()[0]}" if outcome.error else ""))

    outcomes = run_study(steps, settings, out, on_step=report_step)
    failed = sum(o.status == "error" for o in outcomes)
    console.print(f"[bold]report:[/bold] {(out / 'report' / 'index.html').resolve()}\n[bold]numbers:[/bold] {(out / 'results.json').resolve()}")
    if failed:
        console.print(f"[yellow]{failed} step(s) failed; their sections show the error[/yellow]")
