"""Hugging Face ``hf:`` models (issue 17): install hint, preprocessing from the processor config,
attention probabilities with fast attention left on, Swin window distances by hand, and agreement
of timm and HF loaders on shared weights."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from support_matrix import FAMILIES, family_id

from seelike.analyses.attention_distance import attention_distances
from seelike.analyses.layer_similarity import layer_similarity
from seelike.capture import Capture
from seelike.data import load_dataset
from seelike.errors import ModelLoadError
from seelike.models import load_model

transformers = pytest.importorskip("transformers")

ATTENTION_FAMILIES = [f for f in FAMILIES if f.loader == "hf" and "attention" in f.applies]


def test_without_transformers_an_hf_spec_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers now raises ImportError
    with pytest.raises(ModelLoadError, match=r"pip install 'seelike\[hf\]'"):
        load_model("hf:google/vit-base-patch16-224")


def test_transformers_4_is_refused_with_the_version_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(sys.modules["transformers"], "__version__", "4.46.0")  # the module loaded now (tests may reload it)
    with pytest.raises(ModelLoadError, match=r"transformers>=5"):
        load_model(f"hf:{tmp_path}")


def test_a_hub_id_loads_from_the_offline_cache_and_a_missing_one_says_where_to_get_it(tmp_path):
    """``hf:ORG/NAME`` goes through transformers' own hub loading: here from a cache laid out as the hub
    client writes it, with HF_HUB_OFFLINE=1 (set before import, so in a fresh process)."""
    repo, revision = tmp_path / "hub" / "models--tiny-org--tiny-vit", "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
    transformers.ViTModel(config).save_pretrained(snapshot)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(snapshot)
    code = (
        "from seelike.models import load_model\n"
        "from seelike.errors import ModelLoadError\n"
        "model = load_model('hf:tiny-org/tiny-vit')\n"
        "print(model.name, model.num_blocks, model.token_layout.grid)\n"
        "try:\n    load_model('hf:tiny-org/absent')\nexcept ModelLoadError as error:\n    print(error)\n"
    )
    src = str(Path(__file__).parents[1] / "src")
    env = {"PYTHONPATH": src, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HOME": str(tmp_path / "home"),
           "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    loaded, missing = out.stdout.splitlines()[:2]
    assert loaded == "tiny-vit 2 (4, 4)"
    assert "could not load hf:tiny-org/absent" in missing and "Hugging Face cache" in missing


def test_a_folder_without_a_model_is_refused_with_what_to_save(tmp_path):
    with pytest.raises(ModelLoadError, match="preprocessor_config.json"):
        load_model(f"hf:{tmp_path}")


def test_a_classification_checkpoint_loads_its_base_model_and_missing_block_weights_are_refused(tmp_path):
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                    intermediate_size=64, num_labels=5)
    classifier = transformers.ViTForImageClassification(config).eval()
    classifier.save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    model = load_model(f"hf:{tmp_path}")  # the pooler is missing from the checkpoint: unused, so accepted
    images = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.module(images).last_hidden_state, classifier.vit(images).last_hidden_state)
    state = {k: v for k, v in classifier.state_dict().items() if "layers.1.mlp" not in k}
    classifier.save_pretrained(tmp_path / "partial", state_dict=state)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "partial")
    with pytest.raises(ModelLoadError, match=r"lacks 4 weights of the vision model \(layers.1.mlp"):
        load_model(f"hf:{tmp_path / 'partial'}")


def test_a_model_type_seelike_has_not_checked_is_refused(tmp_path):
    """DINOv3 has the same block names as DINOv2 but rotates q and k: reading it as DINOv2 would give wrong maps."""
    config = transformers.DINOv3ViTConfig(num_hidden_layers=1, hidden_size=32, num_attention_heads=2, intermediate_size=64,
                                          image_size=32, patch_size=8)
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    with pytest.raises(ModelLoadError, match="model_type 'dinov3_vit'.*timm:NAME"):
        load_model(f"hf:{tmp_path}")


def test_unknown_options_are_refused(tmp_path):
    spec = next(f for f in FAMILIES if family_id(f) == "hf-vit").build(tmp_path)
    with pytest.raises(ModelLoadError, match="unknown option"):
        load_model(f"{spec}?img_size=64")


def test_preprocessing_comes_from_the_image_processor_config(tmp_path):
    config = transformers.ViTConfig(image_size=48, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    transformers.ViTModel(config).save_pretrained(tmp_path)
    mean, std = [0.1, 0.2, 0.3], [0.4, 0.5, 0.6]
    transformers.CLIPImageProcessor(size={"shortest_edge": 56}, crop_size={"height": 48, "width": 48}, image_mean=mean, image_std=std,
                                    resample=3).save_pretrained(tmp_path)
    model = load_model(f"hf:{tmp_path}")
    assert model.preprocessing.input_size == (3, 48, 48)  # the centre crop, not the resize target
    assert model.preprocessing.mean == pytest.approx(tuple(mean)) and model.preprocessing.std == pytest.approx(tuple(std))
    assert model.preprocessing.interpolation == "bicubic"
    assert model.token_layout.grid == (6, 6) and model.token_layout.num_prefix_tokens == 1


def test_random_init_is_seeded_and_differs_from_the_saved_weights(tmp_path):
    spec = next(f for f in FAMILIES if family_id(f) == "hf-vit").build(tmp_path)
    saved, again = load_model(spec), load_model(f"{spec}?init=random&seed=1")
    assert again.fingerprint() == load_model(f"{spec}?init=random&seed=1").fingerprint()
    assert again.fingerprint() != saved.fingerprint()


@pytest.mark.parametrize("family", ATTENTION_FAMILIES, ids=family_id)
def test_attention_probabilities_match_eager_attention_and_outputs_are_unchanged(family, tmp_path):
    """Recomputed from q and k with SDPA left on, the maps equal what eager attention returns."""
    model = load_model(family.build(tmp_path))
    module = model.module
    assert module.config._attn_implementation == "sdpa"  # the model keeps its fast attention
    torch.manual_seed(0)
    with torch.no_grad():  # position bias tables start at zero: make them count
        for name, parameter in module.named_parameters():
            if "relative_position_bias_table" in name:
                parameter.normal_()
    images = torch.rand(3, 3, 32, 32)
    pixels = model.preprocess(images)
    with torch.no_grad():
        before = module(pixels).last_hidden_state
    with Capture(model, model.attention_layers()) as capture:
        maps = list(capture(images).values())
    modules = dict(module.named_modules())
    reference: list[torch.Tensor] = []  # eager attention returns (output, weights) from every attention module
    handles = [modules[layer.module].register_forward_hook(lambda m, i, o: reference.append(o[1])) for layer in model.attention_layers()]
    try:
        with torch.no_grad():
            after = module(pixels).last_hidden_state
            reference.clear()
            module.set_attn_implementation("eager")
            eager = module(pixels).last_hidden_state
            module.set_attn_implementation("sdpa")
    finally:
        for handle in handles:
            handle.remove()
    assert torch.equal(before, after), "capturing changed the model's outputs"
    torch.testing.assert_close(eager, before, atol=1e-5, rtol=1e-5)
    assert len(reference) == len(maps) and all(r is not None for r in reference)
    for ours, theirs in zip(maps, reference):
        torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=1e-4)


# -- Swin: attention distance within windows, by hand --------------------------------------------
# A 16 px image, patch 4: a 4×4 grid (4 px per patch), windows of 2×2, blocks 0 (plain) and 1 (shifted
# by 1). With q = k = 0 and no position bias every head attends uniformly within its window, except
# across the shifted-window mask. Plain windows: each query averages the distances to the 4 tokens
# of its window, (0 + 4 + 4 + 4√2) / 4 px. Shifted: of the 4 windows (in the shifted frame) one is whole
# ((0 + 4 + 4 + 4√2)/4 per query), two are split into pairs (2 px: half of 0 and 4) and one into
# single tokens (0 px): (4·(2 + √2) + 4·2 + 4·2 + 0) / 16 px.
PLAIN = (0 + 4 + 4 + 4 * math.sqrt(2)) / 4
SHIFTED = (4 * PLAIN + 4 * 2 + 4 * 2 + 0) / 16


def _zero_attention(module: torch.nn.Module) -> None:
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if any(key in name for key in ("q_proj", "k_proj", "relative_position_bias_table")) or ".qkv." in name:
                if ".qkv." in name:  # timm: q and k are the first two thirds of the fused projection
                    parameter[: 2 * parameter.shape[0] // 3].zero_()
                else:
                    parameter.zero_()


def _swin_hf(folder: Path) -> str:
    config = transformers.SwinConfig(image_size=16, patch_size=4, embed_dim=4, depths=[2], num_heads=[1], window_size=2)
    module = transformers.SwinModel(config)
    _zero_attention(module)
    module.save_pretrained(folder)
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(folder)
    return f"hf:{folder}"


@pytest.mark.parametrize("loader", ["hf", "timm"])
def test_swin_attention_distance_within_windows_matches_the_hand_computed_case(loader, tmp_path):
    if loader == "hf":
        model = load_model(_swin_hf(tmp_path))
    else:
        model = load_model('timm:swin_tiny_patch4_window7_224?img_size=16&patch_size=4&window_size=2&embed_dim=4&depths=[2]'
                           '&num_heads=[1]')
        _zero_attention(model.module)
    windows = [model.layout_of(layer) for layer in model.attention_layers()]
    assert [(w.grid, w.patch_size) for w in windows] == [((2, 2), 4), ((2, 2), 4)]
    result = attention_distances(model, load_dataset("synthetic:n=8,size=16,channels=3,classes=2,seed=0"), batch_size=4)
    np.testing.assert_allclose(result.distance[:, 0], [PLAIN, SHIFTED], rtol=1e-6)
    assert result.metadata["n"] == 8


# -- timm and HF agree on shared weights ------------------------------------------------------
def _timm_to_hf_vit(state: dict[str, torch.Tensor], depth: int) -> dict[str, torch.Tensor]:
    """timm ``VisionTransformer`` weights under transformers' ``ViTModel`` names."""
    out = {
        "embeddings.cls_token": state["cls_token"],
        "embeddings.position_embeddings": state["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": state["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": state["patch_embed.proj.bias"],
        "layernorm.weight": state["norm.weight"],
        "layernorm.bias": state["norm.bias"],
    }
    for i in range(depth):
        t, h = f"blocks.{i}", f"layers.{i}"
        for kind in ("weight", "bias"):
            q, k, v = state[f"{t}.attn.qkv.{kind}"].chunk(3, dim=0)
            out |= {f"{h}.attention.q_proj.{kind}": q, f"{h}.attention.k_proj.{kind}": k, f"{h}.attention.v_proj.{kind}": v,
                    f"{h}.attention.o_proj.{kind}": state[f"{t}.attn.proj.{kind}"],
                    f"{h}.layernorm_before.{kind}": state[f"{t}.norm1.{kind}"], f"{h}.layernorm_after.{kind}": state[f"{t}.norm2.{kind}"],
                    f"{h}.mlp.fc1.{kind}": state[f"{t}.mlp.fc1.{kind}"], f"{h}.mlp.fc2.{kind}": state[f"{t}.mlp.fc2.{kind}"]}
    return out


def test_timm_and_hf_loaders_give_the_same_cka_and_attention_distances(tmp_path):
    """A ViT-B/16-shaped model (tiny width) at random init in timm, its weights copied into transformers."""
    depth = 3
    timm_model = load_model(f"timm:vit_base_patch16_224?img_size=32&patch_size=8&depth={depth}&embed_dim=48&num_heads=3&seed=3")
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=48, num_hidden_layers=depth, num_attention_heads=3,
                                    intermediate_size=192, layer_norm_eps=1e-6, hidden_act="gelu")
    hf_module = transformers.ViTModel(config, add_pooling_layer=False)
    missing, unexpected = hf_module.load_state_dict(_timm_to_hf_vit(timm_model.module.state_dict(), depth), strict=False)
    assert not missing and not unexpected
    hf_module.save_pretrained(tmp_path)
    pre = timm_model.preprocessing
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=list(pre.mean), image_std=list(pre.std),
                                   resample=3 if pre.interpolation == "bicubic" else 2).save_pretrained(tmp_path)
    hf_model = load_model(f"hf:{tmp_path}")
    assert hf_model.preprocessing == pre and hf_model.token_layout == timm_model.token_layout

    data = load_dataset("synthetic:n=32,size=32,channels=3,classes=4,seed=0")
    similarity = [layer_similarity([m], data, batch_size=16, layers="all").block(m.name)[0] for m in (timm_model, hf_model)]
    assert similarity[0].shape == similarity[1].shape == (8 * depth, 8 * depth)  # every sub-layer role, same order
    np.testing.assert_allclose(similarity[0], similarity[1], atol=1e-5)
    distances = [attention_distances(m, data, batch_size=16) for m in (timm_model, hf_model)]
    for key in ("distance", "renormalised", "prefix_mass"):
        np.testing.assert_allclose(distances[0][key], distances[1][key], atol=1e-5)
