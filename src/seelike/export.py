"""Tidy tables of seelike's outputs, for pandas, R or a spreadsheet: one row per observation, one column per variable.

* A study folder (``results.json``) gives two tables: ``findings`` (one row per finding: step,
  question, claim, rule, measured, value, se, baseline, baseline_se, baseline_kind, threshold,
  margin, verdict, why, and non_finite: the fields left empty because they are NaN or ±inf, such as
  "value=-inf") and ``numbers`` (one row per step × model × quantity × index: the numbers of
  each section, labelled and with units; lists of names such as layer lists are left out).
* A result folder (``result.json`` + ``result.npz``, as every analysis command writes) gives one table
  ``result``: one row per model × layer × quantity × index, from every array of the result except
  bootstrap draws. Axes are named from the result's own metadata (CKA's ``names``, ``layers``,
  ``blocks``, ``readouts``, ``models``, ``units``); an axis without names is numbered (``axis1=3``).

CSV needs nothing beyond the standard library; parquet and DataFrames need pandas (and pyarrow).
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seelike.errors import InvalidInputError, ResultSchemaError
from seelike.results import METADATA_FILE, Result, ResultBundle, load_result

FINDING_COLUMNS = ("step", "question", "claim", "rule", "measured", "value", "se", "baseline", "baseline_se",
                   "baseline_kind", "threshold", "margin", "verdict", "why", "non_finite")
_FINDING_FIELDS = {"trained": "value", "trained_se": "se"}  # a finding's field -> its export column where they differ
NUMBER_COLUMNS = ("step", "question", "model", "quantity", "label", "unit", "index", "value")
RESULT_COLUMNS = ("model", "layer", "quantity", "index", "value")
FORMATS = ("csv", "parquet")
STUDY_FILE = "results.json"

Rows = list[dict[str, Any]]


def study_tables(document: Mapping[str, Any]) -> dict[str, Rows]:
    """The ``findings`` and ``numbers`` tables of a study's ``results.json`` document (schema 3)."""
    if document.get("schema_version") != 3:
        raise ResultSchemaError(f"export reads results.json schema 3, got {document.get('schema_version')!r}; rerun `seelike study` with this seelike")
    findings, numbers = [], []
    for name, step in document["steps"].items():
        for f in step.get("findings", []):
            findings.append({"step": name, "question": step["question"], "claim": f["claim"], "rule": f["rule"], "measured": f["measured"],
                             "value": f.get("trained"), "se": f.get("trained_se"), "baseline": f.get("baseline"), "baseline_se": f.get("baseline_se"),
                             "baseline_kind": f.get("baseline_kind", ""), "threshold": f.get("threshold"), "margin": f.get("margin"),
                             "verdict": f["verdict"], "why": f.get("why", ""),
                             "non_finite": "; ".join(f"{_FINDING_FIELDS.get(k, k)}={v}" for k, v in f.get("non_finite", {}).items())})
        labels = step.get("labels", {})
        for key, value in step.get("numbers", {}).items():
            label = labels.get(key, {})
            quantity = label.get("quantity", key) + (f"({label['arguments']})" if label.get("arguments") else "")
            common = {"step": name, "question": step["question"], "model": label.get("subject", ""), "quantity": quantity,
                      "label": label.get("label", key), "unit": label.get("unit", "")}
            numbers.extend({**common, "index": index, "value": element} for index, element in _elements(value))
    return {"findings": findings, "numbers": numbers}


def _elements(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """The numbers (or nulls) of a JSON value with their index ("" for a scalar, "3" or "3,1" in lists); strings are left out."""
    if isinstance(value, (list, tuple)):
        return [item for i, v in enumerate(value) for item in _elements(v, f"{prefix},{i}" if prefix else str(i))]
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return [(prefix, value)]
    return []


def result_rows(result: Result) -> Rows:
    """A result's arrays as tidy rows: model, layer, quantity, index, value (bundles: every bundled result)."""
    if isinstance(result, ResultBundle):
        return [row for key, inner in result.unbundle().items() for row in _rows(inner, str(inner.metadata.get("model", key)))]
    return _rows(result, str(result.metadata.get("model", "")))


def _rows(result: Result, model: str) -> Rows:
    rows = []
    for quantity, array in result.arrays.items():
        array = np.asarray(array)
        if quantity.endswith("_bootstrap") or array.dtype.kind not in "biuf":
            continue
        axes = _axis_names(result, array.shape)
        for position in itertools.product(*(range(length) for length in array.shape)):
            row = {"model": model, "layer": "", "quantity": quantity, "index": ""}
            extra = []
            for (column, labels), i in zip(axes, position):
                label = labels[i] if labels is not None else i
                if column == "names":  # CKA rows: 'model/layer'
                    row["model"], _, row["layer"] = str(label).partition("/")
                elif column in ("layer", "model") and not row[column]:
                    row[column] = str(label)
                else:
                    extra.append(f"{column}={label}")
            row["index"] = ",".join(extra)
            value = array[position].item() if array.ndim else array.item()
            row["value"] = None if isinstance(value, float) and not math.isfinite(value) else value
            rows.append(row)
    return rows


def _axis_names(result: Result, shape: Sequence[int]) -> list[tuple[str, list | None]]:
    """For each axis of an array: (column, labels) from the result's metadata; the first match of each kind wins."""
    meta = result.metadata
    candidates: list[tuple[str, Any]] = [
        ("names", meta.get("names")), ("layer", meta.get("layers")), ("layer", result.arrays.get("blocks")),
        ("readout", meta.get("readouts")), ("readout", meta.get("few_shot_readouts")), ("model", meta.get("models")),
        ("unit", meta.get("units")), ("position", meta.get("positions")),
    ]
    usable = [(column, list(np.asarray(labels).tolist()) if isinstance(labels, np.ndarray) else list(labels))
              for column, labels in candidates if isinstance(labels, (list, tuple, np.ndarray)) and len(labels)]
    used: set[str] = set()
    axes: list[tuple[str, list | None]] = []
    for axis, length in enumerate(shape):
        match = next(((column, labels) for column, labels in usable if len(labels) == length and column not in used), None)
        if match is None:
            axes.append((f"axis{axis}", None))
            continue
        column, labels = match
        used.add(column)
        axes.append(match)
        if column == "names":  # a CKA matrix: rows and columns are both 'model/layer'
            usable.insert(0, ("column", labels))
    return axes


def tables_of(run_dir: str | Path) -> dict[str, Rows]:
    """The tidy tables of a study folder, a result folder, or a folder of result folders (one table each)."""
    run_dir = Path(run_dir)
    if (run_dir / STUDY_FILE).exists():
        return study_tables(json.loads((run_dir / STUDY_FILE).read_text()))
    if (run_dir / METADATA_FILE).exists():
        return {"result": result_rows(load_result(run_dir))}
    inner = sorted(path.parent for path in run_dir.glob(f"*/{METADATA_FILE}"))
    if not inner:
        raise InvalidInputError(f"{run_dir} holds no seelike output: expected {STUDY_FILE} (a study) or {METADATA_FILE} "
                                "(an analysis command's --out folder)")
    return {f"result_{path.name}": result_rows(load_result(path)) for path in inner}


def columns_of(name: str, rows: Rows) -> tuple[str, ...]:
    """The columns of a table, in a fixed order (for empty tables too)."""
    fixed = {"findings": FINDING_COLUMNS, "numbers": NUMBER_COLUMNS}.get(name, RESULT_COLUMNS)
    return fixed if not rows else tuple(rows[0])


def write_tables(tables: Mapping[str, Rows], out: str | Path, table_format: str = "csv") -> list[Path]:
    """Write each table as ``out/NAME.csv`` (standard library; empty cells for null) or ``out/NAME.parquet`` (pandas + pyarrow)."""
    if table_format not in FORMATS:
        raise InvalidInputError(f"--format must be one of {', '.join(FORMATS)}, got {table_format!r}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, rows in tables.items():
        path = out / f"{name}.{table_format}"
        if table_format == "csv":
            with open(path, "w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns_of(name, rows))
                writer.writeheader()
                writer.writerows(rows)
        else:
            _require("pyarrow", "parquet export")
            frame(rows, columns_of(name, rows)).to_parquet(path, index=False)
        written.append(path)
    return written


def frame(rows: Rows, columns: Sequence[str] = RESULT_COLUMNS) -> Any:
    """A pandas DataFrame of tidy rows (pandas imported here, so the rest of seelike never needs it)."""
    pandas = _require("pandas", "a DataFrame")
    return pandas.DataFrame(rows, columns=list(columns))


def _require(module: str, purpose: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InvalidInputError(f"{purpose} needs {module}: pip install pandas pyarrow (CSV export needs neither)") from None
