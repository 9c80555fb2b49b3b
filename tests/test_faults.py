"""Faults and bad inputs a user hits (issue 15): each gets a one-line error or a safe recovery, never a silent
wrong number. One test (or parametrized group) per numbered case of the issue; every one fails on the code
before the fix. Faults are injected (a write that raises, a flipped byte), never provoked by timing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

import seelike.models.zoo as zoo
from seelike.cli import app
from seelike.data import check_disjoint, holdout_split, load_dataset, load_image
from seelike.errors import (
    BadImageError,
    CheckpointError,
    DamagedResultError,
    InvalidInputError,
    ModelLoadError,
    OutputError,
)
from seelike.models import load_model
from seelike.recipes import TrainConfig
from seelike.results import Result, load_result
from seelike.train import MODEL_FILE, STATE_FILE, TENSORS_FILE, Trainer

DATA = "synthetic:n=48,size=28,channels=1,classes=4,seed=3"
TINY_VIT = {"width": 16, "depth": 2, "heads": 2, "mlp_ratio": 2.0}
VIT = "seelike:vit?depth=2&width=16&heads=2"
CNN = "seelike:resnet?widths=[4,8]&units_per_stage=[1,1]"
SYNTHETIC = ["--data", "synthetic:n=16,classes=4", "--n", "8", "--batch-size", "8"]
runner = CliRunner()


def run_cli(*args: str):
    """Invoke the command line in-process; a traceback (any exception but a clean exit) fails the test."""
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit code 2 and a single `error:` line that contains every fragment (no traceback)."""
    output = " ".join(result.output.split())
    assert result.exit_code == 2, result.output
    assert output.startswith("error:") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in output, (fragment, output)


def tiny_config(**overrides) -> TrainConfig:
    settings = dict(arch="vit", model=TINY_VIT, data=DATA, epochs=2, batch_size=16, lr=3e-3, warmup_steps=2)
    return TrainConfig(**{**settings, **overrides})


def write_images(folder: Path, count: int, size: int = 12, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i}.png")


# -------------------------------------------------------------------------------- 1. train and test never overlap


def test_1_probes_refuse_or_split_a_folder_without_train_and_test(tmp_path):
    from seelike.analyses.probes import probe_layers

    for label in ("cat", "dog"):
        write_images(tmp_path / "flat" / label, 6, seed=len(label))
    spec = f"imagefolder:{tmp_path / 'flat'}"
    train, test = load_dataset(spec, split="train", image_size=28), load_dataset(spec, split="test", image_size=28)
    with pytest.raises(InvalidInputError, match="overlap.*12 images"):
        probe_layers(load_model(VIT), train, test, shots=None)

    held_train, held_test = holdout_split(test, 0.5, seed=1)
    check_disjoint(held_train, held_test)  # disjoint, class-balanced, seeded
    assert len(held_train) + len(held_test) == 12 and held_test.labels.bincount().tolist() == [3, 3]
    assert not set(held_train.source_indices.tolist()) & set(held_test.source_indices.tolist())

    out = tmp_path / "probe"
    result = run_cli("probe", VIT, "--data", spec, "--out", out, "--shots", "0", "--batch-size", "4")
    assert result.exit_code == 0, result.output
    saved = load_result(out)
    assert saved.metadata["data_provenance"]["holdout"]["test_fraction"] == 0.2
    assert saved.metadata["n_train"] + saved.metadata["n_test"] <= 12
    refused = run_cli("probe", VIT, "--data", "synthetic:n=16,classes=4", "--out", out, "--holdout", "0.3")
    assert_one_line_error(refused, "--holdout is for data without a separate test split")


# --------------------------------------------------------------------------------- 2. every PIL mode in [0, 1]


def _image(mode: str):
    from PIL import Image

    if mode == "I;16":
        return Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16)), 32768 / 65535
    if mode == "I":
        return Image.fromarray(np.full((8, 8), 49152, dtype=np.int32)), 49152 / 65535
    if mode == "F":
        return Image.fromarray(np.full((8, 8), 0.25, dtype=np.float32)), 0.25
    if mode == "P":
        image = Image.new("P", (8, 8), 1)
        image.putpalette([0, 0, 0, 128, 128, 128] + [0] * 762)
        return image, 128 / 255
    if mode == "CMYK":
        return Image.new("CMYK", (8, 8), (0, 0, 0, 64)), 191 / 255
    if mode == "1":
        return Image.new("1", (8, 8), 1), 1.0
    return Image.new(mode, (8, 8), (100,) + (255,) * (len(mode) - 1)), 100 / 255


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "P", "LA", "CMYK", "1", "L"])
def test_2_every_pil_mode_reads_in_its_own_range(tmp_path, mode):
    image, expected = _image(mode)
    assert image.mode == mode
    path = tmp_path / "image.tif"
    image.save(path)
    pixels = load_image(path, 8)
    assert pixels.shape == (3, 8, 8) and pixels.dtype == torch.float32
    assert pixels.min().item() == pytest.approx(expected, abs=1 / 255) and pixels.max().item() == pytest.approx(expected, abs=1 / 255)


def test_2_a_16_bit_png_is_not_clipped_to_white(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 65535, 64 * 64).astype(np.uint16).reshape(64, 64)
    Image.fromarray(ramp).save(tmp_path / "ramp.png")
    pixels = load_image(tmp_path / "ramp.png", 32)
    assert 0.45 < pixels.mean().item() < 0.55 and (pixels < 0.99).float().mean() > 0.9


# ------------------------------------------------------------------------------- 3. damaged zoo weights refused


@pytest.fixture
def copied_zoo(tmp_path, monkeypatch):
    """vit-cls's shipped files in a folder of our own, standing in for the installed zoo."""
    folder = tmp_path / "zoo"
    folder.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copy(zoo.zoo_dir() / f"vit-cls{suffix}", folder / f"vit-cls{suffix}")
    monkeypatch.setattr(zoo, "zoo_dir", lambda: folder)
    return folder


def test_3_a_flipped_byte_in_zoo_weights_is_refused_on_load(copied_zoo):
    path = copied_zoo / "vit-cls.safetensors"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0x01  # inside the last tensor: the header still parses, the numbers change
    path.write_bytes(bytes(data))
    with pytest.raises(ModelLoadError, match="does not match the sha256 in its manifest"):
        load_model("zoo:vit-cls")


def test_3_the_zoo_hash_is_computed_once_per_file_version(copied_zoo, monkeypatch):
    calls = []
    original = zoo.sha256
    monkeypatch.setattr(zoo, "sha256", lambda path: calls.append(path) or original(path))
    zoo._cached_sha256.cache_clear()
    load_model("zoo:vit-cls")
    load_model("zoo:vit-cls?init=random")
    assert len(calls) == 1


# ----------------------------------------------------------------------------------------- 4. symlink loops


def test_4_symlinked_folders_are_followed_at_most_once(tmp_path, caplog):
    root = tmp_path / "images"
    for label in ("cat", "dog"):
        write_images(root / label, 3)
    (root / "cat" / "up").symlink_to("..")
    (root / "dog" / "self").symlink_to(".")
    outside = tmp_path / "extra"
    write_images(outside, 2)
    (root / "dog" / "extra").symlink_to(outside)  # a link out of the tree is followed, once
    dataset = load_dataset(f"imagefolder:{root}", image_size=8)
    assert len(dataset) == 8 and dataset.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 1]
    assert "did not follow 2 symlinked folder(s)" in caplog.text
    assert len(dataset.provenance["skipped_links"]) == 2


# ------------------------------------------------------------------------------- 5. model kinds checked up front


def test_5_data_scale_refuses_another_architecture():
    from seelike.analyses.data_scale import data_scale

    vit, cnn = load_model("seelike:vit?depth=6&width=16&heads=2"), load_model("seelike:resnet")
    assert vit.num_blocks == cnn.num_blocks  # the old block-count check let this through
    with pytest.raises(InvalidInputError, match="same architecture"):
        data_scale(vit, [cnn], vit, load_dataset(DATA), n=8, batch_size=8)


def test_5_heads_refuses_a_vit_as_the_cnn_before_streaming(tmp_path, monkeypatch):
    import seelike.analyses.head_similarity as head_similarity

    monkeypatch.setattr(head_similarity, "head_similarity", lambda *a, **k: pytest.fail("streamed before checking"))
    assert_one_line_error(run_cli("heads", VIT, VIT, "--out", tmp_path, *SYNTHETIC), "CNN must be a CNN")
    assert_one_line_error(run_cli("heads", CNN, CNN, "--out", tmp_path, *SYNTHETIC), "VIT must be a vision transformer")


# ------------------------------------------------------------------------- 6. results that belong together


def _saved(directory: Path, value: float) -> Result:
    result = Result(arrays={"x": np.full(3, value)}, metadata={"value": value})
    result.save(directory)
    return result


def test_6_a_json_from_one_run_with_an_npz_from_another_is_refused(tmp_path):
    _saved(tmp_path / "a", 1.0)
    _saved(tmp_path / "b", 2.0)
    shutil.copy(tmp_path / "b" / "result.npz", tmp_path / "a" / "result.npz")
    with pytest.raises(DamagedResultError, match="two runs into one folder"):
        load_result(tmp_path / "a")


@pytest.mark.parametrize("damage", ["truncated npz", "garbage json", "missing npz"])
def test_6_damaged_result_files_fail_in_one_line(tmp_path, damage):
    _saved(tmp_path, 1.0)
    if damage == "truncated npz":
        data = (tmp_path / "result.npz").read_bytes()
        (tmp_path / "result.npz").write_bytes(data[: len(data) // 2])
    elif damage == "garbage json":
        (tmp_path / "result.json").write_text("{not json")
    else:
        (tmp_path / "result.npz").unlink()
    with pytest.raises(DamagedResultError, match="rerun"):
        load_result(tmp_path)


def test_6_a_second_run_into_a_locked_out_folder_is_refused(tmp_path, monkeypatch):
    import fcntl

    import seelike.analyses.layer_similarity as layer_similarity

    monkeypatch.setattr(layer_similarity, "layer_similarity", lambda *a, **k: pytest.fail("ran into a locked folder"))
    tmp_path.joinpath(".seelike.lock").write_text("4242")
    with open(tmp_path / ".seelike.lock", "a+") as other_run:
        fcntl.flock(other_run.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert_one_line_error(run_cli("cka", VIT, "--out", tmp_path, *SYNTHETIC), "another seelike run (pid 4242)")


# --------------------------------------------------------- 7. a kill at every checkpoint write, then resume


class Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs (not even `except Exception`)."""


def test_7_a_kill_at_every_write_boundary_resumes_to_the_same_model(tmp_path, monkeypatch):
    import seelike.models as models_module
    import seelike.results as results_module
    import seelike.train as train_module

    reference = Trainer(tiny_config(), tmp_path / "straight")
    reference.run()
    expected = {k: v.clone() for k, v in reference.module.state_dict().items()}

    writes = {"count": 0, "limit": None}
    real = {"train_save": train_module.save_file, "models_save": models_module.save_file, "replace": os.replace}

    def counted(name):
        def write(*args, **kwargs):
            if writes["limit"] is not None and writes["count"] >= writes["limit"]:
                raise Killed
            writes["count"] += 1
            return real[name](*args, **kwargs)
        return write

    monkeypatch.setattr(train_module, "save_file", counted("train_save"))
    monkeypatch.setattr(models_module, "save_file", counted("models_save"))
    monkeypatch.setattr(os, "replace", counted("replace"))
    assert results_module.os.replace is os.replace  # atomic_write_text renames through the patched os.replace

    limit, boundaries = 0, 0
    while True:
        folder = tmp_path / f"killed-after-{limit}-writes"
        writes.update(count=0, limit=limit)
        try:
            Trainer(tiny_config(), folder).run()
            break  # every boundary has been tried: this run had more write budget than writes
        except Killed:
            boundaries += 1
        writes.update(count=0, limit=None)
        resumed = Trainer(tiny_config(), folder)
        resumed.run()
        state = resumed.module.state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in expected), f"killed after {limit} writes: another model"
        limit += 1
    assert boundaries >= 8  # 2 epochs x (tensors, rename, state.json, rename) + the final model and summary


# --------------------------------------------------------------------------- 9. damaged training folders


@pytest.fixture
def one_epoch(tmp_path) -> Path:
    trainer = Trainer(tiny_config(), tmp_path / "run")
    trainer.directory.mkdir(parents=True)
    trainer.train_epoch()
    trainer.save()
    return trainer.directory


def _rewrite_tensors(path: Path, change) -> None:
    with safe_open(str(path), framework="pt") as f:
        metadata, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    save_file(change(tensors), path, metadata=metadata)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing tensor", "extra tensor"])
def test_9_a_damaged_checkpoint_names_its_file_in_one_line(one_epoch, damage):
    path = one_epoch / TENSORS_FILE
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-1000])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 10)
    elif damage == "missing tensor":
        _rewrite_tensors(path, lambda t: {k: v for k, v in t.items() if k != "model/head.weight"})
    else:
        _rewrite_tensors(path, lambda t: {**t, "model/stray": torch.zeros(2)})
    with pytest.raises(CheckpointError) as caught:
        Trainer(tiny_config(), one_epoch).resume()
    message = str(caught.value)
    assert str(path) in message and "\n" not in message and "start over" in message
    if "tensor" in damage:
        assert ("missing 1 tensor(s) (head.weight)" if damage == "missing tensor" else "unexpected 1 tensor(s) (stray)") in message


def test_9_a_garbage_state_json_does_not_stop_the_resume(one_epoch):
    (one_epoch / STATE_FILE).write_text("{garbage")
    resumed = Trainer(tiny_config(), one_epoch)
    assert resumed.resume() and resumed.epoch == 1


def test_9_a_model_checkpoint_with_missing_tensors_is_refused_in_one_line(tmp_path):
    Trainer(tiny_config(epochs=1), tmp_path).run()
    _rewrite_tensors(tmp_path / MODEL_FILE, lambda t: {k: v for k, v in t.items() if k != "head.bias"})
    with pytest.raises(ModelLoadError, match=r"does not fit its model: missing 1 tensor\(s\) \(head.bias\)"):
        load_model(str(tmp_path / MODEL_FILE))


# ------------------------------------------------------------------------------ 11. --out checked up front


def test_11_an_unusable_out_is_refused_before_the_work(tmp_path, monkeypatch):
    import seelike.analyses.layer_similarity as layer_similarity
    import seelike.cli as cli

    monkeypatch.setattr(layer_similarity, "layer_similarity", lambda *a, **k: pytest.fail("computed before checking --out"))
    (tmp_path / "file").write_text("x")
    assert_one_line_error(run_cli("cka", VIT, "--out", tmp_path / "file", *SYNTHETIC), "is a file, not a folder")
    assert_one_line_error(run_cli("cka", VIT, "--out", "/proc/seelike-out", *SYNTHETIC), "cannot write into --out /proc/seelike-out")
    monkeypatch.setattr(cli.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10 << 30, 10 << 30, 1 << 20))
    assert_one_line_error(run_cli("cka", VIT, "--out", tmp_path / "full", *SYNTHETIC), "has only 1024 KiB free")


def test_11_a_full_disk_while_saving_leaves_the_previous_result_whole(tmp_path, monkeypatch):
    _saved(tmp_path, 1.0)

    real_dumps = json.dumps

    def full_disk(*args, **kwargs):  # the disk fills up while result.json is written, after result.npz
        if kwargs.get("indent") == 2:
            raise OSError(28, "No space left on device")
        return real_dumps(*args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(json, "dumps", full_disk)
        with pytest.raises(OutputError, match="No space left on device"):
            Result(arrays={"x": np.full(3, 2.0)}, metadata={"value": 2.0}).save(tmp_path)
    loaded = load_result(tmp_path)
    assert loaded.metadata["value"] == 1.0 and loaded["x"].tolist() == [1.0, 1.0, 1.0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json", "result.npz"]  # no temporary left behind


# -------------------------------------------------------------------- 12. options checked before streaming


@pytest.mark.parametrize("command, options", [
    ("attention", ["--blocks", "0,9"]),
    ("erf", ["--blocks", "0,9"]),
])
def test_12_block_options_are_checked_before_streaming(tmp_path, monkeypatch, command, options):
    import seelike.analyses.attention_distance as attention_distance
    import seelike.analyses.receptive_field as receptive_field

    monkeypatch.setattr(attention_distance, "attention_distances", lambda *a, **k: pytest.fail("streamed before checking"))
    monkeypatch.setattr(receptive_field, "effective_receptive_fields", lambda *a, **k: pytest.fail("streamed before checking"))
    assert_one_line_error(run_cli(command, VIT, "--out", tmp_path, *options, *SYNTHETIC), "--blocks 9", "blocks 0..1")


def test_12_heads_block_options_are_checked_before_streaming(tmp_path, monkeypatch):
    import seelike.analyses.head_similarity as head_similarity

    monkeypatch.setattr(head_similarity, "head_similarity", lambda *a, **k: pytest.fail("streamed before checking"))
    assert_one_line_error(run_cli("heads", VIT, CNN, "--out", tmp_path, "--block", "5", *SYNTHETIC), "--block 5")
    assert_one_line_error(run_cli("heads", VIT, CNN, "--out", tmp_path, "--cnn-blocks", "0,7", *SYNTHETIC), "--cnn-blocks 7")


# ----------------------------------------------------------------------------------------- 13. bad images


def _bad_images(folder: Path) -> dict[str, Path]:
    write_images(folder / "cat", 4)
    png = (folder / "cat" / "0.png").read_bytes()
    paths = {"corrupt": folder / "cat" / "corrupt.png", "truncated": folder / "cat" / "truncated.png",
             "empty": folder / "cat" / "empty.png"}
    paths["corrupt"].write_bytes(os.urandom(256))
    paths["truncated"].write_bytes(png[: len(png) // 2])
    paths["empty"].write_bytes(b"")
    return paths


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("kind", ["corrupt", "truncated", "empty", "bomb"])
def test_13_an_unreadable_image_is_named_in_one_line(tmp_path, monkeypatch, kind):
    from PIL import Image

    paths = _bad_images(tmp_path)
    if kind == "bomb":
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # a 12x12 image stands in for a decompression bomb
        paths["bomb"] = tmp_path / "cat" / "1.png"
    with pytest.raises(BadImageError) as caught:
        load_image(paths[kind], 8)
    assert str(paths[kind]) in str(caught.value) and "\n" not in str(caught.value)
    assert "--skip-bad-images" in str(caught.value)


def test_13_skip_bad_images_goes_on_and_records_what_it_skipped(tmp_path):
    paths = _bad_images(tmp_path / "images")
    write_images(tmp_path / "images" / "dog", 4)
    spec = f"imagefolder:{tmp_path / 'images'}"
    failing = run_cli("cka", VIT, "--data", spec, "--out", tmp_path / "a", "--batch-size", "4")
    assert_one_line_error(failing, "cannot read image", "--skip-bad-images")
    result = run_cli("cka", VIT, "--data", spec, "--out", tmp_path / "b", "--batch-size", "4", "--skip-bad-images")
    assert result.exit_code == 0, result.output
    skipped = load_result(tmp_path / "b").metadata["data_provenance"]["skipped_images"]
    assert sorted(line.split(":")[0] for line in skipped) == sorted(str(p) for p in paths.values())
    assert load_result(tmp_path / "b").metadata["n"] == 8


# ------------------------------------------------------------------------ 14. devices and training settings


@pytest.mark.parametrize("device, message", [("banana", "unknown device 'banana'"), ("cuda:banana", "unknown device")]
                         + ([] if torch.cuda.is_available() else [("cuda", "no CUDA GPU")]))
def test_14_a_missing_or_invalid_device_is_one_line(tmp_path, device, message):
    assert_one_line_error(run_cli("cka", VIT, "--out", tmp_path, "--device", device, *SYNTHETIC), message)


@pytest.mark.parametrize("option, value, message", [
    ("--lr", "-1", "lr must be a positive"),
    ("--batch-size", "0", "batch_size must be an integer >= 1"),
    ("--epochs", "0", "epochs must be an integer >= 1"),
    ("--steps", "0", "steps must be an integer >= 1"),
])
def test_14_15_training_settings_that_train_nothing_are_refused(tmp_path, option, value, message):
    result = run_cli("train", "vit", "--out", tmp_path / "run", "--data", DATA, option, value)
    assert_one_line_error(result, message)
    assert not (tmp_path / "run" / MODEL_FILE).exists()


# --------------------------------------------------------------------------------------- 15. small but real


@pytest.mark.parametrize("spec, message", [
    ("zoo:vit-cls?colour=red", "unknown option(s) colour"),
    ("zoo:vit-cls?pretrained=1", "unknown option(s) pretrained"),
    ("zoo:vit-cls?seed=3", "seed=N only applies to the random-init baseline"),
    ("zoo:vit-cls?init=random&init=trained", "'init' is given twice"),
    ("seelike:vit?depth=2&depth=3", "'depth' is given twice"),
    ("torchvision:resnet18?pretrained=maybe", "pretrained must be 1 or 0"),
    ("", "empty model spec"),
    ("  ", "empty model spec"),
])
def test_15_model_spec_options_are_never_ignored(spec, message):
    with pytest.raises(ModelLoadError) as caught:
        load_model(spec)
    assert message in str(caught.value)


def test_15_a_training_folder_loads_as_its_model(tmp_path):
    Trainer(tiny_config(epochs=1), tmp_path).run()
    assert load_model(str(tmp_path)).family == "vit"
    result = run_cli("layers", str(tmp_path))
    assert result.exit_code == 0 and "blocks.1" in result.output
    (tmp_path / MODEL_FILE).unlink()
    with pytest.raises(ModelLoadError, match="training run that has not finished"):
        load_model(str(tmp_path))


def test_15_a_rerun_into_the_same_out_clears_the_previous_runs_figures(tmp_path):
    user_file = tmp_path / "notes.txt"
    tmp_path.mkdir(exist_ok=True)
    user_file.write_text("mine")
    assert run_cli("cka", VIT, CNN, "--out", tmp_path, *SYNTHETIC).exit_code == 0
    pair = sorted(p.name for p in tmp_path.glob("cka_*vs*.png"))
    assert pair
    assert run_cli("cka", VIT, "--out", tmp_path, *SYNTHETIC).exit_code == 0
    assert not any((tmp_path / name).exists() for name in pair)
    assert user_file.read_text() == "mine" and (tmp_path / "result.json").exists()


def test_15_results_honour_the_umask(tmp_path):
    from seelike.results import atomic_write_text

    previous = os.umask(0o022)
    try:
        Result(arrays={"x": np.zeros(2)}).save(tmp_path)
        atomic_write_text(tmp_path / "report.html", "<p>report</p>")  # reports, study documents, checkpoint state
    finally:
        os.umask(previous)
    modes = {oct((tmp_path / name).stat().st_mode & 0o777) for name in ("result.json", "result.npz", "report.html")}
    assert modes == {"0o644"}


def test_15_the_help_cites_methods_notes_that_ship_with_the_code():
    root = Path(__file__).resolve().parents[1]
    assert (root / "docs" / "methods.md").is_file()
    for command in ("attention", "heads", "erf"):
        text = run_cli(command, "--help").output
        assert "PAPER.md" not in text and "docs/methods.md" in text, command


# ---------------------------------------------------------------------- import cycles: reading never trains


def test_loading_a_zoo_model_does_not_import_the_trainer():
    code = ("import sys, seelike.models; seelike.models.load_model('zoo:vit-cls'); "
            "print(sorted(m for m in sys.modules if m in ('seelike.train', 'seelike.zoo_training')))")
    import seelike

    env = {**os.environ, "PYTHONPATH": str(Path(seelike.__file__).resolve().parents[1])}  # the seelike under test
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout
    assert output.strip() == "[]"


def test_models_zoo_and_train_import_each_other_in_no_cycle():
    import ast

    import seelike

    source = Path(seelike.__file__).resolve().parent
    graph: dict[str, set[str]] = {}
    for path in source.rglob("*.py"):
        parts = path.relative_to(source.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seelike"):
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names if alias.name.startswith("seelike")}
        graph[module] = imported

    def reaches(start: str, goal: str) -> bool:
        seen, stack = set(), [start]
        while stack:
            for nxt in graph.get(stack.pop(), ()):
                if nxt == goal:
                    return True
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return False

    for module in ("seelike.models", "seelike.models.zoo", "seelike.train", "seelike.recipes", "seelike.zoo_training"):
        assert not reaches(module, module), f"{module} imports itself through a cycle"


def test_zoo_train_publishes_beside_its_runs_not_over_the_shipped_zoo(tmp_path, monkeypatch):
    import seelike.zoo_training as zoo_training

    monkeypatch.setitem(zoo_training.RECIPES, "tiny", (tiny_config(epochs=1), None, "a tiny test recipe"))
    try:
        result = run_cli("zoo", "train", "tiny", "--runs", tmp_path / "runs")
        assert result.exit_code == 0, result.output
        published = tmp_path / "runs" / "published"
        manifest = json.loads((published / "tiny.json").read_text())
        assert manifest["sha256"] == zoo.sha256(published / "tiny.safetensors")
        assert load_model(str(published / "tiny.safetensors")).family == "vit"
        assert not (zoo.zoo_dir() / "tiny.safetensors").exists()
    finally:  # never leave a test model in the package, whatever the code under test did
        for suffix in (".safetensors", ".json"):
            (zoo.zoo_dir() / f"tiny{suffix}").unlink(missing_ok=True)
