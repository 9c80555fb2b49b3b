"""Results: named arrays plus the metadata that says how they were made, saved as npz + JSON.

Every analysis returns a :class:`Result`; plots and reports read saved results and never
recompute. Writes are atomic (temp file, then rename) so an interrupted run never leaves a
half-written result that a later run would trust.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from seelike.errors import DamagedResultError, OutputError, ResultSchemaError

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

    def to_frame(self) -> Any:
        """This result as a tidy pandas DataFrame: one row per model × layer × quantity × index, with its value
        (bootstrap draws left out; see :mod:`seelike.export`). Needs pandas (``pip install pandas``)."""
        from seelike.export import RESULT_COLUMNS, frame, result_rows

        return frame(result_rows(self), RESULT_COLUMNS)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``result.npz`` and ``result.json`` into ``directory`` (created if missing).

        Both files are written to temporary names first and renamed only when both are complete, and the JSON
        carries a sha256 of the arrays, so a full disk, a kill or a second run into the same folder never leaves
        a pair that loads as one result. An ``OSError`` becomes a one-line :class:`OutputError`.
        """
        directory = Path(directory)
        arrays = {k: np.asarray(v) for k, v in self.arrays.items()}
        document = {
            "kind": self.kind,
            "schema_version": SCHEMA_VERSION,
            "seelike_version": seelike_version(),
            "arrays": sorted(arrays),
            "arrays_sha256": arrays_digest(arrays),
            "metadata": _jsonable(dict(self.metadata)),
        }
        try:
            directory.mkdir(parents=True, exist_ok=True)
            with _temporary_file(directory / ARRAYS_FILE, lambda f: np.savez(f, **arrays)) as arrays_temporary, \
                    _temporary_file(directory / METADATA_FILE, lambda f: f.write(json.dumps(document, indent=2).encode())) as json_temporary:
                os.replace(arrays_temporary, directory / ARRAYS_FILE)
                os.replace(json_temporary, directory / METADATA_FILE)
        except OSError as error:
            raise OutputError(f"could not write the result into {directory}: {error.strerror or error}; "
                              "free space or choose another --out") from None
        return directory


_RESULT_KINDS[Result.kind] = Result


def load_result(path: str | os.PathLike) -> Result:
    """Read a result saved by :meth:`Result.save` (give its folder or either of its files).

    Raises :class:`DamagedResultError` (one line, naming the file) for a truncated or garbage file, or when
    ``result.npz`` does not hold the arrays ``result.json`` was written with (two runs into one folder).
    """
    path = Path(path)
    directory = path.parent if path.is_file() else path
    metadata_path, arrays_path = directory / METADATA_FILE, directory / ARRAYS_FILE
    if not metadata_path.exists():
        raise ResultSchemaError(f"No seelike result in {directory}: expected {METADATA_FILE} and {ARRAYS_FILE} there.")
    rerun = "rerun the analysis that wrote it"
    try:
        document = json.loads(metadata_path.read_text())
    except (OSError, ValueError) as error:
        raise DamagedResultError(f"{metadata_path} is damaged ({type(error).__name__}: {error}); {rerun}") from None
    if not isinstance(document, dict):
        raise DamagedResultError(f"{metadata_path} is not a seelike result (a JSON {type(document).__name__}); {rerun}")
    version = document.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise ResultSchemaError(
            f"{metadata_path} has result schema {version!r}, newer than this seelike understands "
            f"({SCHEMA_VERSION}); upgrade seelike (it was written by {document.get('seelike_version')})."
        )
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise DamagedResultError(f"{arrays_path} is missing beside {metadata_path}; {rerun}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DamagedResultError(f"{arrays_path} is damaged ({type(error).__name__}: {error}); {rerun}") from None
    expected = document.get("arrays_sha256")
    if expected is not None and arrays_digest(arrays) != expected:
        raise DamagedResultError(
            f"{arrays_path} does not hold the arrays {metadata_path} was written with (two runs into one folder, "
            f"or a damaged file); {rerun}"
        )
    return result_class(document.get("kind", "result"))(arrays=arrays, metadata=document.get("metadata", {}))


def arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over the arrays' names, dtypes, shapes and bytes: what ``result.json`` records of its ``result.npz``."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        digest.update(array.tobytes())
    return digest.hexdigest()


def result_class(kind: str) -> type[Result]:
    """The Result subclass of ``kind`` (importing its module on first use); plain Result if unknown."""
    if kind not in _RESULT_KINDS and kind in _KIND_MODULES:
        importlib.import_module(_KIND_MODULES[kind])
    return _RESULT_KINDS.get(kind, Result)


@contextmanager
def _temporary_file(path: Path, write: Callable[[Any], Any]) -> Iterator[str]:
    """A complete temporary copy of ``path`` in its folder (with the umask's permissions), removed unless renamed."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes 0600; a result should be as readable as any file
        yield temporary
    finally:
        Path(temporary).unlink(missing_ok=True)


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    with _temporary_file(path, write) as temporary:
        os.replace(temporary, path)


def _umask() -> int:
    """The process umask (read from /proc where it can be, since setting it to read it is not thread-safe)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
