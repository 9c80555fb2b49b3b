"""The study's single HTML page: a section per research question, readable offline (no CDN).

Figures are PNG files beside the page (``figures/``), referenced by relative paths, so the
folder can be zipped, mailed or served as it is. Every number on the page comes from the
step results that ``results.json`` also holds.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seelike.results import atomic_write_text
from seelike.study import QUESTIONS, StepOutcome, StudySettings

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em} h3{margin-bottom:.3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em} td,th{border:1px solid #ccc;padding:.25em .6em;vertical-align:top;text-align:left}
th{background:#f4f4f4} .held{color:#11772d;font-weight:600} .not-held{color:#b3261e;font-weight:600} .not-measured{color:#777}
.figures{display:flex;flex-wrap:wrap;gap:12px} .figures img{max-width:340px;border:1px solid #eee}
.error{background:#fdecea;border:1px solid #f5c2bd;padding:.6em;white-space:pre-wrap;font-family:monospace;font-size:.85em}
.muted{color:#666;font-size:.9em} code{background:#f4f4f4;padding:0 .2em}
"""


def _escape(value: Any) -> str:
    return html.escape(str(value))


def _verdict_class(verdict: str) -> str:
    return verdict.replace(" ", "-")


def _findings_table(rows: list[tuple[str, Any]]) -> str:
    if not rows:
        return ""
    lines = ["<table class='findings'><tr><th>step</th><th>paper's claim (and the rule applied)</th><th>measured here</th><th>baseline</th><th>verdict</th></tr>"]
    for step, finding in rows:
        lines.append(
            f"<tr><td>{_escape(step)}</td><td>{_escape(finding.claim)}</td><td>{_escape(finding.measured)}</td>"
            f"<td>{_escape(finding.baseline)}</td><td class='{_verdict_class(finding.verdict)}'>{_escape(finding.verdict)}</td></tr>"
        )
    lines.append("</table>")
    return "\n".join(lines)


def _numbers_table(numbers: dict[str, Any]) -> str:
    if not numbers:
        return ""
    rows = "".join(f"<tr><td><code>{_escape(k)}</code></td><td>{_escape(v)}</td></tr>" for k, v in numbers.items())
    return f"<table class='numbers'><tr><th>number</th><th>value</th></tr>{rows}</table>"


def _step_html(outcome: StepOutcome, directory: Path) -> str:
    step = outcome.step
    parts = [f"<h3 id='{_escape(step.name)}'>{_escape(step.title)}</h3>",
             f"<p class='muted'>step <code>{_escape(step.name)}</code> · models {', '.join(f'<code>{_escape(m)}</code>' for m in step.models)} · "
             f"{_escape(outcome.status)} in {outcome.seconds:.1f} s</p>"]
    if outcome.status in ("error", "skipped"):
        label = "This analysis failed" if outcome.status == "error" else "Not run"
        parts.append(f"<div class='error'>{label}: {_escape(outcome.error)}</div>")
        return "\n".join(parts)
    section = outcome.section
    if section.text:
        parts.append(f"<p>{_escape(section.text)}</p>")
    if section.figures:
        images = "".join(
            f"<img src='{_escape(Path(os.path.relpath(figure, directory)).as_posix())}' alt='{_escape(Path(figure).stem)}'>"
            for figure in section.figures
        )
        parts.append(f"<div class='figures'>{images}</div>")
    parts.append(_numbers_table(section.numbers))
    parts.append(_findings_table([(step.name, f) for f in section.findings]))
    return "\n".join(parts)


def write_report(outcomes: Sequence[StepOutcome], settings: StudySettings, directory: Path, environment: dict[str, Any]) -> Path:
    """Write ``directory/index.html`` for a study's outcomes and return its path."""
    directory.mkdir(parents=True, exist_ok=True)
    all_findings = [(o.step.name, f) for o in outcomes if o.section for f in o.section.findings]
    body = [
        "<h1>Do these vision models see alike?</h1>",
        f"<p class='muted'>seelike study on <code>{_escape(settings.data)}</code> ({_escape(settings.split)} split), "
        f"n = {settings.n}, batch {settings.batch_size}, seed {settings.seed}. Every number comes from <code>results.json</code> beside this report.</p>",
        "<h2 id='findings'>Findings at a glance</h2>",
        _findings_table(all_findings) or "<p>No findings were measured.</p>",
    ]
    for question, text in QUESTIONS.items():
        body.append(f"<h2 id='{question}'>{question}: {_escape(text)}</h2>")
        steps = [o for o in outcomes if o.step.question == question]
        if not steps:
            body.append("<p class='not-measured'>Not measured in this study.</p>")
        body.extend(_step_html(o, directory) for o in steps)
    body.append("<h2 id='environment'>Environment</h2>")
    body.append(_numbers_table({**environment, **{f"seconds[{o.step.name}]": o.seconds for o in outcomes}}))
    page = f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>seelike study</title><style>{STYLE}</style></head><body>{''.join(body)}</body></html>"
    path = directory / "index.html"
    atomic_write_text(path, page)
    return path
