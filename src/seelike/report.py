"""The study's single HTML page, rendered from the ``results.json`` document alone (readable offline, no CDN).

Figures are PNG files beside the page (``figures/``), referenced by relative paths, so the folder
can be zipped, mailed or served as it is. Every number on the page is a number of ``results.json``;
this module reads that document (a plain dict, schema 2) and never the study engine's runtime types,
so a saved study can be re-rendered with :func:`render_results` without rerunning anything.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from seelike.errors import ResultSchemaError
from seelike.results import atomic_write_text

SUPPORTED_SCHEMA = 2
VERDICT_ORDER = ("held", "also at baseline", "not held", "not measured")

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em} h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} td,th{border:1px solid #ccc;padding:.25em .6em;vertical-align:top;text-align:left}
th{background:#f4f4f4} .held{color:#11772d;font-weight:600} .also-at-baseline{color:#8a5a00;font-weight:600} .not-held{color:#b3261e;font-weight:600} .not-measured{color:#777}
.figures{display:flex;flex-wrap:wrap;gap:12px} .figures img{max-width:340px;border:1px solid #eee}
.error{background:#fdecea;border:1px solid #f5c2bd;padding:.6em;white-space:pre-wrap;font-family:monospace;font-size:.85em}
.muted{color:#666;font-size:.9em} code{background:#f4f4f4;padding:0 .2em}
"""


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _verdict_class(verdict: str) -> str:
    return verdict.replace(" ", "-")


def number_text(value: Any, digits: int = 4) -> str:
    """A JSON number or list of numbers as the report shows it (the test compares the page with this)."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return str(value)
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)
    if isinstance(value, Sequence):
        return ", ".join(number_text(v, digits) for v in value)
    return str(value)


def _estimate(value: Any, se: Any) -> str:
    if value is None:
        return "—"
    text = number_text(value)
    return f"{text} ± {number_text(se, 2)}" if isinstance(se, (int, float)) and math.isfinite(se) else text


def _findings_table(rows: list[tuple[str, Mapping[str, Any]]]) -> str:
    if not rows:
        return ""
    lines = ["<table class='findings'><tr><th>step</th><th>paper's claim</th><th>rule</th><th>measured (trained)</th>"
             "<th>statistic ± SE</th><th>baseline (same rule)</th><th>margin</th><th>verdict</th></tr>"]
    for step, f in rows:
        baseline = f"{_escape(f.get('baseline_kind', ''))}: {_escape(f.get('baseline_measured', ''))} → {_escape(_estimate(f.get('baseline'), f.get('baseline_se')))}" \
            if f.get("baseline") is not None else "no baseline measured"
        why = f"<div class='muted'>{_escape(f['why'])}</div>" if f.get("why") else ""
        lines.append(
            f"<tr><td>{_escape(step)}</td><td>{_escape(f['claim'])}</td><td>{_escape(f['rule'])}</td><td>{_escape(f['measured'])}</td>"
            f"<td>{_escape(_estimate(f.get('trained'), f.get('trained_se')))}</td><td>{baseline}</td>"
            f"<td>{_escape(number_text(f.get('margin')) if f.get('margin') is not None else '—')}</td>"
            f"<td class='{_verdict_class(f['verdict'])}'><span class='verdict'>{_escape(f['verdict'])}</span>{why}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _numbers_table(numbers: Mapping[str, Any]) -> str:
    if not numbers:
        return ""
    rows = "".join(f"<tr><td><code>{_escape(k)}</code></td><td>{_escape(number_text(v))}</td></tr>" for k, v in numbers.items())
    return f"<table class='numbers'><tr><th>number</th><th>value</th></tr>{rows}</table>"


def _step_html(name: str, step: Mapping[str, Any]) -> str:
    models = ", ".join(f"{_escape(role)} <code>{_escape(spec)}</code>" for role, spec in step["models"].items())
    parts = [f"<h3 id='{_escape(name)}'>{_escape(step['title'])}</h3>",
             f"<p class='muted'>step <code>{_escape(name)}</code> · models {models} · {_escape(step['status'])} in {step['seconds']:.1f} s</p>"]
    if step.get("note"):
        parts.append(f"<p class='muted'>{_escape(step['note'])}</p>")
    if step["status"] in ("error", "skipped"):
        label = "This analysis failed" if step["status"] == "error" else "Not run"
        parts.append(f"<div class='error'>{label}: {_escape(step['error'])}</div>")
        return "\n".join(parts)
    if step.get("text"):
        parts.append(f"<p>{_escape(step['text'])}</p>")
    if step.get("figures"):
        images = "".join(f"<img src='{_escape(figure)}' alt='{_escape(Path(figure).stem)}'>" for figure in step["figures"])
        parts.append(f"<div class='figures'>{images}</div>")
    parts.append(_numbers_table(step.get("numbers", {})))
    parts.append(_findings_table([(name, f) for f in step.get("findings", [])]))
    return "\n".join(parts)


def _summary(document: Mapping[str, Any]) -> str:
    counts = document["summary"]
    total = sum(counts.values())
    items = " · ".join(f"<span class='{_verdict_class(v)}'>{counts.get(v, 0)} {_escape(v)}</span>" for v in VERDICT_ORDER)
    why = [(name, f) for name, step in document["steps"].items() for f in step.get("findings", [])
           if f["verdict"] in ("also at baseline", "not measured")]
    lines = "".join(f"<li><b>{_escape(f['verdict'])}</b> — {_escape(f['claim'])} (<code>{_escape(name)}</code>): {_escape(f['why'])}</li>" for name, f in why)
    failed = [name for name, step in document["steps"].items() if step["status"] in ("error", "skipped")]
    failed_text = f"<p class='not-held'>Steps that did not run: {', '.join(failed)}.</p>" if failed else ""
    return (f"<p id='summary'>{total} findings: {items}.</p>{failed_text}"
            + (f"<p>Why rows are “also at baseline” or “not measured”:</p><ul class='why'>{lines}</ul>" if lines else ""))


def write_report(document: Mapping[str, Any], directory: Path) -> Path:
    """Write ``directory/index.html`` for a study's ``results.json`` document and return its path."""
    version = document.get("schema_version")
    if version != SUPPORTED_SCHEMA:
        raise ResultSchemaError(f"this report renders results.json schema {SUPPORTED_SCHEMA}, got {version!r}; rerun `seelike study` with this seelike")
    directory.mkdir(parents=True, exist_ok=True)
    settings, steps = document["settings"], document["steps"]
    all_findings = [(name, f) for name, step in steps.items() for f in step.get("findings", [])]
    body = [
        "<h1>Do these vision models see alike?</h1>",
        f"<p class='not-held' id='dry-run'><b>{_escape(document['dry_run'])}.</b></p>" if document.get("dry_run") else "",
        f"<p class='muted'>seelike study on <code>{_escape(settings['data'])}</code> ({_escape(settings['split'])} split), "
        f"n = {settings['n']}, batch {settings['batch_size']}, seed {settings['seed']}. Every number comes from <code>results.json</code> beside this report. "
        "A difference counts only beyond 2 standard errors (or beyond the seed-to-seed difference); “held” needs the baseline — random init, "
        "the patch embedding alone, or a second seed, under the same rule — not to meet the claim as well.</p>",
        "<h2 id='findings'>Findings at a glance</h2>",
        _summary(document),
        _findings_table(all_findings) or "<p>No findings were measured.</p>",
    ]
    for question, text in document["questions"].items():
        body.append(f"<h2 id='{question}'>{question}: {_escape(text)}</h2>")
        chosen = [(name, step) for name, step in steps.items() if step["question"] == question]
        if not chosen:
            body.append("<p class='not-measured'>Not measured in this study.</p>")
        body.extend(_step_html(name, step) for name, step in chosen)
    body.append("<h2 id='environment'>Environment</h2>")
    body.append(_numbers_table({**document["environment"], **{f"seconds[{name}]": step["seconds"] for name, step in steps.items()}}))
    page = f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>seelike study</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    path = directory / "index.html"
    atomic_write_text(path, page)
    return path


def render_results(results_json: str | Path, directory: str | Path | None = None) -> Path:
    """Re-render a saved study's report from its ``results.json`` (default: ``report/`` beside it)."""
    results_json = Path(results_json)
    document = json.loads(results_json.read_text())
    return write_report(document, Path(directory) if directory else results_json.parent / "report")
