"""The study's report and its numbers to take away: the HTML page in headless Chromium (links, table of
contents, full-size figures, verdict counts, baselines folded away), labelled numbers, standard JSON,
and `seelike export` of a study and of an analysis command's result."""

from __future__ import annotations

import csv
import html
import importlib.util
import json
import math
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from typer.testing import CliRunner

from seelike.cli import app
from seelike.results import load_result
from seelike.study.labels import PAPER_URL, describe

ROOT = Path(__file__).parents[1]


def _screenshot_tool():
    spec = importlib.util.spec_from_file_location("report_screenshot", ROOT / "tools" / "report_screenshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _needs_chromium():
    tool = _screenshot_tool()
    if tool.find_chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium and chromium-driver (see .ci/run)")
        pytest.skip("chromium / chromedriver not installed (apt-get install chromium chromium-driver)")
    pytest.importorskip("selenium")
    return tool


def _document(study_dir: Path) -> dict:
    return json.loads((study_dir / "results.json").read_text())


def test_report_navigates_in_headless_chromium(study_dir):
    """Issue 18 items 1, 2, 4: every link resolves, the contents list every section, figures open full size,
    the verdict counts match results.json, baseline figures sit folded under "Baselines"."""
    tool = _needs_chromium()
    document = _document(study_dir)
    report = study_dir / "report" / "index.html"
    driver = tool.chromium(1280, 1000)
    try:
        driver.get(report.resolve().as_uri())
        images = driver.execute_script("return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])")
        assert images and all(ok for _, ok in images), [src for src, ok in images if not ok]

        links = driver.execute_script("return Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
        ids = set(driver.execute_script("return Array.from(document.querySelectorAll('[id]')).map(e => e.id)"))
        for href in links:
            if href.startswith("#"):
                assert unquote(href[1:]) in ids, href
            elif urlparse(href).scheme:
                assert href == PAPER_URL, href  # the one link that leaves the report
            else:
                assert (report.parent / unquote(href)).is_file(), href

        toc = driver.execute_script("return Array.from(document.querySelectorAll('nav#toc a')).map(a => a.getAttribute('href').slice(1))")
        sections = {"findings", "environment", *document["questions"], *document["steps"]}
        assert set(toc) == sections and sections <= ids

        figure_links = driver.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.parentElement.tagName, i.parentElement.getAttribute('href')])")
        assert all(parent == "A" and href == src and (report.parent / unquote(href)).is_file() for src, parent, href in figure_links)

        counts = driver.execute_script("return Object.fromEntries(Array.from(document.querySelectorAll('#summary [data-verdict]'))"
                                       ".map(s => [s.dataset.verdict, Number(s.dataset.count)]))")
        assert counts == document["summary"]
        summary = driver.execute_script("return document.getElementById('summary').textContent")
        assert all(f"{count} {verdict}" in summary for verdict, count in document["summary"].items())

        rows = driver.execute_script("return Array.from(document.querySelectorAll('#findings ~ table.findings tr td:first-child a'))"
                                     ".map(a => a.getAttribute('href').slice(1))")
        assert len(rows) == sum(document["summary"].values()) and set(rows) <= set(document["steps"])

        folded = driver.execute_script("return Array.from(document.querySelectorAll('details.baselines img')).map(i => i.getAttribute('src'))")
        folded = [unquote(src) for src in folded]
        shown = driver.execute_script("return Array.from(document.querySelectorAll('img')).filter(i => !i.closest('details'))"
                                      ".map(i => [i.getAttribute('src'), i.getBoundingClientRect().width])")
        shown = [(unquote(src), width) for src, width in shown]
        figures = [f for step in document["steps"].values() for f in step["figures"]]
        assert sorted(folded) == sorted(f["path"] for f in figures if f["baseline"]) and folded
        assert sorted(src for src, _ in shown) == sorted(f["path"] for f in figures if not f["baseline"])
        assert all(width > 400 for _, width in shown), shown  # was at most 340 px
    finally:
        driver.quit()


def test_rq1_leads_with_the_trained_models_and_folds_the_random_init_heatmaps(study_dir):
    figures = _document(study_dir)["steps"]["rq1_layer_similarity"]["figures"]
    main = [f["path"] for f in figures if not f["baseline"]]
    assert len(main) == 3 and not any("random" in path for path in main)  # ViT, ResNet, ViT vs ResNet
    assert len(figures) - len(main) == 7 and all(f["width"] > 0 and f["height"] > 0 for f in figures)


def test_every_number_has_a_readable_label_and_unit(study_dir):
    """A new raw key in a section fails here until study/labels.py names it."""
    page = (study_dir / "report" / "index.html").read_text()
    for name, step in _document(study_dir)["steps"].items():
        assert set(step["labels"]) == set(step["numbers"]), name
        for key, value in step["numbers"].items():
            label = describe(key)
            assert label.known, f"{name}: number {key!r} has no label in seelike/study/labels.py"
            assert step["labels"][key]["label"] == label.label != key
            assert html.escape(label.label) in page


def test_describe_takes_a_key_apart():
    label = describe("cka(block 0, block 2)[vit[width=32]&no_mlp_skip=[1]]")
    assert (label.quantity, label.arguments, label.subject, label.known) == ("cka", "block 0, block 2", "vit[width=32]&no_mlp_skip=[1]", True)
    assert "(block 0, block 2)" in label.label
    assert describe("share_local[vit-cls]").unit.startswith("fraction") and not describe("no_such_number[vit]").known


def test_report_numbers_match_results_json(study_dir):
    from seelike.report import number_text

    document = _document(study_dir)
    page = (study_dir / "report" / "index.html").read_text()
    for step in document["steps"].values():
        for value in step["numbers"].values():
            assert html.escape(number_text(value)) in page
        for finding in step["findings"]:
            assert html.escape(finding["measured"]) in page and html.escape(finding["rule"]) in page


def test_the_report_cites_the_paper_never_a_file_outside_the_repository(study_dir):
    page = (study_dir / "report" / "index.html").read_text()
    assert "PAPER.md" not in page and PAPER_URL in page and "Raghu et al. 2021, §4" in page
    sources = [ROOT / "src" / "seelike" / "report.py", *(ROOT / "src" / "seelike" / "study").glob("*.py")]
    assert not [path.name for path in sources if "PAPER.md" in path.read_text()]


def test_the_report_renders_from_results_json_alone(study_dir, tmp_path):
    """Issue 13 item 5: report.py reads the document, not the engine's types, and refuses other schemas."""
    import ast

    from seelike.errors import ResultSchemaError
    from seelike.report import render_results, write_report

    source = ROOT / "src" / "seelike" / "report.py"
    imported = {node.module for node in ast.walk(ast.parse(source.read_text())) if isinstance(node, ast.ImportFrom)}
    assert not any(module and module.startswith("seelike.study") for module in imported)
    page = render_results(study_dir / "results.json", tmp_path / "again")
    assert page.read_text().count("<tr") == (study_dir / "report" / "index.html").read_text().count("<tr")
    with pytest.raises(ResultSchemaError, match="schema"):
        write_report({"schema_version": 2}, tmp_path / "old")


def test_results_json_is_standard_json_with_numbers_as_numbers(study_dir):
    """Issue 18 item 9: no NaN or Infinity (other languages' JSON readers refuse them), numbers as numbers."""
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    document = json.loads((study_dir / "results.json").read_text(), parse_constant=refuse)
    assert document["schema_version"] == 3

    def numeric(value) -> bool:
        if isinstance(value, list):
            return all(numeric(v) or isinstance(v, str) for v in value)
        return value is None or isinstance(value, (int, float))

    for name, step in document["steps"].items():
        assert all(numeric(value) for value in step["numbers"].values()), name
        for finding in step["findings"]:
            for field in ("trained", "trained_se", "baseline", "baseline_se", "threshold", "margin"):
                assert numeric(finding[field]) and not isinstance(finding[field], list), (name, field)
            if finding["trained"] is None:  # undefined (not measured) or infinite, which the measured text shows
                assert finding["verdict"] == "not measured" or "inf" in finding["measured"], (name, finding)


def test_nan_and_infinity_become_null():
    from seelike.study.engine import _jsonable

    assert _jsonable({"a": float("nan"), "b": np.array([1.5, np.inf]), "c": np.float32(-np.inf), "d": (2, "x")}) == \
        {"a": None, "b": [1.5, None], "c": None, "d": [2, "x"]}


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _count_numbers(value) -> int:
    if isinstance(value, list):
        return sum(_count_numbers(v) for v in value)
    return 0 if isinstance(value, str) else 1


def test_export_of_a_study_gives_tidy_findings_and_numbers(study_dir, tmp_path):
    outcome = CliRunner().invoke(app, ["export", str(study_dir), "--format", "csv", "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    document = _document(study_dir)
    findings = _read_csv(tmp_path / "findings.csv")
    assert len(findings) == sum(document["summary"].values())
    assert {v: sum(row["verdict"] == v for row in findings) for v in document["summary"]} == document["summary"]
    first = document["steps"]["rq1_layer_similarity"]["findings"][0]
    row = next(r for r in findings if r["step"] == "rq1_layer_similarity")
    assert (row["claim"], row["rule"], float(row["value"]), row["question"]) == (first["claim"], first["rule"], first["trained"], "RQ1")

    numbers = _read_csv(tmp_path / "numbers.csv")
    expected = sum(_count_numbers(value) for step in document["steps"].values() for value in step["numbers"].values())
    assert len(numbers) == expected
    step = document["steps"]["rq2_attention_distance"]
    key = next(k for k in step["numbers"] if k.startswith("mean_distance_px["))
    rows = [r for r in numbers if r["step"] == "rq2_attention_distance" and r["quantity"] == "mean_distance_px"
            and r["model"] == step["labels"][key]["subject"]]
    assert [float(r["value"]) for r in rows] == step["numbers"][key] and [r["index"] for r in rows] == [str(i) for i in range(len(rows))]
    assert rows[0]["unit"] == "px" and rows[0]["label"].startswith("Mean attention distance")


@pytest.fixture(scope="module")
def cka_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cka")
    outcome = CliRunner().invoke(app, ["cka", "seelike:vit?width=16&depth=2&heads=2", "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]",
                                       "--data", "synthetic:n=16,size=28,channels=1,classes=2,seed=0", "--n", "16", "--batch-size", "8", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    return out


def test_export_of_a_cka_result_gives_one_row_per_model_layer_and_quantity(cka_dir, tmp_path):
    outcome = CliRunner().invoke(app, ["export", str(cka_dir), "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    result = load_result(cka_dir)
    rows = _read_csv(tmp_path / "result.csv")
    assert len(rows) == sum(np.asarray(a).size for a in result.arrays.values())
    names = result.names
    for i, j in ((0, 0), (1, len(names) - 1), (len(names) - 1, 2)):
        model, layer = names[i].split("/", 1)
        row = next(r for r in rows if r["quantity"] == "cka" and r["model"] == model and r["layer"] == layer and r["index"] == f"column={names[j]}")
        assert math.isclose(float(row["value"]), float(result["cka"][i, j]), rel_tol=1e-12)


def test_result_to_frame_with_pandas(cka_dir):
    pandas = pytest.importorskip("pandas")
    frame = load_result(cka_dir).to_frame()
    assert isinstance(frame, pandas.DataFrame) and list(frame.columns) == ["model", "layer", "quantity", "index", "value"]
    cka = frame[frame.quantity == "cka"]
    assert len(cka) == load_result(cka_dir)["cka"].size and cka.value.between(-1e-6, 1 + 1e-6).all()


def test_parquet_without_pandas_says_what_to_install(cka_dir, tmp_path):
    if importlib.util.find_spec("pandas") and importlib.util.find_spec("pyarrow"):
        pytest.skip("pandas and pyarrow are installed")
    outcome = CliRunner().invoke(app, ["export", str(cka_dir), "--format", "parquet", "--out", str(tmp_path)])
    assert outcome.exit_code == 2 and "pip install" in outcome.output and "Traceback" not in outcome.output


def test_export_of_a_folder_of_results_gives_one_table_each(study_dir, tmp_path):
    """Commands with several models write OUT/NAME per model; the study's cache is such a folder too."""
    outcome = CliRunner().invoke(app, ["export", str(study_dir / "cache"), "--out", str(tmp_path)])
    assert outcome.exit_code == 0, outcome.output
    entries = sorted(path.parent.name for path in (study_dir / "cache").glob("*/result.json"))
    assert sorted(path.stem for path in tmp_path.glob("*.csv")) == [f"result_{name}" for name in entries]
    attention = next(name for name in entries if name.startswith("rq2_attention_distance"))
    rows = _read_csv(tmp_path / f"result_{attention}.csv")
    vit = load_result(study_dir / "cache" / attention).unbundle()["vit"]
    distance = [r for r in rows if r["model"] == vit.metadata["model"] and r["quantity"] == "distance"]
    assert len(distance) == vit["distance"].size and float(distance[-1]["value"]) == float(vit["distance"][-1, -1])
    assert distance[0]["layer"] == str(vit.metadata["layers"][0]) and not any(r["quantity"].endswith("_bootstrap") for r in rows)


def test_export_refuses_a_folder_without_seelike_output(tmp_path):
    outcome = CliRunner().invoke(app, ["export", str(tmp_path)])
    assert outcome.exit_code == 2 and "results.json" in outcome.output


def test_screenshot_tool_saves_the_top_of_the_report(study_dir, tmp_path):
    tool = _needs_chromium()
    out = tmp_path / "top.png"
    assert tool.main([str(study_dir / "report" / "index.html"), str(out), "--width", "900", "--height", "700"]) == 0
    header = out.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(header[16:20], "big") > 0
