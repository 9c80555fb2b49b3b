"""The study's single HTML page, rendered from the ``results.json`` document alone (readable offline, no CDN).

Figures are PNG files beside the page (``figures/``), referenced by relative paths, so the folder
can be zipped, mailed or served as it is. Every number on the page is a number of ``results.json``;
this module reads that document (a plain dict, schema 3) and never the study engine's runtime types,
so a saved study can be re-rendered with :func:`render_results` without rerunning anything.

The page: the verdict counts and a table of contents at the top, the findings table (each row links
to its step's section), then one section per research question and step. A section leads with the
figures that answer its question (each opens full size on click), then its findings and its numbers
(labelled, with units); figures of baseline models (random-init twins, second seeds) are folded
away under "Baselines".
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from seelike.errors import ResultSchemaError
from seelike.results import atomic_write_text


SUPPORTED_SCHEMA = 3
VERDICT_ORDER = ("held", "also at baseline", "not held", "not measured")
WIDE = 1.8  # figures wider than this aspect ratio (strips of panels) take the whole column

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1280px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em} h3{margin-bottom:.3em}
a{color:#0b57d0} section.step{margin-top:2.2em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} td,th{border:1px solid #ccc;padding:.25em .6em;vertical-align:top;text-align:left}
th{background:#f4f4f4} .held{color:#11772d;font-weight:600} .also-at-baseline{color:#8a5a00;font-weight:600} .not-held{color:#b3261e;font-weight:600} .not-measured{color:#777}
#summary{font-size:1.15em} nav#toc{background:#fafafa;border:1px solid #e4e4e4;padding:.4em 1.2em;margin:1em 0;font-size:.92em}
nav#toc>ol{columns:2 420px;column-gap:2em} nav#toc>ol>li{break-inside:avoid;margin-bottom:.3em} nav#toc ol{margin:.2em 0} .toc-title{font-weight:700;margin:.3em 0}
.figures{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,460px),1fr));gap:16px;margin:.8em 0}
.figures figure{margin:0} .figures figure.wide{grid-column:1/-1} .figures img{width:100%;height:auto;border:1px solid #eee;display:block}
figcaption{font-size:.8em;color:#666;overflow-wrap:anywhere}
details.baselines{margin:.8em 0;padding:.3em .8em;border:1px solid #e4e4e4;background:#fcfcfc} details.baselines summary{cursor:pointer;font-weight:600}
.error{background:#fdecea;border:1px solid #f5c2bd;padding:.6em;white-space:pre-wrap;font-family:monospace;font-size:.85em}
.muted{color:#666;font-size:.9em} code{background:#f4f4f4;padding:0 .2em;overflow-wrap:anywhere}
"""


def _escape(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _verdict_class(verdict: str) -> str:
    return verdict.replace(" ", "-")


def number_text(value: Any, digits: int = 4) -> str:
    """A JSON number or list of numbers as the report shows it (the test compares the page with this); null is "—"."""
    if value is None:
        return "—"
    if isinstance(value, bool) or isinstance(value, str):
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


def paper_link(document: Mapping[str, Any], question: str | None = None) -> str:
    """"Raghu et al. 2021, §4, Fig. 1, 2" linked to the paper (the paper alone without a question)."""
    paper = document["paper"]
    where = paper["sections"].get(question) if question else None
    text = f"{paper['citation']}, {where}" if where else paper["citation"]
    return f"<a class='paper' href='{_escape(paper['url'])}'>{_escape(text)}</a>"


def _field(finding: Mapping[str, Any], name: str) -> Any:
    """A finding's number; for one that is null in JSON (NaN or ±inf) the text ``non_finite`` keeps ("-inf")."""
    value = finding.get(name)
    return value if value is not None else finding.get("non_finite", {}).get(name)


def _findings_table(rows: list[tuple[str, str, Mapping[str, Any]]]) -> str:
    """Findings as ``(step name, step title, finding)``; the step cell links to the step's section."""
    if not rows:
        return ""
    lines = ["<table class='findings'><tr><th>step</th><th>paper's claim</th><th>rule</th><th>measured (trained)</th>"
             "<th>statistic ± SE</th><th>baseline (same rule)</th><th>margin</th><th>verdict</th></tr>"]
    for step, title, f in rows:
        baseline = f"{_escape(f.get('baseline_kind', ''))}: {_escape(f.get('baseline_measured', ''))} → {_escape(_estimate(_field(f, 'baseline'), _field(f, 'baseline_se')))}" \
            if _field(f, 'baseline') is not None else "no baseline measured"
        why = f"<div class='muted'>{_escape(f['why'])}</div>" if f.get("why") else ""
        lines.append(
            f"<tr><td><a href='#{_escape(step)}'>{_escape(title)}</a></td><td>{_escape(f['claim'])}</td><td>{_escape(f['rule'])}</td><td>{_escape(f['measured'])}</td>"
            f"<td>{_escape(_estimate(_field(f, 'trained'), _field(f, 'trained_se')))}</td><td>{baseline}</td>"
            f"<td>{_escape(number_text(_field(f, 'margin')))}</td>"
            f"<td class='{_verdict_class(f['verdict'])}'><span class='verdict'>{_escape(f['verdict'])}</span>{why}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _numbers_table(numbers: Mapping[str, Any], labels: Mapping[str, Mapping[str, str]]) -> str:
    """A step's numbers by readable label, subject (model or qualifier) and unit; the raw key as a tooltip."""
    if not numbers:
        return ""
    rows = []
    for key, value in numbers.items():
        label = labels.get(key, {})
        rows.append(f"<tr title='{_escape(key)}'><td>{_escape(label.get('label', key))}</td><td>{_escape(label.get('subject', ''))}</td>"
                    f"<td>{_escape(number_text(value))}</td><td>{_escape(label.get('unit', ''))}</td></tr>")
    return f"<table class='numbers'><tr><th>quantity</th><th>of</th><th>value</th><th>unit</th></tr>{''.join(rows)}</table>"


def _figures(figures: Sequence[Mapping[str, Any]]) -> str:
    """Figures in a responsive grid; each opens full size on click; strips of panels take the whole width."""
    if not figures:
        return ""
    items = []
    for figure in figures:
        path, width, height = figure["path"], figure.get("width"), figure.get("height")
        wide = " wide" if width and height and width / height > WIDE else ""
        limit = f" style='max-width:{int(width)}px'" if width else ""
        url = _escape(quote(path, safe="/"))  # a model name may hold '?', '#' or '%', which a URL reads otherwise
        items.append(f"<figure class='figure{wide}'{limit}><a href='{url}'><img src='{url}' alt='{_escape(Path(path).stem)}'></a>"
                     f"<figcaption>{_escape(Path(path).with_suffix('').as_posix().removeprefix('figures/'))}</figcaption></figure>")
    return f"<div class='figures'>{''.join(items)}</div>"


def _step_html(name: str, step: Mapping[str, Any]) -> str:
    models = ", ".join(f"{_escape(role)} <code>{_escape(spec)}</code>" for role, spec in step["models"].items())
    parts = [f"<section class='step' id='{_escape(name)}'><h3>{_escape(step['title'])}</h3>",
             f"<p class='muted'>step <code>{_escape(name)}</code> · models {models} · {_escape(step['status'])} in {step['seconds']:.1f} s</p>"]
    if step.get("note"):
        parts.append(f"<p class='muted'>{_escape(step['note'])}</p>")
    if step.get("planned_skip"):
        parts.append(f"<p class='muted'>Left out by the plan: {_escape(step['error'])}</p></section>")
        return "\n".join(parts)
    if step["status"] in ("error", "skipped"):
        label = "This analysis failed" if step["status"] == "error" else "Not run"
        parts.append(f"<div class='error'>{label}: {_escape(step['error'])}</div></section>")
        return "\n".join(parts)
    if step.get("text"):
        parts.append(f"<p>{_escape(step['text'])}</p>")
    figures = step.get("figures", [])
    parts.append(_figures([f for f in figures if not f["baseline"]]))
    parts.append(_findings_table([(name, step["title"], f) for f in step.get("findings", [])]))
    parts.append(_numbers_table(step.get("numbers", {}), step.get("labels", {})))
    baseline_figures = [f for f in figures if f["baseline"]]
    if baseline_figures:
        roles = "; ".join(f"{_escape(role)}: {_escape(what)}" for role, what in step.get("baselines", {}).items())
        parts.append(f"<details class='baselines'><summary>Baselines ({len(baseline_figures)} figures; {roles})</summary>"
                     f"{_figures(baseline_figures)}</details>")
    parts.append("</section>")
    return "\n".join(parts)


def _summary(document: Mapping[str, Any]) -> tuple[str, str]:
    """The verdict counts (top of the page) and the list of why rows are "also at baseline" or "not measured"."""
    counts = document["summary"]
    total = sum(counts.values())
    items = " · ".join(f"<span class='{_verdict_class(v)}' data-verdict='{_escape(v)}' data-count='{counts.get(v, 0)}'>{counts.get(v, 0)} {_escape(v)}</span>"
                       for v in VERDICT_ORDER)
    steps = document["steps"]
    why = [(name, f) for name, step in steps.items() for f in step.get("findings", []) if f["verdict"] in ("also at baseline", "not measured")]
    lines = "".join(f"<li><b>{_escape(f['verdict'])}</b> — {_escape(f['claim'])} (<a href='#{_escape(name)}'>{_escape(name)}</a>): {_escape(f['why'])}</li>"
                    for name, f in why)
    # a step the plan left out (its models are not in the preset) is not a failure: said apart, not in red
    failed = [name for name, step in steps.items() if step["status"] in ("error", "skipped") and not step.get("planned_skip")]
    planned = [name for name, step in steps.items() if step.get("planned_skip")]
    failed_text = f"<p class='not-held'>Steps that did not run: {_step_links(failed)}.</p>" if failed else ""
    planned_text = f"<p class='planned'>Steps the plan left out (their models are not in this study): {_step_links(planned)}.</p>" if planned else ""
    return (f"<p id='summary'>{total} findings: {items}.</p>{failed_text}{planned_text}",
            f"<p>Why rows are “also at baseline” or “not measured”:</p><ul class='why'>{lines}</ul>" if lines else "")


def _step_links(names: Sequence[str]) -> str:
    return ", ".join(f"<a href='#{_escape(name)}'>{_escape(name)}</a>" for name in names)


def _contents(document: Mapping[str, Any]) -> str:
    """The table of contents: the findings, every research question with its steps, the environment."""
    items = ["<li><a href='#findings'>Findings at a glance</a></li>"]
    for question, text in document["questions"].items():
        steps = "".join(f"<li><a href='#{_escape(name)}'>{_escape(step['title'])}</a></li>"
                        for name, step in document["steps"].items() if step["question"] == question)
        items.append(f"<li><a href='#{_escape(question)}'>{_escape(question)}: {_escape(text)}</a>{f'<ol>{steps}</ol>' if steps else ''}</li>")
    items.append("<li><a href='#environment'>Environment</a></li>")
    return f"<nav id='toc'><p class='toc-title'>Contents</p><ol>{''.join(items)}</ol></nav>"


def _environment(document: Mapping[str, Any]) -> str:
    rows = {**document["environment"], **{f"seconds of {name}": step["seconds"] for name, step in document["steps"].items()}}
    cells = "".join(f"<tr><td>{_escape(key)}</td><td>{_escape(number_text(value))}</td></tr>" for key, value in rows.items())
    return f"<table class='environment'>{cells}</table>"


def write_report(document: Mapping[str, Any], directory: Path) -> Path:
    """Write ``directory/index.html`` for a study's ``results.json`` document and return its path."""
    version = document.get("schema_version")
    if version != SUPPORTED_SCHEMA:
        raise ResultSchemaError(f"this report renders results.json schema {SUPPORTED_SCHEMA}, got {version!r}; rerun `seelike study` with this seelike")
    directory.mkdir(parents=True, exist_ok=True)
    settings, steps = document["settings"], document["steps"]
    all_findings = [(name, step["title"], f) for name, step in steps.items() for f in step.get("findings", [])]
    counts, why = _summary(document)
    body = [
        "<h1>Do these vision models see alike?</h1>",
        counts,
        f"<p class='not-held' id='dry-run'><b>{_escape(document['dry_run'])}.</b></p>" if document.get("dry_run") else "",
        f"<p class='muted'>seelike study on <code>{_escape(settings['data'])}</code> ({_escape(settings['split'])} split), "
        f"n = {settings['n']}, batch {settings['batch_size']}, seed {settings['seed']}, after {paper_link(document)}, "
        f"“{_escape(document['paper']['title'])}”. Every number comes from <code>results.json</code> beside this report. "
        "A difference counts only beyond 2 standard errors (or beyond the seed-to-seed difference); “held” needs the baseline — random init, "
        "the patch embedding alone, or a second seed, under the same rule — not to meet the claim as well.</p>",
        _contents(document),
        "<h2 id='findings'>Findings at a glance</h2>",
        _findings_table(all_findings) or "<p>No findings were measured.</p>",
        why,
    ]
    for question, text in document["questions"].items():
        body.append(f"<h2 id='{_escape(question)}'>{_escape(question)}: {_escape(text)}</h2>")
        body.append(f"<p class='muted'>In the paper: {paper_link(document, question)}.</p>")
        chosen = [(name, step) for name, step in steps.items() if step["question"] == question]
        if not chosen:
            body.append("<p class='not-measured'>Not measured in this study.</p>")
        body.extend(_step_html(name, step) for name, step in chosen)
    body.append("<h2 id='environment'>Environment</h2>")
    body.append(_environment(document))
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>seelike study</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>")
    path = directory / "index.html"
    atomic_write_text(path, page)
    return path


def render_results(results_json: str | Path, directory: str | Path | None = None) -> Path:
    """Re-render a saved study's report from its ``results.json`` (default: ``report/`` beside it)."""
    results_json = Path(results_json)
    document = json.loads(results_json.read_text())
    return write_report(document, Path(directory) if directory else results_json.parent / "report")
