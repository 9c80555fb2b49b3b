"""What the report calls things: a readable label and unit for every number key, and the paper's sections.

A section's number keys read ``stem(arguments)[subject]``: ``uniformity[vit]``,
``cka(block 0, block 2)[vit-noskip]``, ``probe_accuracy[vit/cls]``. The stem (before any ``(`` or
``[``) names the quantity and is the key of :data:`LABELS`; the arguments refine it; the bracketed
subject is a model's short name or a qualifier ("lower half of resnet"). A number whose stem is not
here is shown under its raw key, and a test fails, so every new number gets a label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAPER_CITATION = "Raghu et al. 2021"
PAPER_URL = "https://arxiv.org/abs/2108.08810"
PAPER_TITLE = "Do Vision Transformers See Like Convolutional Neural Networks?"
#: where the paper answers each research question (sections and figures of arXiv:2108.08810)
PAPER_SECTIONS = {
    "RQ1": "§4, Fig. 1, 2",
    "RQ2": "§5, §6, Fig. 3, 5, 6, 7, 8",
    "RQ3": "§7, Fig. 9, 10, 11",
    "RQ4": "§5.1, §8, Fig. 4, 12, 13",
    "RQ5": "appendix (MLP-Mixer)",
}

FRACTION = "fraction (0–1)"
ACCURACY = "accuracy (0–1)"

#: stem -> (label, unit); per-layer quantities say so, the unit "" means a plain number or a name
LABELS: dict[str, tuple[str, str]] = {
    # RQ1, RQ5: CKA between layers (Fig 1, 2; appendix)
    "uniformity": ("Mean CKA between distinct layers of one model (uniformity)", "CKA"),
    "best_match_vit_depth": ("Relative depth of the best-matching ViT layer, mean over the ResNet layers in the", "depth (0 = first, 1 = last)"),
    "top_third_vit_best_cka": ("Best CKA against any ResNet layer, mean over the top third of ViT layers", "CKA"),
    "lower_vit_best_cka": ("Best CKA against any ResNet layer, mean over the ViT layers below the top third", "CKA"),
    "mixer_best_cka_vs_vit": ("Best CKA of each Mixer block against any ViT block, mean over Mixer blocks", "CKA"),
    "mixer_best_cka_vs_resnet": ("Best CKA of each Mixer block against any ResNet unit, mean over Mixer blocks", "CKA"),
    "random_mixer_best_cka_vs_vit": ("Random-init Mixer: best CKA against any ViT block, mean over its blocks", "CKA"),
    "random_mixer_best_cka_vs_resnet": ("Random-init Mixer: best CKA against any ResNet unit, mean over its blocks", "CKA"),
    # RQ2: attention distance (Fig 3), local heads (Fig 5)
    "mean_distance_px": ("Mean attention distance per block (mean over heads)", "px"),
    "distance_se_px": ("Standard error of the attention distance per block (mean over heads)", "px"),
    "share_local": ("Share of local heads per block", FRACTION),
    "prefix_mass": ("Attention mass on prefix tokens (CLS) per block, mean over heads", FRACTION),
    "spearman": ("Spearman correlation of window attention distance with CKA, per lower ResNet unit", "correlation (−1–1)"),
    "head_distance_px": ("Attention distance of each first-block head", "px"),
    # RQ2: effective receptive fields (Fig 6)
    "radius_50": ("Radius holding 50% of the effective receptive field's mass, per layer", "px"),
    "radius_50_se": ("Standard error of the 50%-mass radius, per layer", "px"),
    "radius_90": ("Radius holding 90% of the effective receptive field's mass, per layer", "px"),
    "radius_90_se": ("Standard error of the 90%-mass radius, per layer", "px"),
    "outside_patch": ("Share of the effective receptive field's mass outside the centre's own patch, per layer", FRACTION),
    "outside_patch_se": ("Standard error of the share outside the centre's patch, per layer", FRACTION),
    "layers": ("Layers, in the order of the per-layer numbers", "layer names"),
    # RQ2: skip connections (Fig 7, 8)
    "attention, CLS": ("‖skip‖ / ‖attention branch‖ per block, CLS token", "ratio"),
    "attention, spatial": ("‖skip‖ / ‖attention branch‖ per block, mean over spatial tokens", "ratio"),
    "MLP, CLS": ("‖skip‖ / ‖MLP branch‖ per block, CLS token", "ratio"),
    "MLP, spatial": ("‖skip‖ / ‖MLP branch‖ per block, mean over spatial tokens", "ratio"),
    "shortcut / branch": ("‖shortcut‖ / ‖residual branch‖ per unit", "ratio"),
    "cka": ("CKA between the blocks on either side of a skip-less block", "CKA"),
    # RQ3: localization (Fig 9, 10) and probes (Fig 11)
    "share_first": ("Share of token positions most similar to their own input patch, per layer", FRACTION),
    "diagonal_gap": ("Localization CKA: own patch minus other patches, per layer", "CKA"),
    "probe_accuracy": ("Full-data linear probe test accuracy per block, readout after /", ACCURACY),
    "token_probe_accuracy": ("Per-token linear probe test accuracy per block, mean over token positions", ACCURACY),
    "lambda": ("Ridge penalty λ chosen on held-out training images, per block", "λ"),
    # RQ4: data scale (Fig 4, 12, 13)
    "per_block_cka": ("CKA to the 100%-data model per block", "CKA"),
    "changed_blocks": ("Blocks whose CKA to the 100%-data model falls beyond 2 SE of the seed baseline", "block indices"),
    "share_local_first_block": ("Share of local heads in the first block", FRACTION),
    "mean_distance_first_block_px": ("Mean attention distance in the first block (mean over heads)", "px"),
    "few_shot_accuracy": ("10-shot linear probe test accuracy per block (spatial-token mean)", ACCURACY),
    "few_shot_accuracy_middle_blocks": ("10-shot linear probe test accuracy, mean over the middle half of the blocks", ACCURACY),
}

_KEY = re.compile(r"(?P<stem>[^\[(]+?)\s*(?:\((?P<arguments>[^)]*)\))?\s*(?:\[(?P<subject>.*)\])?")


@dataclass(frozen=True)
class NumberLabel:
    """A number key taken apart: the quantity (stem), its arguments, its subject, and how the report names it."""

    quantity: str
    arguments: str
    subject: str
    label: str
    unit: str
    known: bool


def describe(key: str) -> NumberLabel:
    """The label and unit of a section's number ``key`` (the raw key, ``known=False``, for a stem without a label)."""
    match = _KEY.fullmatch(key)
    stem, arguments, subject = (match["stem"], match["arguments"] or "", match["subject"] or "") if match else (key, "", "")
    label, unit = LABELS.get(stem, (key, ""))
    if stem in LABELS and arguments:
        label = f"{label} ({arguments})"
    return NumberLabel(stem, arguments, subject, label, unit, stem in LABELS)


def paper_reference(question: str) -> str:
    """``Raghu et al. 2021, §4, Fig. 1, 2`` for a research question (the paper alone for an unknown one)."""
    where = PAPER_SECTIONS.get(question)
    return f"{PAPER_CITATION}, {where}" if where else PAPER_CITATION
