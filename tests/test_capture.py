"""Tests of seelike.capture: hooks registered and always removed, one forward pass per batch,
shared modules refused, nothing kept between calls, several models streamed together."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from seelike.capture import Capture, ThroughputMeter, capture_batches, forward_order
from seelike.errors import CaptureError, InvalidInputError, UnknownLayerError
from seelike.models import Layer, Model, Preprocessing, load_model
from seelike.models.adapters import describe


@pytest.fixture(scope="module")
def vit() -> Model:
    return load_model("seelike:vit?depth=3")


@pytest.fixture(scope="module")
def resnet() -> Model:
    return load_model("seelike:resnet")


def hook_count(module: nn.Module) -> int:
    """Forward hooks and pre-hooks on ``module`` and everything below it."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in module.modules())


def fashion_images(batch: int = 2, seed: int = 0) -> Tensor:
    return torch.rand(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


class SharedBlock(nn.Module):
    """Runs ``block`` twice in one forward pass (weight sharing); ``unused`` never runs."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.block(torch.relu(self.block(x)))


def shared_model(*layers: Layer) -> Model:
    module = SharedBlock().eval()
    return Model(module, "test:shared", "other", layers, Preprocessing((1, 1, 4), (0.0,), (1.0,)))


# -- hooks: registered inside, removed outside ------------------------------------------------------
def test_hooks_live_only_inside_the_with_block(vit: Model) -> None:
    before = hook_count(vit.module)
    capture = Capture(vit, vit.layers)
    assert hook_count(vit.module) == before  # nothing registered before entering
    with capture:
        assert hook_count(vit.module) > before
        capture(fashion_images())
    assert hook_count(vit.module) == before
    assert capture._tensors == {}


def test_hooks_removed_when_the_forward_raises(vit: Model) -> None:
    before = hook_count(vit.module)
    with pytest.raises(RuntimeError):
        with Capture(vit, vit.select("all")) as capture:
            capture(torch.rand(2, 3, 28, 28), preprocess=False)  # a 1-channel model fed 3 channels
    assert hook_count(vit.module) == before
    assert capture._tensors == {}


def test_hooks_and_partial_results_dropped_when_the_forward_fails_midway(vit: Model) -> None:
    def fail(module: nn.Module, inputs: object, output: object) -> None:
        raise RuntimeError("boom in block 2")

    failing = vit.module.blocks[2].register_forward_hook(fail)
    try:
        before = hook_count(vit.module)
        with pytest.raises(RuntimeError, match="boom in block 2"):
            with Capture(vit, vit.layers) as capture:
                capture(fashion_images())
        assert capture._tensors == {}  # blocks 0 and 1 had been stored: dropped
        assert hook_count(vit.module) == before
    finally:
        failing.remove()


def test_failed_call_leaves_the_capture_clean_and_usable(vit: Model) -> None:
    def fail(module: nn.Module, inputs: object, output: object) -> None:
        raise RuntimeError("boom in block 1")

    with Capture(vit, ["blocks.0", "blocks.2"]) as capture:
        failing = vit.module.blocks[1].register_forward_hook(fail)
        try:
            with pytest.raises(RuntimeError, match="boom"):
                capture(fashion_images())  # blocks.0 is stored before block 1 fails
        finally:
            failing.remove()
        assert capture._tensors == {}
        assert list(capture(fashion_images())) == ["blocks.0", "blocks.2"]  # no stale blocks.0: not "ran twice"


def test_hooks_removed_when_registering_fails(vit: Model) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("cannot hook this module")

    target = vit.module.blocks[1]
    target.register_forward_hook = refuse  # an instance attribute: only this module refuses
    try:
        with pytest.raises(RuntimeError, match="cannot hook"):
            with Capture(vit, ["blocks.0", "blocks.1", "blocks.2"]):
                pass
    finally:
        del target.register_forward_hook
    assert hook_count(vit.module) == 0


def test_module_run_twice_is_refused() -> None:
    model = shared_model(Layer("block", "block", "other"))
    with pytest.raises(CaptureError, match=r"module 'block' ran more than once in one forward pass.*shared block"):
        with Capture(model, model.layers) as capture:
            capture(torch.rand(2, 4), preprocess=False)
    assert hook_count(model.module) == 0
    assert capture._tensors == {}


def test_module_run_twice_found_by_describe() -> None:
    """The same refusal for a model the adapters describe: a ViT whose block 1 is block 0 again."""
    module = load_model("seelike:vit?depth=2").module
    module.blocks[1] = module.blocks[0]
    model = describe(module, "test:tied", Preprocessing((1, 28, 28), (0.0,), (1.0,)))
    with pytest.raises(CaptureError, match="more than once"):
        with Capture(model, ["blocks.0.mlp"]) as capture:
            capture(fashion_images(1))
    assert hook_count(module) == 0


def test_missing_module_and_layer_that_never_ran() -> None:
    model = shared_model(Layer("ghost", "no.such.module", "other"), Layer("idle", "unused", "other"))
    with pytest.raises(CaptureError, match=r"module 'no\.such\.module' of layer 'ghost' does not exist"):
        with Capture(model, [model.layers[0]]):
            pass
    assert hook_count(model.module) == 0
    with pytest.raises(CaptureError, match=r"layers \['idle'\] did not run in the forward pass"):
        with Capture(model, [model.layers[1]]) as capture:
            capture(torch.rand(1, 4), preprocess=False)
    assert hook_count(model.module) == 0


def test_capture_refuses_bad_use(vit: Model) -> None:
    capture = Capture(vit, ["blocks.0"])
    with pytest.raises(CaptureError, match="not active"):
        capture(fashion_images())
    with pytest.raises(InvalidInputError, match="no layers"):
        Capture(vit, [])
    with pytest.raises(UnknownLayerError, match="blocks.0.mlp"):
        Capture(vit, ["blocks.0.mpl"])


# -- what a call returns ----------------------------------------------------------------------------
def test_returns_the_asked_layers_in_forward_order_and_keeps_nothing(vit: Model) -> None:
    asked = ["blocks.2", "blocks.0.attn_probs", "blocks.1.mlp"]  # not in forward order
    images = fashion_images(3)
    with Capture(vit, asked) as capture:
        first = capture(images)
        assert capture._tensors == {}
        first.clear()  # the caller's dict is its own
        second = capture(images)
    assert list(second) == ["blocks.0.attn_probs", "blocks.1.mlp", "blocks.2"] == capture.order
    assert second["blocks.0.attn_probs"].shape == (3, 4, 50, 50)
    assert second["blocks.2"].shape == (3, 50, 96)
    assert all(tensor.is_inference() for tensor in second.values())
    assert capture._tensors == {}
    with torch.inference_mode(), Capture(vit, asked) as inside:  # also when the caller is in inference mode
        assert all(torch.equal(inside(images)[name], second[name]) for name in asked)
    # the last block's output really is what the head reads
    with torch.inference_mode():
        logits = vit.module(vit.preprocess(images))
        torch.testing.assert_close(vit.module.head(vit.module.norm(second["blocks.2"])[:, 0]), logits)


def test_preprocess_switch(vit: Model) -> None:
    images = fashion_images()
    with Capture(vit, ["blocks.0.input"]) as capture:
        raw = capture(images, preprocess=False)["blocks.0.input"]
        prepared = capture(images)["blocks.0.input"]
        explicit = capture(vit.preprocess(images), preprocess=False)["blocks.0.input"]
    assert torch.equal(prepared, explicit)
    assert not torch.allclose(raw, prepared)


def test_a_gradient_pass_on_cpu_runs_attention_with_the_math_kernel(vit: Model) -> None:
    """Its backward is faster on CPU than the fused kernel's; forward-only passes keep the fused kernel."""
    fused: list[bool] = []
    layer = vit.select("blocks")[0]
    handle = vit.module.get_submodule(layer.module).register_forward_pre_hook(
        lambda module, inputs: fused.append(torch.backends.cuda.flash_sdp_enabled()))
    try:
        images = torch.rand(2, *vit.preprocessing.input_size)
        with Capture(vit, [layer]) as capture:
            capture(images)
        with Capture(vit, [layer], grad=True) as capture:
            capture(images.requires_grad_(True))
    finally:
        handle.remove()
    assert fused == [True, False] and torch.backends.cuda.flash_sdp_enabled()


def test_forward_order(resnet: Model) -> None:
    shuffled = [resnet.layers[i] for i in torch.randperm(len(resnet.layers), generator=torch.Generator().manual_seed(0))]
    ordered = forward_order(resnet, shuffled)
    assert sorted(layer.name for layer in ordered) == sorted(layer.name for layer in resnet.layers)
    # layers read by the same hook (bn2 and branch) tie; the hooks themselves follow the forward pass
    assert [(layer.module, layer.hook) for layer in ordered] == [(layer.module, layer.hook) for layer in resnet.layers]
    unit = [layer.name for layer in resnet.layers if layer.block == 0]
    # an identity shortcut runs after the branch in BasicUnit.forward; input first, output last
    assert unit[0] == "stages.0.0.input" and unit[-1] == "stages.0.0"
    assert unit.index("stages.0.0.branch") < unit.index("stages.0.0.shortcut")


# -- several models, batch after batch ------------------------------------------------------------------
def test_capture_batches(vit: Model, resnet: Model) -> None:
    batches = [(fashion_images(2, seed), torch.tensor([seed, seed]), torch.tensor([2 * seed, 2 * seed + 1])) for seed in range(2)]
    vit_layers, resnet_layers = vit.select("blocks.1.attn_probs,blocks.0"), resnet.select("blocks")
    expected_keys = [f"vit/{name}" for name in ("blocks.0", "blocks.1.attn_probs")] + [f"resnet/{layer.name}" for layer in resnet_layers]
    before = hook_count(vit.module), hook_count(resnet.module)
    stream = capture_batches([vit, resnet], [vit_layers, resnet_layers], iter(batches), progress=False)
    seen = 0
    for (activations, labels, indices), (images, batch_labels, batch_indices) in zip(stream, batches):
        assert list(activations) == expected_keys
        assert labels is batch_labels and indices is batch_indices
        with Capture(resnet, resnet_layers) as alone:
            torch.testing.assert_close(activations["resnet/stages.2.1"], alone(images)["stages.2.1"], rtol=0, atol=0)
        assert all(tensor.is_inference() and tensor.shape[0] == 2 for tensor in activations.values())
        seen += 1
    assert seen == 2
    assert (hook_count(vit.module), hook_count(resnet.module)) == before


def test_capture_batches_removes_hooks_when_stopped_early(vit: Model, resnet: Model) -> None:
    batches = [(fashion_images(1, seed), torch.zeros(1), torch.zeros(1)) for seed in range(3)]
    stream = capture_batches([vit, resnet], [vit.select(), resnet.select()], batches, progress=False)
    next(stream)
    assert hook_count(vit.module) > 0
    stream.close()
    assert hook_count(vit.module) == 0 and hook_count(resnet.module) == 0


def test_capture_batches_removes_hooks_when_a_model_fails(vit: Model) -> None:
    broken = shared_model(Layer("block", "block", "other"))  # runs a module twice
    batches = [(fashion_images(1), torch.zeros(1), torch.zeros(1))]
    with pytest.raises(CaptureError, match="more than once"):
        list(capture_batches([vit, broken], [vit.select(), broken.layers], batches, progress=False))
    assert hook_count(vit.module) == 0 and hook_count(broken.module) == 0


def test_capture_batches_refuses_same_names_and_mismatched_layers(vit: Model) -> None:
    other_seed = load_model("seelike:vit?depth=3&seed=1")  # also named "vit"
    with pytest.raises(InvalidInputError, match=r"model names must be distinct, got \['vit', 'vit'\]"):
        capture_batches([vit, other_seed], [vit.select(), other_seed.select()], [])  # refused at the call
    with pytest.raises(InvalidInputError, match="1 layer lists"):
        capture_batches([vit, load_model("seelike:mixer")], [vit.select()], [])
    assert hook_count(vit.module) == 0


def test_throughput_meter_counts_images() -> None:
    meter = ThroughputMeter(enabled=False)
    meter.update(3)
    meter.update(5)
    assert meter.images == 8 and meter.rate > 0
    meter.close()


def test_throughput_meter_logs_plain_lines_when_no_bar_shows(caplog) -> None:
    import logging

    meter = ThroughputMeter(enabled=None, total=100, interval=0.0)  # pytest's stderr is no TTY
    with caplog.at_level(logging.INFO, logger="seelike.progress"):
        meter.update(25)
        meter.update(25)
    lines = [record.getMessage() for record in caplog.records if record.name == "seelike.progress"]
    assert len(lines) == 2 and lines[-1].startswith("images 50/100, ") and "img/s" in lines[-1] and "s left" in lines[-1]
    silent = ThroughputMeter(enabled=False, total=100, interval=0.0)
    with caplog.at_level(logging.INFO, logger="seelike.progress"):
        caplog.clear()
        silent.update(10)
    assert not caplog.records
