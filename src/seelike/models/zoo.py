"""seelike's shipped models: their manifests, their checkpoints, checked against their sha256 on load.

Each zoo model is ``seelike/zoo/NAME.safetensors`` (fp16 weights, architecture in its
metadata) beside ``seelike/zoo/NAME.json`` (the manifest: recipe, seed, epochs and steps,
training fraction, test accuracy of the shipped fp16 weights, wall time, device, sha256 and
the command that reproduces it), in the style of big_vision's configs-with-expected-results.
The recipes live in :mod:`seelike.recipes` and training in :mod:`seelike.zoo_training`, so
reading a zoo model never imports the trainer.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from seelike.errors import ModelLoadError, close_matches
from seelike.recipes import RECIPES

__all__ = ["RECIPES", "check_sha256", "manifests", "sha256", "verified_checkpoint", "zoo_checkpoint", "zoo_dir"]


def zoo_dir() -> Path:
    """The folder of the installed zoo (inside the seelike package)."""
    return Path(str(resources.files("seelike") / "zoo"))


def manifests() -> dict[str, dict[str, Any]]:
    """Every shipped model's manifest, by name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(zoo_dir().glob("*.json"))}


def zoo_checkpoint(name: str) -> Path:
    """Path of a shipped checkpoint; a clear error when it is not (yet) in the zoo."""
    path = zoo_dir() / f"{name}.safetensors"
    if path.is_file():
        return path
    shipped = sorted(manifests())
    if name in RECIPES:
        raise ModelLoadError(
            f"zoo:{name} is a zoo recipe but its checkpoint is not shipped in this install. "
            f"Train it with `seelike zoo train {name} --out DIR` and load DIR/{name}.safetensors "
            f"(shipped: {', '.join(shipped) or 'none'})."
        )
    closest = close_matches(name, list(RECIPES))
    hint = f" Closest: {', '.join(closest)};" if closest else f" Recipes: {', '.join(RECIPES)};"
    raise ModelLoadError(f"no zoo model {name!r}.{hint} shipped: {', '.join(shipped) or 'none'}")


def verified_checkpoint(name: str) -> Path:
    """Path of a shipped checkpoint whose bytes match its manifest's sha256 (damaged weights never load silently).

    The hash is computed once per (path, size, mtime), so loading the same model again costs nothing.
    """
    path = zoo_checkpoint(name)
    manifest_path = path.with_suffix(".json")
    try:
        expected = json.loads(manifest_path.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ModelLoadError(
            f"zoo:{name}: its manifest {manifest_path} is missing or unreadable ({type(error).__name__}), so its "
            "weights cannot be checked; reinstall seelike"
        ) from None
    if not check_sha256(path, expected):
        raise ModelLoadError(
            f"zoo:{name}: {path} does not match the sha256 in its manifest (damaged or replaced weights); "
            f"reinstall seelike, or retrain it with `seelike zoo train {name} --out DIR`"
        )
    return path


def check_sha256(path: Path, expected: str) -> bool:
    """Whether the file's sha256 is ``expected``; cached per (path, size, mtime) so a reused file is hashed once."""
    stat = os.stat(path)
    return _cached_sha256(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns) == expected


@lru_cache(maxsize=256)
def _cached_sha256(path: str, size: int, mtime_ns: int) -> str:
    return sha256(Path(path))


def sha256(path: Path) -> str:
    """The hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
