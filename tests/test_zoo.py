"""The shipped zoo: every manifest's hash and forward pass, recipes, and (slow) recorded accuracies."""

from __future__ import annotations

import pytest
import torch

from seelike.errors import ModelLoadError
from seelike.models import build_module, load_model
from seelike.models.zoo import (
    RECIPES,
    manifests,
    sha256,
    zoo_checkpoint,
)
from seelike.zoo_training import verify

SHIPPED = manifests()
MANIFEST_FIELDS = {"name", "arch", "parameters", "test_accuracy", "target_accuracy", "epochs", "steps", "fraction",
                   "seed", "train_seconds", "device", "recipe", "sha256", "command"}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_model_matches_its_manifest_and_runs(name):
    manifest = SHIPPED[name]
    assert MANIFEST_FIELDS <= set(manifest)
    assert sha256(zoo_checkpoint(name)) == manifest["sha256"]
    model = load_model(f"zoo:{name}")
    assert sum(p.numel() for p in model.module.parameters()) == manifest["parameters"]
    with torch.inference_mode():
        logits = model.module(model.preprocess(torch.rand(4, 1, 28, 28)))
    assert logits.shape == (4, 10) and torch.isfinite(logits).all()
    if manifest["target_accuracy"] is not None:
        assert manifest["test_accuracy"] >= manifest["target_accuracy"], f"{name} misses its target"


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_recorded_accuracy_reproduces(name):
    report = verify(name)
    assert report["sha256_ok"] and report["accuracy_ok"], report


def test_every_recipe_builds_its_architecture():
    for name, (config, target, description) in RECIPES.items():
        module = build_module(config.arch, {"in_channels": 1, **config.model})
        assert sum(p.numel() for p in module.parameters()) > 0, name
        if config.fraction < 1:  # as many optimizer steps as the 100% model of its size
            full = RECIPES[name.rsplit("-frac", 1)[0]][0]
            assert config.steps == full.epochs * (60_000 // full.batch_size), f"{name} must take as many steps as its 100% model"


def test_unshipped_and_unknown_names_say_what_to_do(monkeypatch):
    import seelike.models.zoo as zoo

    monkeypatch.setattr(zoo, "manifests", lambda: {})
    monkeypatch.setattr(zoo, "zoo_dir", lambda: zoo.Path("/nonexistent"))
    with pytest.raises(ModelLoadError, match="seelike zoo train vit-cls --out DIR"):
        zoo_checkpoint("vit-cls")
    with pytest.raises(ModelLoadError, match="Closest: vit-cls"):
        zoo_checkpoint("vit-clss")


def test_random_init_baseline_keeps_the_architecture_and_drops_the_weights():
    if "vit-cls" not in SHIPPED:
        pytest.skip("zoo:vit-cls is not shipped yet")
    trained, random = load_model("zoo:vit-cls"), load_model("zoo:vit-cls?init=random")
    assert random.name == "vit-cls-random" and random.layer_names() == trained.layer_names()
    assert not torch.equal(trained.module.head.weight, random.module.head.weight)
