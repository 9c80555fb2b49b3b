"""The studies ``seelike study`` runs: the models of each preset by role, its settings, and its steps.

Each preset names a model per role; ``seelike study --models ROLE=SPEC`` replaces any of them. The
steps come from the research-question modules (``rq1`` .. ``rq5``), each a list of
:class:`~seelike.study.engine.StudyStep` records over these roles, with random-init twins
(:func:`random_init`) and second-seed models as baselines.
"""

from __future__ import annotations

from seelike.study import rq1, rq2, rq3, rq4, rq5
from seelike.study.engine import StudySettings, StudyStep, check_unique

# -- presets ----------------------------------------------------------------------------------------------
#: Each preset names a model per role; ``seelike study --models ROLE=SPEC`` replaces any of them.
ZOO_MODELS = {
    "vit": "zoo:vit-cls",
    "vit_gap": "zoo:vit-gap",
    "resnet": "zoo:resnet",
    "mixer": "zoo:mixer",
    "vit_seed1": "zoo:vit-cls-seed1",
    "vit_noskip_early": "zoo:vit-cls-noskip-early",
    "vit_noskip_mid": "zoo:vit-cls-noskip-mid",
    "vit_frac30": "zoo:vit-cls-frac30",
    "vit_frac10": "zoo:vit-cls-frac10",
    "vit_frac03": "zoo:vit-cls-frac03",
    "vit_large": "zoo:vit-cls-large",
    "vit_large_frac10": "zoo:vit-cls-large-frac10",
    "vit_large_seed1": "zoo:vit-cls-large-seed1",
}
PAPER_MODELS = {
    "vit": "timm:vit_base_patch16_224.augreg_in21k?pretrained=1",
    "vit_gap": "timm:vit_base_patch16_224.augreg_in21k?pretrained=1&global_pool=avg&class_token=0",
    "resnet": "timm:resnetv2_50x1_bit.goog_in21k?pretrained=1",
    "mixer": "timm:mixer_b16_224.goog_in21k?pretrained=1",
}
PRESET_MODELS = {"zoo": ZOO_MODELS, "paper": PAPER_MODELS}
PRESET_SETTINGS = {
    "zoo": StudySettings(data="fashion-mnist", n=5000, batch_size=500),
    "paper": StudySettings(data="imagefolder:~/imagenet/val", n=10240, batch_size=1024),
}


def random_init(spec: str) -> str:
    """The same architecture without trained weights: the baseline every finding is compared with."""
    body, _, query = spec.partition("?")
    options = [item for item in query.split("&") if item and not item.startswith(("pretrained=", "init="))]
    return f"{body}?{'&'.join([*options, 'init=random'])}"


def build_steps(models: dict[str, str]) -> list[StudyStep]:
    """The study's steps over the models named per role (research questions RQ1-RQ5 of Raghu et al. 2021)."""
    missing = sorted({"vit", "vit_gap", "resnet", "mixer"} - set(models))
    if missing:
        from seelike.errors import InvalidInputError

        raise InvalidInputError(f"a study needs models for the roles vit, vit_gap, resnet and mixer; missing: {', '.join(missing)}")
    steps = [step for module in (rq1, rq2, rq3, rq4, rq5) for step in module.steps(models, random_init)]
    check_unique(steps)
    return steps
