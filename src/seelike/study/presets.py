"""The studies ``seelike study`` runs: the roles a study's models play, each preset's model per role,
its settings, and the plan (which steps run, and why the others do not).

Each preset names a model per role; ``seelike study --models ROLE=SPEC`` replaces or adds any of
:data:`ROLES`. The steps come from the research-question modules (``rq1`` .. ``rq5``), each a list
of :class:`~seelike.study.engine.StudyStep` records over these roles, with random-init twins
(:func:`random_init`) and second-seed models as baselines. A step is planned as skipped, with the
reason, when the preset lacks a role it needs, or when ``--models`` replaced some but not all of
the roles it compares as twins (a :class:`~seelike.study.engine.Cohort`: a ViT and its
reduced-data, skip-removed, second-seed or GAP-classifier twins).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from seelike.errors import InvalidInputError
from seelike.study import rq1, rq2, rq3, rq4, rq5
from seelike.study.engine import StudySettings, StudyStep, check_unique
from seelike.study.roles import CORE_ROLES, ROLES

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
#: Public checkpoints closest to the paper's models. The second seeds, skip-removed and reduced-data
#: ViTs are models the paper trained itself: no public checkpoint, so their steps are planned as skipped.
PAPER_MODELS = {
    "vit": "timm:vit_base_patch16_224.augreg_in21k?pretrained=1",
    # trained with global average pooling and no class token (not a CLS checkpoint with its pooling switched)
    "vit_gap": "timm:vit_base_patch16_rpn_224.sw_in1k?pretrained=1",
    "resnet": "timm:resnetv2_50x1_bit.goog_in21k?pretrained=1",
    "mixer": "timm:mixer_b16_224.goog_in21k?pretrained=1",
}
PRESET_MODELS = {"zoo": ZOO_MODELS, "paper": PAPER_MODELS}
#: How a preset's model differs from the paper's, said in every step that reads it.
PRESET_NOTES = {
    "paper": {
        "vit_gap": "The GAP ViT here is timm's vit_base_patch16_rpn_224.sw_in1k: a ViT-B/16 at 224 px trained with global average "
                   "pooling and no class token, but on ImageNet-1k with timm's recipe and residual post-norm blocks (norm after each "
                   "branch, layer scale, no qkv bias); the paper's GAP ViT-B/16 was a pre-norm ViT pre-trained like its CLS twin, so "
                   "differences from the CLS ViT (ImageNet-21k, AugReg) mix the classifier with data, recipe and block design.",
    },
}
PRESET_SETTINGS = {
    "zoo": StudySettings(data="fashion-mnist", n=5000, batch_size=500),
    "paper": StudySettings(data="imagefolder:~/imagenet/val", n=10240, batch_size=1024),
}
#: Query options that say where weights come from: a random-init twin drops them.
WEIGHT_OPTIONS = ("pretrained=", "init=", "seed=", "file=")
DRY_RUN_SEED = 1  # --init random: the study's models are seed 1, their random-init baselines seed 0


def random_init(spec: str) -> str:
    """The same architecture without trained weights (seed 0): the baseline every finding is compared with."""
    body, _, query = spec.partition("?")
    options = [item for item in query.split("&") if item and not item.startswith(WEIGHT_OPTIONS)]
    return f"{body}?{'&'.join([*options, 'init=random'])}"


def dry_run_spec(spec: str) -> str:
    """``--init random``: the model's random-init twin with another seed than its baseline's, so the two differ."""
    return f"{random_init(spec)}&seed={DRY_RUN_SEED}"


def build_steps(models: Mapping[str, str], given: Mapping[str, str] | None = None, preset: str = "") -> list[StudyStep]:
    """The study's steps over the models named per role (research questions RQ1-RQ5 of Raghu et al. 2021), each planned to run or skipped.

    ``given``: the roles ``--models`` replaced or added (role → spec); a step whose twins
    (cohorts) mix given and preset models is skipped, as is a step missing a role it needs.
    """
    missing = [role for role in CORE_ROLES if role not in models]
    if missing:
        raise InvalidInputError(f"a study needs models for the roles {', '.join(CORE_ROLES)}; missing: {', '.join(missing)}")
    steps = [step for module in (rq1, rq2, rq3, rq4, rq5) for step in module.steps(models, random_init)]
    check_unique(steps)
    notes = PRESET_NOTES.get(preset, {})
    planned = []
    for step in steps:
        skip = _missing_roles(step, preset) or _broken_cohort(step, given or {}, preset)
        step_notes = tuple(notes[role] for role in step.models if role in notes and role not in (given or {}))
        planned.append(replace(step, skip=skip, notes=step_notes))
    return planned


def plan_study(preset: str, given: Mapping[str, str] | None = None, init: str = "trained") -> list[StudyStep]:
    """The steps of ``preset`` with ``given`` (``--models ROLE=SPEC``) replacing or adding models;
    ``init="random"``: every model replaced by its random-init twin (a dry run of the pipeline)."""
    if preset not in PRESET_MODELS:
        raise InvalidInputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESET_MODELS)}")
    if init not in ("trained", "random"):
        raise InvalidInputError(f"--init must be trained or random, got {init!r}")
    given = dict(given or {})
    unknown = sorted(set(given) - set(ROLES))
    if unknown:
        raise InvalidInputError(f"unknown role(s) {', '.join(unknown)} in --models; roles: {', '.join(ROLES)}")
    preset_models = PRESET_MODELS[preset]
    swapped = {role: spec for role, spec in given.items() if preset_models.get(role) != spec}
    models = {**preset_models, **given}
    if init == "random":
        models = {role: dry_run_spec(spec) for role, spec in models.items()}
        swapped = {role: models[role] for role in swapped}
    return build_steps(models, swapped, preset)


def _missing_roles(step: StudyStep, preset: str) -> str:
    """Why ``step`` cannot run when a role it needs has no model (empty when none is missing)."""
    missing = [role for role in step.required_roles if role not in step.models]
    if not missing:
        return ""
    where = f"the {preset} preset" if preset else "this study"
    why = " (the paper trained these itself: no public checkpoint)" if preset == "paper" else ""
    return (f"needs {', '.join(missing)}, which {where} does not name{why}; pass --models "
            f"{' '.join(f'{role}=SPEC' for role in missing)} to run it (roles: seelike study --help)")


def _broken_cohort(step: StudyStep, swapped: Mapping[str, str], preset: str) -> str:
    """Why ``step`` cannot compare its twins when ``--models`` replaced some of them but not the others."""
    source = f"the {preset} preset's" if preset else "the preset's"
    for cohort in step.cohorts:
        present = [role for role in cohort.roles if role in step.models]
        replaced = [role for role in present if role in swapped]
        kept = [role for role in present if role not in swapped]
        if not replaced or not kept:
            continue
        reference = cohort.reference
        if reference in swapped:
            stale = ", ".join(f"{role} ({step.models[role]}) is no longer its {cohort.twins[role]}" for role in kept)
            return (f"{reference} was replaced by {swapped[reference]}, so {source} {stale}; pass --models "
                    f"{' '.join(f'{role}=...' for role in kept)} too (trained like the new {reference}), or keep {reference}")
        twins = ", ".join(f"{role} ({swapped[role]})" for role in replaced)
        return (f"{twins} replaced {source} model(s) but {reference} is still {source} ({step.models[reference]}), so they are not its "
                f"{', '.join(cohort.twins[role] for role in replaced)}; pass --models {reference}=... "
                f"{' '.join(f'{role}=...' for role in kept if role != reference)} too")
    return ""
