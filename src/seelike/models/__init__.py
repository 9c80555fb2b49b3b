"""Load any supported vision model as a :class:`Model`.

Specs: ``zoo:NAME[?init=random]`` (seelike's shipped models, or their architecture at random init), ``timm:NAME[?pretrained=1&file=PATH&img_size=...]`` (``file``: the weights from a local file instead of the hub),
``torchvision:NAME[?pretrained=1]``, ``hf:ORG/NAME`` or ``hf:PATH`` (Hugging Face transformers: the hub, or a
``save_pretrained`` folder; needs ``pip install 'seelike[hf]'``), ``seelike:vit|resnet|mixer[?key=value...]`` (seelike's own
architectures, random init, e.g. ``seelike:vit?classifier=gap``), or a path to a
seelike ``.safetensors`` checkpoint (or a ``seelike train`` folder: its ``model.safetensors``).
Random-init models are seeded (``seed=0`` by default) so the same spec always gives the same weights.
Your own ``nn.Module``: :func:`wrap` (``seelike.models.wrap(module, preprocessing=..., layers=...)``).
Options are never ignored: an unknown ``zoo:`` key, a key given twice or ``pretrained=maybe`` is refused,
and a zoo checkpoint is checked against its manifest's sha256 before it loads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from seelike.errors import InvalidInputError, ModelLoadError, close_matches
from seelike.models.adapters import describe
from seelike.models.mixer import Mixer, MixerConfig
from seelike.models.model import Layer, Model, Preprocessing, TokenLayout
from seelike.models.resnet import ResNet, ResNetConfig
from seelike.models.vit import ViT, ViTConfig
from seelike.models.wrap import wrap

__all__ = [
    "ARCHITECTURES", "Layer", "Model", "Preprocessing", "TokenLayout",
    "build_module", "check_state_keys", "load_checkpoint", "load_model", "resolve_device", "save_checkpoint", "wrap",
]

#: the query keys a zoo: spec understands (anything else is refused, never ignored)
ZOO_OPTIONS = ("init", "seed")
CHECKPOINT_FILE = "model.safetensors"  # what `seelike train --out DIR` leaves in DIR

#: seelike's own architectures: name → (module class, config class)
ARCHITECTURES: dict[str, tuple[type[nn.Module], type]] = {
    "vit": (ViT, ViTConfig),
    "resnet": (ResNet, ResNetConfig),
    "mixer": (Mixer, MixerConfig),
}

#: Fashion-MNIST pixel statistics: the default normalisation of seelike's own models.
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,), (0.3530,)


def build_module(arch: str, config: dict[str, Any] | None = None) -> nn.Module:
    """A randomly initialised own model (``arch`` in :data:`ARCHITECTURES`)."""
    if arch not in ARCHITECTURES:
        raise ModelLoadError(f"unknown seelike architecture {arch!r}; choose one of {', '.join(ARCHITECTURES)}")
    module_class, config_class = ARCHITECTURES[arch]
    fields = config_class.__dataclass_fields__
    unknown = sorted(set(config or {}) - set(fields))
    if unknown:
        raise ModelLoadError(f"unknown {arch} settings {unknown}; known: {', '.join(fields)}")
    try:
        return module_class(config_class(**(config or {})))
    except (TypeError, ValueError) as error:
        raise ModelLoadError(f"invalid {arch} config {config}: {error}") from error


def own_preprocessing(module: nn.Module, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None) -> Preprocessing:
    config = module.config
    channels = config.in_channels
    size = getattr(config, "image_size", 28 if channels == 1 else 32)
    mean = tuple(mean) if mean else FASHION_MNIST_MEAN * channels
    std = tuple(std) if std else FASHION_MNIST_STD * channels
    return Preprocessing((channels, size, size), mean, std)


def save_checkpoint(path: str | Path, module: nn.Module, arch: str, preprocessing: Preprocessing, extra: dict | None = None) -> Path:
    """Weights as safetensors with the architecture, config and preprocessing in its metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {
        "arch": arch,
        "config": module.config.to_dict(),
        "preprocessing": {"input_size": preprocessing.input_size, "mean": preprocessing.mean, "std": preprocessing.std},
        **(extra or {}),
    }
    temporary = path.with_name(f".{path.name}.tmp")
    state = {key: tensor.detach().cpu().contiguous() for key, tensor in module.state_dict().items()}
    save_file(state, temporary, metadata={"seelike": json.dumps(header)})
    temporary.replace(path)
    return path


def load_checkpoint(path: str | Path, spec: str | None = None, random_init_seed: int | None = None) -> Model:
    """A :class:`Model` from a seelike safetensors checkpoint (no pickle is ever read).

    With ``random_init_seed`` the weights are not loaded: the same architecture, freshly
    initialised with that seed (the random-init baseline of every finding).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelLoadError(f"no checkpoint at {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {})["seelike"])
    except (KeyError, OSError, ValueError, Exception) as error:
        raise ModelLoadError(f"{path} is not a seelike safetensors checkpoint ({error})") from error
    if random_init_seed is not None:
        torch.manual_seed(random_init_seed)
    module = build_module(header["arch"], header["config"])
    if random_init_seed is None:
        try:
            state = load_file(str(path))
        except Exception as error:  # safetensors' own error types: truncated data, bad offsets
            raise ModelLoadError(f"{path} is damaged ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__}); "
                                 "restore or re-create the file") from None
        check_state_keys(path, state, module.state_dict(), ModelLoadError, "it was not written for this architecture")
        try:
            module.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        except RuntimeError as error:
            raise ModelLoadError(f"{path} does not fit its architecture ({str(error).strip().splitlines()[-1].strip()})") from None
    pre = header["preprocessing"]
    preprocessing = Preprocessing(tuple(pre["input_size"]), tuple(pre["mean"]), tuple(pre["std"]))
    return _finish(describe(module, spec or str(path), preprocessing, module.config.num_classes))


def load_model(spec: str, device: str | torch.device = "cpu") -> Model:
    """Turn a model spec into a :class:`Model` on ``device`` (see the module docstring)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ModelLoadError(f"empty model spec {spec!r}: use zoo:NAME, timm:NAME, torchvision:NAME, hf:ORG/NAME|PATH, seelike:vit|resnet|mixer "
                             "or a path to a .safetensors checkpoint (or a `seelike train` folder)")
    device = resolve_device(device)
    scheme, _, rest = spec.partition(":") if ":" in spec and not Path(spec).exists() else ("path", "", spec)
    name, _, query = rest.partition("?")
    options = _parse_query(spec, query) if scheme != "path" else {}
    random_init = _random_init(options)
    if random_init and _pretrained(dict(options)):
        raise ModelLoadError(f"{spec}: init=random and pretrained=1 contradict each other; keep one")
    # random init is seeded from the spec; fork_rng keeps that from resetting the caller's global RNG
    with torch.random.fork_rng(devices=[]):
        if scheme == "zoo":
            from seelike.models.zoo import verified_checkpoint

            unknown = sorted(set(options) - set(ZOO_OPTIONS))
            if unknown:
                raise ModelLoadError(f"{spec}: unknown option(s) {', '.join(unknown)}; zoo: specs take init=random and seed=N")
            if "seed" in options and not random_init:
                raise ModelLoadError(f"{spec}: seed=N only applies to the random-init baseline; add init=random or drop seed")
            model = load_checkpoint(verified_checkpoint(name), spec, _seed(options) if random_init else None)
        elif scheme == "path":
            model = load_checkpoint(_checkpoint_path(Path(spec)))
        elif scheme == "seelike":
            torch.manual_seed(_seed(options))
            module = build_module(name, {k: _parse_value(v) for k, v in options.items()})
            model = _finish(describe(module, spec, own_preprocessing(module), module.config.num_classes))
        elif scheme == "timm":
            model = _load_timm(spec, name, options)
        elif scheme == "torchvision":
            model = _load_torchvision(spec, name, options)
        elif scheme == "hf":
            from seelike.models.hf import load_hf

            if "seed" in options and not random_init:
                raise ModelLoadError(f"{spec}: seed=N only applies to the random-init baseline; add init=random or drop seed")
            model = _finish(load_hf(spec, name, options, random_init, _seed(options)))
        else:
            raise ModelLoadError(
                f"unknown model spec {spec!r}: use zoo:NAME, timm:NAME, torchvision:NAME, hf:ORG/NAME|PATH, seelike:vit|resnet|mixer "
                "or a path to a .safetensors checkpoint"
            )
    return model.to(device)


def _finish(model: Model) -> Model:
    """Put the layers in the order one forward pass runs them (not the order they were found)."""
    from seelike.capture import forward_order

    model.module.eval()
    model.layers = tuple(forward_order(model))
    return model


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _random_init(options: dict[str, str]) -> bool:
    """``init=random``: the architecture without trained weights (the baseline of every finding)."""
    init = options.pop("init", "trained")
    if init not in ("trained", "random"):
        raise ModelLoadError(f"init must be 'trained' or 'random', got init={init!r}")
    return init == "random"


def _seed(options: dict[str, str]) -> int:
    text = options.pop("seed", "0")
    try:
        return int(text)
    except ValueError:
        raise ModelLoadError(f"seed must be an integer, got seed={text!r}") from None


def _pretrained(options: dict[str, str]) -> bool:
    """``pretrained=1|true|yes`` or ``0|false|no``; anything else is refused (``maybe`` must not mean random init)."""
    text = options.pop("pretrained", "0")
    if text.lower() in ("1", "true", "yes"):
        return True
    if text.lower() in ("0", "false", "no"):
        return False
    raise ModelLoadError(f"pretrained must be 1 or 0 (true/false, yes/no), got pretrained={text!r}")


def _parse_query(spec: str, query: str) -> dict[str, str]:
    """The ``?key=value&...`` options of a spec; a key given twice or without ``=value`` is refused."""
    options: dict[str, str] = {}
    for item in filter(None, query.split("&")):
        if "=" not in item:
            raise ModelLoadError(f"{spec}: option {item!r} has no value; write key=value")
        ((key, value),) = parse_qsl(item, keep_blank_values=True)
        if key in options:
            raise ModelLoadError(f"{spec}: option {key!r} is given twice ({options[key]!r} and {value!r}); keep one")
        options[key] = value
    return options


def _checkpoint_path(path: Path) -> Path:
    """A checkpoint file, or the ``model.safetensors`` of a ``seelike train`` folder."""
    path = path.expanduser()
    if not path.is_dir():
        return path
    if (path / CHECKPOINT_FILE).is_file():
        return path / CHECKPOINT_FILE
    if (path / "state.safetensors").is_file():
        raise ModelLoadError(f"{path} is a training run that has not finished (no {CHECKPOINT_FILE} yet); "
                             f"finish it by rerunning the same `seelike train ... --out {path}`")
    raise ModelLoadError(f"no checkpoint in folder {path}: expected {path / CHECKPOINT_FILE} (from `seelike train --out`)")


def resolve_device(device: str | torch.device) -> torch.device:
    """A torch device that exists on this machine, or a one-line error saying which ones do."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise InvalidInputError(f"unknown device {device!r} ({str(error).splitlines()[0]}); use cpu or cuda[:N]") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(f"--device {device}: this machine has no CUDA GPU torch can use; use --device cpu")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InvalidInputError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA GPU(s), "
                                    f"numbered 0..{torch.cuda.device_count() - 1}")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise InvalidInputError(f"--device {device}: MPS is not available here; use --device cpu")
    elif resolved.type not in ("cpu", "cuda", "mps"):
        raise InvalidInputError(f"--device {device}: seelike runs on cpu, cuda[:N] or mps")
    return resolved


def check_state_keys(path: Path, state: dict[str, Any], expected: dict[str, Any], error: type[Exception], fix: str) -> None:
    """Refuse a checkpoint whose tensor names differ from the model's, in one line naming the file and a few keys."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        parts = [f"{label} {len(keys)} tensor(s) ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})"
                 for label, keys in (("missing", missing), ("unexpected", extra)) if keys]
        raise error(f"{path} does not fit its model: {'; '.join(parts)}; {fix}")


def _load_timm(spec: str, name: str, options: dict[str, str]) -> Model:
    import timm
    from timm.data import resolve_data_config

    pretrained = _pretrained(options)
    weights_file = options.pop("file", None)
    torch.manual_seed(_seed(options))
    kwargs = {k: _parse_value(v) for k, v in options.items()}
    if weights_file is not None:  # the same weights from a local file: timm's pretrained_cfg 'file' source
        path = Path(weights_file).expanduser()
        if not pretrained:
            raise ModelLoadError(f"{spec}: file= gives pretrained weights; add pretrained=1")
        if not path.is_file():
            raise ModelLoadError(f"{spec}: no weights file {path}; give a .safetensors / .pth saved from this architecture")
        kwargs["pretrained_cfg_overlay"] = {"file": str(path)}
    known = timm.list_models()
    if name not in known and name.split(".")[0] not in known:
        close = close_matches(name.split(".")[0], known, n=8)
        raise ModelLoadError(f"timm has no model {name!r}. Similar: {', '.join(close)}; see timm.list_models()")
    try:
        module = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as error:  # network, hub or weight errors
        if pretrained:
            raise ModelLoadError(
                f"could not load pretrained weights for timm:{name} ({type(error).__name__}: {error}). "
                "They come from the Hugging Face hub: check the network, or pre-download them into the HF cache "
                "(HF_HOME) on a machine with access; drop ?pretrained=1 for random init."
            ) from error
        raise ModelLoadError(f"timm could not build {name} with {kwargs}: {error}") from error
    config = resolve_data_config({}, model=module)
    input_size = tuple(config["input_size"])
    embed = getattr(module, "patch_embed", None) or getattr(module, "stem", None)
    img_size = getattr(embed, "img_size", None)  # built at another size (?img_size=...): pretrained_cfg still says 224
    if img_size is not None:
        input_size = (input_size[0], *(tuple(img_size) if isinstance(img_size, (tuple, list)) else (img_size, img_size)))
    preprocessing = Preprocessing(input_size, tuple(config["mean"]), tuple(config["std"]), config.get("interpolation", "bilinear"))
    return _finish(describe(module, spec, preprocessing, getattr(module, "num_classes", None)))


def _load_torchvision(spec: str, name: str, options: dict[str, str]) -> Model:
    import torchvision

    pretrained = _pretrained(options)
    torch.manual_seed(_seed(options))
    known = torchvision.models.list_models()
    if name not in known:
        close = close_matches(name, known, n=8)
        raise ModelLoadError(f"torchvision has no model {name!r}. Similar: {', '.join(close)}; see torchvision.models.list_models()")
    try:
        weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
        module = torchvision.models.get_model(name, weights=weights, **{k: _parse_value(v) for k, v in options.items()})
    except Exception as error:
        if pretrained:
            raise ModelLoadError(
                f"could not download torchvision weights for {name} ({type(error).__name__}: {error}); "
                "check the network or place the file in $TORCH_HOME/hub/checkpoints."
            ) from error
        raise ModelLoadError(f"torchvision could not build {name}: {error}") from error
    size = getattr(module, "image_size", 224)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    if weights is not None:
        transform = weights.transforms()
        size, mean, std = transform.crop_size[0], tuple(transform.mean), tuple(transform.std)
    return _finish(describe(module, spec, Preprocessing((3, size, size), mean, std), getattr(module, "num_classes", None) or getattr(getattr(module, "fc", None), "out_features", None)))
