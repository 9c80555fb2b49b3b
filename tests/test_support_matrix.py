"""The support matrix (issue 17): every family × every analysis command, end to end.

Each family of ``support_matrix.FAMILIES`` is built at random init from an in-code config (no
download; Hugging Face ones through ``save_pretrained`` and the ``hf:PATH`` loader), its roles and
token layout are checked, then every analysis command runs on a few synthetic images: where the
matrix says ✔ it must succeed with a result of the expected shape, where it says n/a it must fail
with a one-line message. The README's table is written from the same data and checked here.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from support_matrix import ANALYSES, FAMILIES, Family, family_id, markdown_table, replace_table
from typer.testing import CliRunner

from seelike import load_result
from seelike.capture import Capture
from seelike.cli import app
from seelike.models import load_model

DATA = ["--data", "synthetic:n=48,size=32,channels=3,classes=4,seed=0"]
CNN = "timm:resnet10t?pretrained_cfg_overlay={\"input_size\":[3,32,32]}"  # the CNN side of `seelike heads`
PRENORM_ROLES = {"input", "norm1", "attn", "attn_residual", "norm2", "mlp", "output"}
ATTENTION_ROLES = {"attn_probs"}
RESIDUAL_ROLES = {"input", "shortcut", "branch", "output"}


def _with(spec: str, query: str) -> str:
    return f"{spec}{'&' if '?' in spec else '?'}{query}"


def _commands(spec: str) -> dict[str, list[str]]:
    return {
        "cka": ["cka", spec, "--n", "16", "--batch-size", "8"],
        "attention": ["attention", spec, "--n", "8", "--batch-size", "8"],
        "heads": ["heads", spec, CNN, "--n", "16", "--batch-size", "8"],
        "erf": ["erf", spec, "--n", "4", "--batch-size", "4", "--channels", "sum"],
        "skips": ["skips", spec, "--n", "8", "--batch-size", "8"],
        "localize": ["localize", spec, "--n", "16", "--batch-size", "8"],
        "probe": ["probe", spec, "--n-train", "24", "--n-test", "16", "--shots", "2", "--samples", "1", "--batch-size", "8"],
        "datascale": ["datascale", spec, _with(spec, "init=random&seed=1"), "--baseline", _with(spec, "init=random&seed=2"),
                      "--n", "16", "--batch-size", "8"],
    }


def _check_result(analysis: str, out: Path, blocks: int, attention_blocks: int, input_size: tuple[int, int, int]) -> None:
    """The result of ``analysis`` has one entry per block (or per attention block) of the model."""
    result = load_result(out)
    if analysis == "cka":
        assert result.matrix.shape == (blocks, blocks)
        assert np.allclose(np.diag(result.matrix), 1.0, atol=1e-6)
    elif analysis == "attention":
        assert result.distance.shape[0] == attention_blocks
        assert np.isfinite(result.distance[:, 0]).all() and (result.distance[:, 0] >= 0).all()
    elif analysis == "heads":
        assert result.cka.ndim == 2 and np.isfinite(result.cka).all()
    elif analysis == "erf":
        assert result.maps.shape == (blocks, *input_size[1:])
    elif analysis == "skips":
        assert len(result.blocks) == blocks
    elif analysis == "localize":
        assert len(result.layers) == min(2, blocks)
    elif analysis == "probe":
        assert len(result.blocks) == blocks
    elif analysis == "datascale":
        assert result["per_block_cka"].shape == (1, blocks)


@pytest.mark.parametrize("family", FAMILIES, ids=family_id)
def test_family_runs_every_applicable_analysis(family: Family, tmp_path: Path) -> None:
    if family.loader == "hf":
        pytest.importorskip("transformers")
    spec = family.build(tmp_path / "model")
    model = load_model(spec)

    # roles: every block has the timm vocabulary (pre-norm blocks) or the residual-unit one (CNNs)
    attention_blocks = len(model.attention_layers())
    for block in range(model.num_blocks):
        roles = {layer.role for layer in model.layers if layer.block == block}
        expected = RESIDUAL_ROLES if "attention" not in family.applies else PRENORM_ROLES | ATTENTION_ROLES
        assert expected <= roles, f"block {block} of {spec} lacks roles {expected - roles}"
        assert ("heads" in roles) == ("heads" in family.applies)
    assert (attention_blocks > 0) == ("attention" in family.applies)

    # shapes: one forward pass, layers in the order the forward pass ran them
    images = torch.rand(2, 3, 32, 32)
    with Capture(model, model.layers) as capture:
        tensors = capture(images)
    assert list(tensors) == [layer.name for layer in model.layers]
    for layer in model.layers:
        tensor, layout = tensors[layer.name], model.layout_of(layer)
        if layer.kind == "tokens":
            assert tensor.shape[1] == layout.num_prefix_tokens + layout.num_patches, layer.name
        elif layer.kind == "attention":
            heads_tokens = layout.num_prefix_tokens + layout.num_patches
            assert tensor.shape[-2:] == (heads_tokens, heads_tokens)
            assert torch.allclose(tensor.sum(-1), torch.ones(()), atol=1e-5)
        elif layer.kind == "feature_map":
            assert tensor.ndim == 4

    # the roles mean what they say: the residual sums hold exactly (skip ratios and ERFs rely on them)
    for block in range(model.num_blocks):
        role = {layer.role: tensors[layer.name] for layer in model.layers if layer.block == block}
        if "attn_residual" in role:  # pre-norm block: z2 = z + attn(z), output = z2 + mlp(z2)
            torch.testing.assert_close(role["attn_residual"], role["input"] + role["attn"], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(role["output"], role["attn_residual"] + role["mlp"], atol=1e-5, rtol=1e-5)
        else:  # residual unit: output = shortcut + branch (ConvNeXt), ReLU of it (ResNet)
            total = role["shortcut"] + role["branch"]
            torch.testing.assert_close(role["output"], total if model.family == "convnext" else total.relu(), atol=1e-5, rtol=1e-5)

    runner = CliRunner()
    for analysis, arguments in _commands(spec).items():
        out = tmp_path / analysis
        run = runner.invoke(app, [*arguments, *DATA, "--out", str(out)])
        if analysis in family.applies:
            assert run.exit_code == 0, f"{analysis} on {family_id(family)}:\n{run.output}"
            _check_result(analysis, out, model.num_blocks, attention_blocks, model.preprocessing.input_size)
        else:
            assert run.exit_code == 2, f"{analysis} should not apply to {family_id(family)}:\n{run.output}"
            message = " ".join(run.output.split())  # rich wraps long lines at the terminal width
            assert message.startswith("error:") and len(re.findall(r"error:", message)) == 1, message
            assert "Traceback" not in run.output and isinstance(run.exception, SystemExit), message


def test_readme_table_is_generated_from_the_matrix() -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    assert markdown_table() in readme, "the README's support matrix is stale: run `python tests/support_matrix.py --write README.md`"
    assert replace_table(readme) == readme


def test_matrix_covers_every_family_of_issue_17() -> None:
    names = {(family.loader, family.name.split(" ")[0]) for family in FAMILIES}
    for loader, name in [("hf", "ViT"), ("hf", "DeiT"), ("hf", "BEiT"), ("hf", "DINOv2"), ("hf", "CLIP"), ("hf", "SigLIP"),
                         ("hf", "ResNet"), ("hf", "ConvNeXt"), ("hf", "Swin"), ("timm", "Swin"), ("timm", "ConvNeXt"),
                         ("timm", "DeiT"), ("timm", "CLIP")]:
        assert (loader, name) in names
    assert set(ANALYSES) >= {"cka", "attention", "erf", "skips", "localize", "probe"}


@pytest.mark.parametrize("name", ["eva02_tiny_patch14_224", "eva_giant_patch14_224", "beit_base_patch16_224"])
def test_timm_eva_and_beit_attention_maps_match_their_own_softmax(name):
    """EVA-02 rotates q and k (rotary embedding), EVA and BEiT keep separate q/v biases, BEiT adds a
    relative position bias: the recomputed maps must equal the ones their unfused attention computes."""
    model = load_model(f"timm:{name}?img_size=28&patch_size=7&depth=2&embed_dim=32&num_heads=2&seed=1")
    modules = dict(model.module.named_modules())
    reference: list[torch.Tensor] = []
    for layer in model.attention_layers():
        attn = modules[layer.module]
        with torch.no_grad():  # biases and position-bias tables start at zero: make them count
            for bias in (attn.q_bias, attn.v_bias, getattr(attn, "relative_position_bias_table", None)):
                if bias is not None:
                    bias.normal_()
        attn.fused_attn = False  # the softmax runs in Python, where attn_drop sees it
        attn.attn_drop.register_forward_hook(lambda module, inputs, output: reference.append(output))
    with Capture(model, model.attention_layers()) as capture:
        maps = list(capture(torch.rand(2, 3, 28, 28)).values())
    assert len(maps) == len(reference) == 2
    for ours, theirs in zip(maps, reference):
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("kind", ["attention_distance", "skip_norms"])
def test_swin_state_merges_like_one_pass(kind):
    """Swin's per-stage head and token counts (NaN-padded state) merge across halves of the data like one pass."""
    from seelike.analyses.attention_distance import AttentionDistance
    from seelike.analyses.skip_norms import SkipNorms
    from seelike.data import load_dataset
    from seelike.driver import feed

    model = load_model(next(f for f in FAMILIES if family_id(f) == "timm-swin").build(Path()))
    data = load_dataset("synthetic:n=16,size=32,channels=3,classes=2,seed=0")
    order = torch.arange(16)
    batches = [(data.images(order[i:i + 4]), torch.as_tensor(data.labels)[order[i:i + 4]], order[i:i + 4]) for i in range(0, 16, 4)]
    make = (lambda: AttentionDistance(model)) if kind == "attention_distance" else (lambda: SkipNorms(model))
    whole, first, second = make(), make(), make()
    feed([whole], batches, progress=False)
    feed([first], batches[:1], progress=False)
    feed([second], batches[1:], progress=False)
    first.merge(second)
    for name, value in whole.state_dict().items():
        torch.testing.assert_close(first.state_dict()[name].double(), value.double(), rtol=1e-12, atol=1e-12, equal_nan=True)
    assert first.num_images == whole.num_images == 16
    result = whole.compute()
    if kind == "attention_distance":  # stage 0 has 2 heads, stage 1 has 4: NaN only beyond a stage's heads
        assert np.isnan(result.distance).sum(axis=1).tolist() == [2, 2, 0, 0]
    else:  # stage 0 has 16×16 tokens, stage 1 8×8: the spatial mean reads each block's own tokens
        assert np.isfinite(result["attention_spatial"]).all() and np.isnan(result["attention_per_token"][2:, 64:]).all()
