"""Results: named arrays plus the metadata that says how they were made, saved as npz + JSON.

Every analysis returns a :class:`Result`; plots and reports read saved results and never
recompute. Writes are atomic (temp file, then rename) so an interrupted run never leaves a
half-written result that a later run would trust.
"""

from __future__ import annotations

import importlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seelike.errors import ResultSchemaError

SCHEMA_VERSION = 1
ARRAYS_FILE = "result.npz"
METADATA_FILE = "result.json"

_RESULT_KINDS: dict[str, type[Result]] = {}
#: where each kind's Result subclass lives, so load_result can type a result without the caller importing it
_KIND_MODULES = {
    "cka": "seelike.similarity",
    "attention_distance": "seelike.analyses.attention_distance",
    "head_similarity": "seelike.analyses.head_similarity",
    "receptive_field": "seelike.analyses.receptive_field",
    "skip_norms": "seelike.analyses.skip_norms",
    "localization": "seelike.analyses.localization",
    "probes": "seelike.analyses.probes",
    "data_scale": "seelike.analyses.data_scale",
}


def seelike_version() -> str:
    from seelike import __version__

    return __version__


@dataclass(frozen=True)
class Result:
    """Arrays and metadata of one analysis run.

    ``metadata`` holds everything that changes the numbers: model specs, data spec, ``n``,
    batch size, seed, estimator, and the seelike version that wrote it.
    """

    kind: ClassVar[str] = "result"

    arrays: Mapping[str, np.ndarray]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _RESULT_KINDS[cls.kind] = cls

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``result.npz`` and ``result.json`` into ``directory`` (created if missing)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        document = {
            "kind": self.kind,
            "schema_version": SCHEMA_VERSION,
            "seelike_version": seelike_version(),
            "arrays": sorted(self.arrays),
            "metadata": _jsonable(dict(self.metadata)),
        }
        _atomic_write(directory / ARRAYS_FILE, lambda f: np.savez(f, **{k: np.asarray(v) for k, v in self.arrays.items()}))
        _atomic_write(directory / METADATA_FILE, lambda f: f.write(json.dumps(document, indent=2).encode()))
        return directory


_RESULT_KINDS[Result.kind] = Result


def load_result(path: str | os.PathLike) -> Result:
    """Read a result saved by :meth:`Result.save` (give its folder or either of its files)."""
    path = Path(path)
    directory = path.parent if path.is_file() else path
    metadata_path = directory / METADATA_FILE
    if not metadata_path.exists():
        raise ResultSchemaError(f"No seelike result in {directory}: expected {METADATA_FILE} and {ARRAYS_FILE} there.")
    document = json.loads(metadata_path.read_text())
    version = document.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultSchemaError(
            f"{metadata_path} has result schema {version!r}, newer than this seelike understands "
            f"({SCHEMA_VERSION}); upgrade seelike (it was written by {document.get('seelike_version')})."
        )
    with np.load(directory / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    return result_class(document.get("kind", "result"))(arrays=arrays, metadata=document.get("metadata", {}))


def result_class(kind: str) -> type[Result]:
    """The Result subclass of ``kind`` (importing its module on first use); plain Result if unknown."""
    if kind not in _RESULT_KINDS and kind in _KIND_MODULES:
        importlib.import_module(_KIND_MODULES[kind])
    return _RESULT_KINDS.get(kind, Result)


def _atomic_write(path: Path, write: Any) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write a text file atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, lambda f: f.write(text.encode()))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class ResultBundle(Result):
    """Several results of one analysis (e.g. a trained model and its random-init baseline) saved as one.

    Arrays are stored as ``"{key}::{array}"`` and metadata per key; :meth:`unbundle` gives the
    typed results back.
    """

    kind: ClassVar[str] = "bundle"

    @classmethod
    def of(cls, results: Mapping[str, Result]) -> ResultBundle:
        arrays = {f"{key}::{name}": value for key, result in results.items() for name, value in result.arrays.items()}
        metadata = {"results": {key: {"kind": result.kind, "metadata": dict(result.metadata)} for key, result in results.items()}}
        return cls(arrays=arrays, metadata=metadata)

    def unbundle(self) -> dict[str, Result]:
        """The bundled results by key, each as its own Result subclass."""
        results = {}
        for key, entry in self.metadata["results"].items():
            arrays = {name.split("::", 1)[1]: value for name, value in self.arrays.items() if name.split("::", 1)[0] == key}
            results[key] = result_class(entry["kind"])(arrays=arrays, metadata=entry["metadata"])
        return results
