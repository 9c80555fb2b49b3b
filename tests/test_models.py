"""Tests of seelike.models: own architectures, layer discovery for timm / torchvision / own models,
roles checked numerically, attention probabilities against unfused references, load errors,
checkpoints and preprocessing. Every model is randomly initialised offline."""

from __future__ import annotations

import copy
import json
import zipfile
from collections.abc import Callable

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from seelike.capture import Capture
from seelike.errors import (
    InvalidInputError,
    ModelLoadError,
    SeelikeError,
    UnknownLayerError,
)
from seelike.models import Model, Preprocessing, load_model, save_checkpoint

IMPORTED = [
    "timm:vit_tiny_patch16_224",
    "timm:vit_tiny_patch16_224?img_size=64",  # built at another size: input size and grid follow
    "timm:vit_base_patch32_224",
    "timm:deit_tiny_distilled_patch16_224",
    "timm:resnet18",
    "timm:resnet50",
    "timm:resnetv2_50x1_bit",
    "timm:mixer_b16_224?img_size=64",  # the big ones at 64 px: same blocks, a fraction of the compute
    "torchvision:resnet18",
    "torchvision:vit_b_16?image_size=64",
]
OWN = ["seelike:vit", "seelike:vit?classifier=gap", "seelike:resnet", "seelike:mixer"]


def _tokens(count: int) -> list[str]:
    return [f"blocks.{i}" for i in range(count)]


def _units(template: str, per_stage: tuple[int, ...]) -> list[str]:
    return [template.format(s=s, u=u) for s, units in enumerate(per_stage) for u in range(units)]


#: spec → (family, block names, (num_prefix_tokens, grid, patch) or None, input size, num_classes)
EXPECTED: dict[str, tuple] = {
    "timm:vit_tiny_patch16_224": ("vit", _tokens(12), (1, (14, 14), 16), (3, 224, 224), 1000),
    "timm:vit_tiny_patch16_224?img_size=64": ("vit", _tokens(12), (1, (4, 4), 16), (3, 64, 64), 1000),
    "timm:vit_base_patch32_224": ("vit", _tokens(12), (1, (7, 7), 32), (3, 224, 224), 1000),
    "timm:deit_tiny_distilled_patch16_224": ("vit", _tokens(12), (2, (14, 14), 16), (3, 224, 224), 1000),
    "timm:resnet18": ("resnet", _units("layer{s}.{u}", (0, 2, 2, 2, 2)), None, (3, 224, 224), 1000),
    "timm:resnet50": ("resnet", _units("layer{s}.{u}", (0, 3, 4, 6, 3)), None, (3, 224, 224), 1000),
    "timm:resnetv2_50x1_bit": ("resnet", _units("stages.{s}.blocks.{u}", (3, 4, 6, 3)), None, (3, 224, 224), 1000),
    "timm:mixer_b16_224?img_size=64": ("mixer", _tokens(12), (0, (4, 4), 16), (3, 64, 64), 1000),
    "torchvision:resnet18": ("resnet", _units("layer{s}.{u}", (0, 2, 2, 2, 2)), None, (3, 224, 224), 1000),
    "torchvision:vit_b_16?image_size=64": ("vit", [f"encoder.layers.encoder_layer_{i}" for i in range(12)], (1, (4, 4), 16), (3, 64, 64), 1000),
    "seelike:vit": ("vit", _tokens(6), (1, (7, 7), 4), (1, 28, 28), 10),
    "seelike:vit?classifier=gap": ("vit", _tokens(6), (0, (7, 7), 4), (1, 28, 28), 10),
    "seelike:resnet": ("resnet", _units("stages.{s}.{u}", (2, 2, 2)), None, (1, 28, 28), 10),
    "seelike:mixer": ("mixer", _tokens(6), (0, (7, 7), 4), (1, 28, 28), 10),
}
TOKEN_ROLES = {"input", "norm1", "attn", "attn_residual", "norm2", "mlp", "output"}
RESIDUAL_ROLES = {"input", "shortcut", "branch", "output"}


@pytest.fixture(scope="module")
def loaded() -> Callable[[str], Model]:
    """Load each spec once per module (random init, offline); tests must not change the models."""
    cache: dict[str, Model] = {}

    def get(spec: str) -> Model:
        if spec not in cache:
            cache[spec] = load_model(spec)
        return cache[spec]

    return get


def _images(model: Model, batch: int = 1, seed: int = 0) -> Tensor:
    """Model-ready (already preprocessed) random inputs at the model's input size."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *model.preprocessing.input_size, generator=generator)


def _capture(model: Model, layers, images: Tensor) -> dict[str, Tensor]:
    with Capture(model, layers) as capture:
        return capture(images, preprocess=False)


def _block_index(model: Model) -> dict[int, dict[str, str]]:
    """block → role → layer name."""
    roles: dict[int, dict[str, str]] = {}
    for layer in model.layers:
        if layer.block is not None:
            roles.setdefault(layer.block, {})[layer.role] = layer.name
    return roles


# -- own models -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, shape",
    [
        ("seelike:vit", (1, 28, 28)),
        ("seelike:vit?classifier=gap", (1, 28, 28)),
        ("seelike:resnet", (1, 28, 28)),
        ("seelike:mixer", (1, 28, 28)),
        ("seelike:vit?image_size=32&in_channels=3", (3, 32, 32)),
        ("seelike:resnet?in_channels=3", (3, 32, 32)),
        ("seelike:mixer?image_size=32&in_channels=3", (3, 32, 32)),
    ],
)
def test_own_models_forward(spec: str, shape: tuple[int, int, int]) -> None:
    model = load_model(spec)
    assert model.preprocessing.input_size == shape
    images = torch.rand(2, *shape)
    with torch.inference_mode():
        logits = model.module(model.preprocess(images))
    assert logits.shape == (2, 10)
    assert torch.isfinite(logits).all()
    assert not model.module.training


def test_vit_classifiers(loaded) -> None:
    cls, gap = loaded("seelike:vit"), loaded("seelike:vit?classifier=gap")
    images = _images(cls, batch=2)
    last_cls, last_gap = _capture(cls, ["blocks.5"], images)["blocks.5"], _capture(gap, ["blocks.5"], images)["blocks.5"]
    assert last_cls.shape == (2, 50, 96) and last_gap.shape == (2, 49, 96)  # GAP: no CLS token
    with torch.inference_mode():
        torch.testing.assert_close(cls.module(images), cls.module.head(cls.module.norm(last_cls)[:, 0]))
        torch.testing.assert_close(gap.module(images), gap.module.head(gap.module.norm(last_gap).mean(dim=1)))


def test_vit_skip_switches() -> None:
    plain = load_model("seelike:vit")
    no_attention = load_model("seelike:vit?no_attention_skip=[1]")
    no_skips = load_model("seelike:vit?no_attention_skip=[1]&no_mlp_skip=[1]")
    assert no_skips.module.config.no_attention_skip == (1,) and no_skips.module.config.no_mlp_skip == (1,)
    # the switches change the wiring, not the weights
    assert plain.fingerprint() == no_attention.fingerprint() == no_skips.fingerprint()
    images = _images(plain, batch=2)
    names = ["blocks.0.input", "blocks.0.attn", "blocks.0.attn_residual"] + [
        f"blocks.1.{role}" for role in ("input", "attn", "attn_residual", "mlp")
    ] + ["blocks.1"]

    a = _capture(no_attention, names, images)
    torch.testing.assert_close(a["blocks.0.attn_residual"], a["blocks.0.input"] + a["blocks.0.attn"])  # block 0 keeps its skip
    torch.testing.assert_close(a["blocks.1.attn_residual"], a["blocks.1.attn"])  # block 1: branch only
    assert not torch.allclose(a["blocks.1.attn_residual"], a["blocks.1.input"] + a["blocks.1.attn"])
    torch.testing.assert_close(a["blocks.1"], a["blocks.1.attn_residual"] + a["blocks.1.mlp"])

    b = _capture(no_skips, names, images)
    assert torch.equal(b["blocks.1"], b["blocks.1.mlp"])
    torch.testing.assert_close(b["blocks.1.attn_residual"], b["blocks.1.attn"])

    with torch.inference_mode():
        assert not torch.allclose(plain.module(images), no_attention.module(images))


@pytest.mark.parametrize("arch", ["vit", "resnet", "mixer"])
def test_same_seed_same_weights(arch: str) -> None:
    first, again, explicit = (load_model(f"seelike:{arch}{query}") for query in ("", "", "?seed=0"))
    other = load_model(f"seelike:{arch}?seed=1")
    state, other_state = first.module.state_dict(), other.module.state_dict()
    assert all(torch.equal(state[key], value) for key, value in again.module.state_dict().items())
    assert first.fingerprint() == again.fingerprint() == explicit.fingerprint()
    assert first.fingerprint() != other.fingerprint()
    assert any(not torch.equal(state[key], other_state[key]) for key in state)


def test_loading_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(1234)
    expected = torch.rand(4)
    torch.manual_seed(1234)
    load_model("seelike:resnet?seed=7")
    assert torch.equal(torch.rand(4), expected)


# -- layer discovery ----------------------------------------------------------------------------
@pytest.mark.parametrize("spec", IMPORTED + OWN)
def test_layer_discovery(loaded, spec: str) -> None:
    model = loaded(spec)
    family, blocks, layout, input_size, num_classes = EXPECTED[spec]
    assert model.family == family
    assert model.num_blocks == len(blocks)
    assert model.layer_names("blocks") == blocks
    assert [layer.block for layer in model.block_layers()] == list(range(len(blocks)))
    assert model.preprocessing.input_size == input_size
    assert model.num_classes == num_classes
    if layout is None:
        assert model.token_layout is None
    else:
        assert (model.token_layout.num_prefix_tokens, model.token_layout.grid, model.token_layout.patch_size) == layout
        assert model.token_layout.num_patches == layout[1][0] * layout[1][1]

    names = [layer.name for layer in model.layers]
    assert len(set(names)) == len(names)
    modules = dict(model.module.named_modules())
    assert all(layer.module in modules for layer in model.layers)
    by_block = _block_index(model)
    assert sorted(by_block) == list(range(len(blocks)))
    for index, roles in by_block.items():
        if family == "resnet":
            assert RESIDUAL_ROLES <= set(roles), (index, roles)
        else:
            assert TOKEN_ROLES <= set(roles), (index, roles)
            assert roles["output"] == blocks[index]
        if family == "vit":  # torchvision's attention has no module whose input is the heads' output
            assert {"attn_probs", "mlp_hidden"} | (set() if spec.startswith("torchvision") else {"heads"}) <= set(roles)
    attention = model.attention_layers()
    assert len(attention) == (len(blocks) if family == "vit" else 0)
    assert all(layer.kind == "attention" and layer.role == "attn_probs" for layer in attention)

    # Model.layers is in the order one forward pass runs them (ResNets take any size: 64 px is enough)
    images = torch.rand(1, input_size[0], 64, 64) if family == "resnet" else _images(model)
    with Capture(model, model.layers) as capture:
        capture(images, preprocess=False)
    assert capture.order == names


def test_select(loaded) -> None:
    model = loaded("seelike:vit")
    assert model.select() == model.select("blocks") == model.block_layers()
    everything = model.select("all")
    assert [layer.name for layer in everything] == model.layer_names("all")
    assert not {"attention", "heads"} & {layer.kind for layer in everything}
    assert set(model.layer_names("blocks")) < set(model.layer_names("all"))
    assert {"blocks.0.norm1", "blocks.0.attn_residual", "blocks.0.mlp_hidden"} <= set(model.layer_names("all"))
    order = [layer.name for layer in model.layers]
    assert [order.index(layer.name) for layer in everything] == sorted(order.index(layer.name) for layer in everything)

    attention_branches = model.select("blocks.*.attn")
    assert [layer.name for layer in attention_branches] == [f"blocks.{i}.attn" for i in range(6)]
    assert all(layer.role == "attn" for layer in attention_branches)
    # names and globs, as a list or a comma-separated string; result in depth order, no duplicates
    picked = model.select("blocks.2.mlp, blocks.0.attn,blocks.0.att*")
    assert [layer.name for layer in picked] == [name for name in order if name in {"blocks.0.attn", "blocks.0.attn_probs", "blocks.0.attn_residual", "blocks.2.mlp"}]
    assert [layer.name for layer in model.select(["blocks.?.attn_probs"])] == [f"blocks.{i}.attn_probs" for i in range(6)]
    combined = model.select(["blocks", "blocks.3.attn_probs"])
    assert [layer.name for layer in combined] == [name for name in order if name in set(model.layer_names()) | {"blocks.3.attn_probs"}]


def test_unknown_layer_lists_close_names(loaded) -> None:
    model = loaded("seelike:vit")
    with pytest.raises(UnknownLayerError) as error:
        model.layer("blocks.1.attn_prob")
    message = str(error.value)
    assert isinstance(error.value, (KeyError, SeelikeError))
    assert message.startswith("seelike:vit has no layer 'blocks.1.attn_prob'")  # not quoted like a KeyError
    assert "Closest:" in message and "blocks.1.attn_probs" in message and "seelike layers seelike:vit" in message

    with pytest.raises(UnknownLayerError, match=r"no layer of seelike:vit matches 'blocks\.\*\.atn'.*blocks\.\d\.attn"):
        model.select("blocks.*.atn")
    with pytest.raises(UnknownLayerError, match="blocks.5"):
        Capture(model, ["blocks.6"])


def test_role(loaded) -> None:
    vit, resnet, mixer = loaded("seelike:vit"), loaded("seelike:resnet"), loaded("seelike:mixer")
    assert vit.role(3, "attn").name == "blocks.3.attn"
    assert vit.role(3, "attn_probs").kind == "attention"
    assert vit.role(5, "output") == vit.layer("blocks.5")
    assert resnet.role(2, "branch").name == "stages.1.0.branch"
    assert resnet.role(2, "shortcut").module == "stages.1.0.shortcut"  # a projection
    assert isinstance(dict(resnet.module.named_modules())[resnet.role(1, "shortcut").module], nn.Identity)
    assert mixer.role(0, "attn").name == "blocks.0.token_mixing"
    with pytest.raises(InvalidInputError, match=r"6 blocks \(0\.\.5\); block 6 does not exist"):
        vit.role(6, "attn")
    with pytest.raises(InvalidInputError, match=r"block 1 of seelike:vit has no role 'shortcut'; it has: .*attn_residual"):
        vit.role(1, "shortcut")


# -- attention probabilities ---------------------------------------------------------------------
def _reference_attention(attn: nn.Module, normed: Tensor) -> tuple[Tensor, Tensor]:
    """Unfused softmax(q kᵀ / √d) and v from the block's qkv weights, in float64: [B, H, T, T], [B, H, T, d]."""
    batch, tokens, width = normed.shape
    heads = attn.num_heads
    qkv = F.linear(normed.double(), attn.qkv.weight.double(), attn.qkv.bias.double())
    q, k, v = (part.reshape(batch, tokens, heads, -1).transpose(1, 2) for part in qkv.split(qkv.shape[-1] // 3, dim=-1))
    if isinstance(getattr(attn, "q_norm", None), nn.LayerNorm):  # timm qk_norm: LayerNorm over each head's dims
        q, k = (
            F.layer_norm(t, t.shape[-1:], norm.weight.double(), norm.bias.double(), norm.eps)
            for t, norm in ((q, attn.q_norm), (k, attn.k_norm))
        )
    return (q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5).softmax(dim=-1), v


@pytest.mark.parametrize(
    "spec, tokens",
    [
        ("seelike:vit", 50),
        ("timm:vit_tiny_patch16_224", 197),
        ("timm:deit_tiny_distilled_patch16_224", 198),
        ("timm:vit_tiny_patch16_224?img_size=32&init_values=0.5&qk_norm=true", 5),  # q and k normalised per head
    ],
)
def test_attention_probabilities_match_unfused_reference(loaded, spec: str, tokens: int) -> None:
    model = loaded(spec)
    blocks = model.module.blocks
    fused_before = (timm.layers.use_fused_attn(), [getattr(block.attn, "fused_attn", None) for block in blocks])
    images = _images(model, batch=2 if spec.startswith("seelike") else 1)
    with torch.inference_mode():
        expected_logits = model.module(images)
    logits: list[Tensor] = []
    handle = model.module.register_forward_hook(lambda module, inputs, output: logits.append(output))
    try:
        acts = _capture(model, model.select("blocks.*.norm1,blocks.*.attn_probs,blocks.*.heads"), images)
    finally:
        handle.remove()
    assert torch.equal(logits[0], expected_logits)  # capturing attention does not change the model's output
    assert (timm.layers.use_fused_attn(), [getattr(block.attn, "fused_attn", None) for block in blocks]) == fused_before
    if spec.startswith("timm"):
        assert fused_before[0] and all(fused_before[1])  # the fused kernel really is the one in use

    heads = blocks[0].attn.num_heads
    for index, block in enumerate(blocks):
        probs = acts[f"blocks.{index}.attn_probs"]
        assert probs.shape == (images.shape[0], heads, tokens, tokens)
        torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]), rtol=0, atol=1e-5)
        with torch.inference_mode():
            reference, v = _reference_attention(block.attn, acts[f"blocks.{index}.norm1"])
        torch.testing.assert_close(probs.double(), reference, rtol=0, atol=1e-5)
        # ... and they are the weights the (fused) forward pass used: heads == probs @ v
        merged = (reference @ v).transpose(1, 2).reshape(images.shape[0], tokens, -1)
        assert acts[f"blocks.{index}.heads"].shape == (images.shape[0], tokens, heads * block.attn.head_dim)
        torch.testing.assert_close(acts[f"blocks.{index}.heads"].double(), merged, rtol=1e-4, atol=1e-5)


def test_torchvision_attention_matches_multihead_weights(loaded) -> None:
    model = loaded("torchvision:vit_b_16?image_size=64")
    images = _images(model)
    acts = _capture(model, model.select("*.norm1,*.attn_probs,*.attn"), images)
    for index in (0, 5, 11):
        block = model.module.encoder.layers[index]
        prefix = f"encoder.layers.encoder_layer_{index}"
        normed = acts[f"{prefix}.norm1"]
        with torch.inference_mode():
            output, weights = block.self_attention(normed, normed, normed, need_weights=True, average_attn_weights=False)
        probs = acts[f"{prefix}.attn_probs"]
        assert probs.shape == (1, 12, 17, 17)
        torch.testing.assert_close(probs, weights, rtol=0, atol=1e-5)
        torch.testing.assert_close(acts[f"{prefix}.attn"], output, rtol=1e-4, atol=1e-5)


# -- roles, numerically -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec",
    [
        "seelike:vit",
        "timm:vit_tiny_patch16_224",
        "timm:vit_tiny_patch16_224?img_size=32&init_values=0.5&qk_norm=true",  # LayerScale: the branch is ls1, not attn
        "torchvision:vit_b_16?image_size=64",
        "seelike:mixer",
        "timm:mixer_b16_224?img_size=64",
    ],
)
def test_prenorm_roles(loaded, spec: str) -> None:
    model = loaded(spec)
    acts = _capture(model, model.layers, _images(model))
    mixer = model.family == "mixer"
    modules = dict(model.module.named_modules())
    blocks = _block_index(model)
    for index, roles in blocks.items():
        block_input, branch = acts[roles["input"]], acts[roles["attn"]]
        if mixer:  # the token-mixing MLP works on [B, D, T]
            assert branch.shape == block_input.transpose(1, 2).shape
            branch = branch.transpose(1, 2)
        assert block_input.shape == acts[roles["output"]].shape == branch.shape
        torch.testing.assert_close(acts[roles["attn_residual"]], block_input + branch)
        torch.testing.assert_close(acts[roles["output"]], acts[roles["attn_residual"]] + acts[roles["mlp"]])
        # the norms normalise the block's input and the attention residual
        with torch.inference_mode():
            torch.testing.assert_close(acts[roles["norm1"]], modules[model.layer(roles["norm1"]).module](block_input))
            torch.testing.assert_close(acts[roles["norm2"]], modules[model.layer(roles["norm2"]).module](acts[roles["attn_residual"]]))
        if index + 1 in blocks:
            assert torch.equal(acts[blocks[index + 1]["input"]], acts[roles["output"]])
        if "heads" in roles:
            assert acts[roles["heads"]].shape == block_input.shape  # [B, T, H * head_dim]
        if "mlp_hidden" in roles:
            assert acts[roles["mlp_hidden"]].shape[-1] > acts[roles["mlp"]].shape[-1]


def _randomise_norms(module: nn.Module) -> None:
    """Undo zero-init of the last norm / conv so branches are not zero, and make BN statistics non-trivial."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for child in module.modules():
            if isinstance(child, (nn.BatchNorm2d, nn.GroupNorm)):
                child.weight.copy_(torch.rand(child.weight.shape, generator=generator) + 0.5)
                child.bias.copy_(torch.randn(child.bias.shape, generator=generator) * 0.2)
            if isinstance(child, nn.BatchNorm2d):
                child.running_mean.copy_(torch.randn(child.running_mean.shape, generator=generator) * 0.2)
                child.running_var.copy_(torch.rand(child.running_var.shape, generator=generator) + 0.5)
            if isinstance(child, nn.Conv2d) and not child.weight.any():
                child.weight.copy_(torch.randn(child.weight.shape, generator=generator) * 0.05)


@pytest.mark.parametrize(
    "spec, activation",
    [
        ("seelike:resnet", F.relu),
        ("torchvision:resnet18", F.relu),
        ("timm:resnet18", F.relu),
        ("timm:resnet50", F.relu),  # bottlenecks: the branch ends at bn3, not bn2
        ("timm:resnetv2_50x1_bit", None),  # pre-activation units: no ReLU after the add
    ],
)
def test_residual_roles(loaded, spec: str, activation) -> None:
    model = copy.deepcopy(loaded(spec))  # a copy: its weights are changed below
    _randomise_norms(model.module)
    channels = model.preprocessing.input_size[0]
    images = torch.randn(2, channels, 64, 64, generator=torch.Generator().manual_seed(1))
    acts = _capture(model, model.layers, images)
    for index, roles in _block_index(model).items():
        total = acts[roles["shortcut"]] + acts[roles["branch"]]
        expected = activation(total) if activation else total
        torch.testing.assert_close(acts[roles["output"]], expected, rtol=1e-5, atol=1e-5)
        assert acts[roles["branch"]].abs().amax() > 1e-3  # not a zero-initialised branch
        if model.layer(roles["shortcut"]).hook == "input":
            assert torch.equal(acts[roles["shortcut"]], acts[roles["input"]])
        if "bn1" in roles:  # read before the (in-place) ReLU that follows it
            assert (acts[roles["bn1"]] < 0).any()


# -- load_model errors, checkpoints ---------------------------------------------------------------
def test_unknown_scheme() -> None:
    with pytest.raises(ModelLoadError, match=r"unknown model spec 'nope:thing'.*timm:NAME.*torchvision:NAME"):
        load_model("nope:thing")


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("timm:vit_tiny_patch16_225", r"timm has no model 'vit_tiny_patch16_225'\. Similar: vit_tiny_patch16_224"),
        ("timm:resnet_18", r"timm has no model 'resnet_18'\. Similar: .*\bresnet18\b"),
        ("torchvision:resnet_18", r"torchvision has no model 'resnet_18'\. Similar: resnet18"),
        ("seelike:vgg", r"unknown seelike architecture 'vgg'; choose one of vit, resnet, mixer"),
        ("seelike:vit?depht=3", r"unknown vit settings \['depht'\]; known: .*depth"),
        ("seelike:vit?image_size=30", r"invalid vit config .*not a multiple of patch_size"),
        ("seelike:vit?seed=abc", r"seed must be an integer"),
    ],
)
def test_load_errors(spec: str, pattern: str) -> None:
    with pytest.raises(ModelLoadError, match=pattern):
        load_model(spec)


def test_pretrained_offline_error(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict] = []

    def offline(name: str, **kwargs: object) -> nn.Module:
        calls.append({"name": name, **kwargs})
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ModelLoadError) as error:
        load_model("timm:vit_tiny_patch16_224?pretrained=1")
    message = str(error.value)
    assert "Hugging Face hub" in message and "pretrained" in message and "OSError" in message
    assert isinstance(error.value.__cause__, OSError)
    assert calls == [{"name": "vit_tiny_patch16_224", "pretrained": True}]


def test_missing_and_foreign_checkpoints(tmp_path) -> None:
    with pytest.raises(ModelLoadError, match="no checkpoint at"):
        load_model(str(tmp_path / "missing.safetensors"))
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(ModelLoadError, match="not a seelike safetensors checkpoint"):
        load_model(str(foreign))


@pytest.mark.parametrize(
    "spec, arch",
    [("seelike:vit?no_attention_skip=[1]&classifier=gap&depth=3&seed=3", "vit"), ("seelike:resnet?in_channels=3", "resnet"), ("seelike:mixer", "mixer")],
)
def test_checkpoint_round_trip(tmp_path, spec: str, arch: str) -> None:
    model = load_model(spec)
    path = save_checkpoint(tmp_path / "run" / "ckpt.safetensors", model.module, arch, model.preprocessing, {"epochs": 3})
    assert path.is_file() and not list(path.parent.glob(".*tmp"))
    raw = path.read_bytes()
    assert not zipfile.is_zipfile(path) and raw[:1] != b"\x80"  # neither torch.save's zip nor a bare pickle
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])  # safetensors: u64 length + JSON header
    seelike_header = json.loads(header["__metadata__"]["seelike"])
    assert seelike_header["arch"] == arch and seelike_header["epochs"] == 3

    loaded = load_model(str(path))
    assert loaded.name == "ckpt"
    assert loaded.module.config == model.module.config
    assert loaded.preprocessing == model.preprocessing
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.fingerprint() == model.fingerprint()
    images = torch.rand(2, *model.preprocessing.input_size)
    with torch.inference_mode():
        assert torch.equal(loaded.module(loaded.preprocess(images)), model.module(model.preprocess(images)))


# -- preprocessing --------------------------------------------------------------------------------
def test_gray_into_rgb_model_is_repeated() -> None:
    pre = Preprocessing((3, 8, 8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    gray = torch.rand(2, 1, 8, 8)
    out = pre(gray)
    assert out.shape == (2, 3, 8, 8)
    for channel in range(3):
        torch.testing.assert_close(out[:, channel], (gray[:, 0] - 0.5) / 0.25)


def test_rgb_into_gray_model_uses_luma() -> None:
    pre = Preprocessing((1, 4, 4), (0.0,), (1.0,))
    rgb = torch.zeros(3, 3, 4, 4)
    for channel in range(3):
        rgb[channel, channel] = 1.0  # pure red, green, blue
    out = pre(rgb)
    assert out.shape == (3, 1, 4, 4)
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([0.299, 0.587, 0.114]))


def test_resize_and_normalise() -> None:
    pre = Preprocessing((3, 56, 56), (0.1, 0.2, 0.3), (0.5, 1.0, 2.0))
    images = torch.rand(2, 3, 28, 28)
    out = pre(images)
    assert out.shape == (2, 3, 56, 56)
    resized = F.interpolate(images, size=(56, 56), mode="bilinear", align_corners=False, antialias=True)
    expected = (resized - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 1.0, 2.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected)
    constant = Preprocessing((1, 7, 7), (0.25,), (0.5,))(torch.full((1, 1, 28, 28), 0.75))
    torch.testing.assert_close(constant, torch.ones(1, 1, 7, 7))  # downscaling keeps a flat image flat


def test_preprocessing_rejects_other_channel_counts() -> None:
    with pytest.raises(InvalidInputError, match="expects 3-channel images, the data has 2"):
        Preprocessing((3, 8, 8), (0.5,) * 3, (0.5,) * 3)(torch.rand(1, 2, 8, 8))


def test_preprocessing_travels_with_the_model(loaded) -> None:
    vit, resnet = loaded("timm:vit_tiny_patch16_224"), loaded("torchvision:resnet18")
    assert vit.preprocessing.mean == (0.5, 0.5, 0.5) and vit.preprocessing.interpolation == "bicubic"
    assert resnet.preprocessing.mean == pytest.approx((0.485, 0.456, 0.406))
    own = loaded("seelike:resnet")
    assert own.preprocessing.mean == pytest.approx((0.2860,)) and own.preprocessing.std == pytest.approx((0.3530,))
    # Fashion-MNIST-sized gray images into a 224 px RGB model
    assert vit.preprocess(torch.rand(2, 1, 28, 28)).shape == (2, 3, 224, 224)


def test_timm_pretrained_weights_load_from_a_local_file(tmp_path):
    from safetensors.torch import save_file

    source = load_model("timm:vit_tiny_patch16_224?depth=2&seed=7")
    save_file(source.module.state_dict(), str(tmp_path / "weights.safetensors"))
    loaded = load_model(f"timm:vit_tiny_patch16_224?depth=2&pretrained=1&file={tmp_path / 'weights.safetensors'}")
    assert loaded.fingerprint() == source.fingerprint() != load_model("timm:vit_tiny_patch16_224?depth=2").fingerprint()
    with pytest.raises(ModelLoadError, match="no weights file"):
        load_model(f"timm:vit_tiny_patch16_224?pretrained=1&file={tmp_path / 'missing.safetensors'}")
    with pytest.raises(ModelLoadError, match="add pretrained=1"):
        load_model(f"timm:vit_tiny_patch16_224?file={tmp_path / 'weights.safetensors'}")
