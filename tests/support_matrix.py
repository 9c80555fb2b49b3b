"""The support matrix: each model family × each analysis command, as data.

One source for two things: ``tests/test_support_matrix.py`` builds every family here at random
init from its in-code config (no download; Hugging Face ones written with ``save_pretrained``
to a temporary folder) and runs every command, expecting success where the matrix says ✔ and a
one-line "does not apply" error where it says n/a; and the README's table, written from the same
data by ``python tests/support_matrix.py --write README.md`` (a test checks that it matches).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

#: analysis commands, in the README's column order
ANALYSES = ("cka", "attention", "heads", "erf", "skips", "localize", "probe", "datascale")
ALL = frozenset(ANALYSES)
NO_ATTENTION = ALL - {"attention", "heads"}  # CNNs
WINDOWS = ALL - {"heads"}  # Swin: per-head outputs live in windows, not per image


@dataclass(frozen=True)
class Family:
    """A model family: how to build a tiny random-init instance, and which analyses apply to it."""

    name: str
    loader: str  # "timm" or "hf"
    build: Callable[[Path], str]  # writes what it needs under the folder, returns the model spec
    applies: frozenset[str]
    note: str = ""


def timm_spec(spec: str) -> Callable[[Path], str]:
    return lambda folder: spec


def hf_build(config: Callable[[], object], processor: Callable[[], object], tower: str | None = None) -> Callable[[Path], str]:
    """Build a transformers model from ``config()`` at random init and save it with its image processor."""

    def build(folder: Path) -> str:
        import torch
        import transformers

        torch.manual_seed(0)
        configuration = config()
        model_class = getattr(transformers, tower) if tower else transformers.AutoModel
        module = model_class(configuration) if tower else model_class.from_config(configuration)
        module.save_pretrained(folder)
        processor().save_pretrained(folder)
        return f"hf:{folder}"

    return build


def _t():  # transformers, imported when a family is built (the matrix itself needs no extra)
    import transformers

    return transformers


TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
SIZE32 = {"height": 32, "width": 32}
TIMM_TINY = "img_size=32&patch_size=8&depth=2&embed_dim=32&num_heads=2"
SMALL_INPUT = 'pretrained_cfg_overlay={"input_size":[3,64,64]}'

FAMILIES: tuple[Family, ...] = (
    # -- timm ---------------------------------------------------------------------------------
    Family("ViT", "timm", timm_spec(f"timm:vit_tiny_patch16_224?{TIMM_TINY}"), ALL),
    Family("DeiT distilled", "timm", timm_spec(f"timm:deit_tiny_distilled_patch16_224?{TIMM_TINY}"), ALL, "CLS + distillation token"),
    Family("ViT + registers", "timm", timm_spec(f"timm:vit_small_patch14_reg4_dinov2?{TIMM_TINY}"), ALL, "4 register tokens"),
    Family("CLIP ViT", "timm", timm_spec(f"timm:vit_base_patch16_clip_224?{TIMM_TINY}"), ALL),
    Family("EVA-02", "timm", timm_spec("timm:eva02_tiny_patch14_224?img_size=28&patch_size=7&depth=2&embed_dim=32&num_heads=2"), ALL,
           "rotary position embedding"),
    Family("BEiT", "timm", timm_spec("timm:beit_base_patch16_224?img_size=32&patch_size=8&depth=2&embed_dim=32&num_heads=2"), ALL,
           "relative position bias, layer scale"),
    Family("Swin", "timm", timm_spec("timm:swin_tiny_patch4_window7_224?img_size=32&patch_size=2&window_size=4&embed_dim=8"
                                     "&depths=[2,2]&num_heads=[2,4]"), WINDOWS, "attention within windows"),
    Family("ConvNeXt", "timm", timm_spec(f"timm:convnext_atto?depths=[1,1,1,1]&dims=[8,8,16,16]&{SMALL_INPUT}"), NO_ATTENTION),
    Family("ResNet", "timm", timm_spec(f"timm:resnet10t?{SMALL_INPUT}"), NO_ATTENTION),
    # -- Hugging Face transformers ----------------------------------------------------------
    Family("ViT", "hf", hf_build(lambda: _t().ViTConfig(image_size=32, patch_size=8, **TINY),
                                 lambda: _t().ViTImageProcessor(size=SIZE32)), ALL),
    Family("DeiT", "hf", hf_build(lambda: _t().DeiTConfig(image_size=32, patch_size=8, **TINY),
                                  lambda: _t().DeiTImageProcessor(size=SIZE32, crop_size=SIZE32)), ALL, "CLS + distillation token"),
    Family("BEiT", "hf", hf_build(lambda: _t().BeitConfig(image_size=32, patch_size=8, use_relative_position_bias=True,
                                                          layer_scale_init_value=0.1, **TINY),
                                  lambda: _t().BeitImageProcessor(size=SIZE32, crop_size=SIZE32)), ALL,
           "relative position bias, layer scale"),
    Family("DINOv2", "hf", hf_build(lambda: _t().Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                              num_attention_heads=2, mlp_ratio=2),
                                    lambda: _t().BitImageProcessor(size={"shortest_edge": 32}, crop_size=SIZE32)), ALL),
    Family("DINOv2 + registers", "hf", hf_build(
        lambda: _t().Dinov2WithRegistersConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, mlp_ratio=2, num_register_tokens=2),
        lambda: _t().BitImageProcessor(size={"shortest_edge": 32}, crop_size=SIZE32)), ALL, "2 register tokens"),
    Family("CLIP vision tower", "hf", hf_build(
        lambda: _t().CLIPConfig(vision_config=dict(image_size=32, patch_size=8, **TINY),
                                text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16,
                                                 vocab_size=64), projection_dim=16),
        lambda: _t().CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=SIZE32)), ALL, "from a full CLIPModel"),
    Family("SigLIP vision tower", "hf", hf_build(lambda: _t().SiglipVisionConfig(image_size=32, patch_size=8, **TINY),
                                                 lambda: _t().SiglipImageProcessor(size=SIZE32), tower="SiglipVisionModel"),
           ALL, "no CLS token"),
    Family("Swin", "hf", hf_build(lambda: _t().SwinConfig(image_size=32, patch_size=2, embed_dim=8, depths=[2, 2], num_heads=[2, 4],
                                                          window_size=4),
                                  lambda: _t().ViTImageProcessor(size=SIZE32)), WINDOWS, "attention within windows"),
    Family("ConvNeXt", "hf", hf_build(lambda: _t().ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
                                      lambda: _t().ConvNextImageProcessor(size={"shortest_edge": 32})), NO_ATTENTION),
    Family("ResNet", "hf", hf_build(lambda: _t().ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1],
                                                              layer_type="bottleneck"),
                                    lambda: _t().ConvNextImageProcessor(size={"shortest_edge": 32})), NO_ATTENTION),
)

BEGIN, END = "<!-- support-matrix:begin -->", "<!-- support-matrix:end -->"


def family_id(family: Family) -> str:
    return f"{family.loader}-{re.sub(r'[^a-z0-9]+', '-', family.name.lower()).strip('-')}"


def markdown_table() -> str:
    """The README's families × analyses table (✔ / n/a), written from :data:`FAMILIES`."""
    header = ["family", "loader", *ANALYSES, "note"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for family in FAMILIES:
        marks = ["✔" if analysis in family.applies else "n/a" for analysis in ANALYSES]
        rows.append("| " + " | ".join([family.name, family.loader, *marks, family.note]) + " |")
    return "\n".join(rows)


def replace_table(text: str) -> str:
    """``text`` with the part between the support-matrix markers replaced by :func:`markdown_table`."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"the README has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{markdown_table()}\n{END}{tail}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Print the support matrix, or write it into a README between its markers.")
    parser.add_argument("--write", type=Path, help="README to update in place")
    arguments = parser.parse_args()
    if arguments.write:
        arguments.write.write_text(replace_table(arguments.write.read_text()))
    else:
        sys.stdout.write(markdown_table() + "\n")
