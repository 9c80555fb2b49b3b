"""The trainer: exact resume, schedule, checkpoints without pickle."""

from __future__ import annotations

import json

import pytest
import torch

from seelike.errors import InvalidInputError
from seelike.models import load_model
from seelike.train import (
    MODEL_FILE,
    STATE_FILE,
    TENSORS_FILE,
    TrainConfig,
    Trainer,
    augment_batch,
    learning_rate,
)

DATA = "synthetic:n=96,size=28,channels=1,classes=4,seed=3"
TINY_VIT = {"width": 16, "depth": 2, "heads": 2, "mlp_ratio": 2.0}


def config(**overrides) -> TrainConfig:
    settings = dict(arch="vit", model=TINY_VIT, data=DATA, epochs=2, batch_size=16, lr=3e-3, warmup_steps=3, augment="crop-flip")
    return TrainConfig(**{**settings, **overrides})


def state_of(trainer: Trainer) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in trainer.module.state_dict().items()}


TINY_RESNET = {"widths": (4, 8), "units_per_stage": (1, 1)}


@pytest.mark.parametrize("overrides", [{}, {"arch": "resnet", "model": TINY_RESNET, "bf16": True}], ids=["vit", "resnet-bf16-channels-last"])
def test_two_epochs_equal_one_epoch_resume_one_epoch(tmp_path, overrides):
    straight = Trainer(config(**overrides), tmp_path / "straight")
    straight.run()

    first = Trainer(config(**overrides), tmp_path / "resumed")
    first.directory.mkdir(parents=True)
    first.train_epoch()
    first.save()
    del first  # the process "dies" after epoch 1
    second = Trainer(config(**overrides), tmp_path / "resumed")
    assert second.resume() and second.epoch == 1
    second.run()

    assert second.step == straight.step
    a, b = state_of(straight), state_of(second)
    assert all(torch.equal(a[k], b[k]) for k in a)
    moments_a = straight.optimizer.state_dict()["state"]
    moments_b = second.optimizer.state_dict()["state"]
    assert all(torch.equal(moments_a[i]["exp_avg_sq"], moments_b[i]["exp_avg_sq"]) for i in moments_a)


def test_resume_refuses_a_different_config(tmp_path):
    trainer = Trainer(config(), tmp_path)
    trainer.directory.mkdir(parents=True, exist_ok=True)
    trainer.train_epoch()
    trainer.save()
    with pytest.raises(InvalidInputError, match="another config.*lr"):
        Trainer(config(lr=1e-3), tmp_path).resume()


def test_checkpoints_are_safetensors_and_json_and_load_as_model(tmp_path):
    summary = Trainer(config(epochs=1), tmp_path).run()
    assert (tmp_path / TENSORS_FILE).read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle
    state = json.loads((tmp_path / STATE_FILE).read_text())
    assert state["epoch"] == 1 and state["config"]["lr"] == 3e-3
    model = load_model(str(tmp_path / MODEL_FILE))
    assert model.family == "vit" and model.num_classes == 4
    assert 0 <= summary["test_accuracy"] <= 1 and summary["images_per_second"] > 0


def test_training_learns_the_synthetic_classes(tmp_path):
    summary = Trainer(config(epochs=6, augment="none"), tmp_path).run()
    assert summary["test_accuracy"] > 0.5  # 4 classes: chance is 0.25


def test_learning_rate_warms_up_then_decays_to_zero():
    rates = [learning_rate(step, 100, 1.0, 10) for step in range(100)]
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(rates[9:], rates[10:]))
    assert learning_rate(100, 100, 1.0, 10) == pytest.approx(0.0)


def test_augmentation_is_determined_by_the_generator():
    images = torch.rand(8, 1, 28, 28)
    a = augment_batch(images, "crop-flip", torch.Generator().manual_seed(1))
    b = augment_batch(images, "crop-flip", torch.Generator().manual_seed(1))
    c = augment_batch(images, "crop-flip", torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and a.shape == images.shape
    assert torch.equal(augment_batch(images, "none", torch.Generator()), images)


def test_bad_settings_are_refused():
    with pytest.raises(InvalidInputError, match="augment must be one of"):
        config(augment="mixup")
    with pytest.raises(InvalidInputError, match="fraction"):
        config(fraction=0)


def test_a_missing_or_unknown_device_is_refused_with_what_works(tmp_path):
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="no CUDA GPU.*--device cpu"):
            Trainer(config(), tmp_path, device="cuda")
    with pytest.raises(InvalidInputError, match="cpu or cuda"):
        Trainer(config(), tmp_path, device="tpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_gpu_run_resumes_on_the_cpu(tmp_path):
    first = Trainer(config(), tmp_path, device="cuda")
    first.directory.mkdir(parents=True, exist_ok=True)
    first.train_epoch()
    first.save()  # the GPU run "dies" after epoch 1
    resumed = Trainer(config(), tmp_path, device="cpu")
    summary = resumed.run()
    assert resumed.step == 2 * resumed.steps_per_epoch and summary["device"].startswith("cpu")
