"""Figures: one convention (``figures`` / ``save_figures``) for every result kind, the CKA grid of many
models, and heatmap ticks that name a sub-layer's block and role."""

from __future__ import annotations

from collections.abc import Callable

import matplotlib.pyplot as plt
import pytest
from typer.testing import CliRunner

from seelike import load_result, plots
from seelike.analyses.attention_distance import attention_distances
from seelike.analyses.data_scale import data_scale
from seelike.analyses.head_similarity import head_similarity
from seelike.analyses.layer_similarity import layer_similarity
from seelike.analyses.localization import spatial_localization
from seelike.analyses.probes import probe_layers
from seelike.analyses.receptive_field import effective_receptive_fields
from seelike.analyses.skip_norms import skip_norm_ratios
from seelike.cli import app
from seelike.data import load_dataset
from seelike.errors import InvalidInputError
from seelike.models import load_model
from seelike.plots import FIGURE_KINDS, FigureQueue, cka_heatmaps, figure_names, figures, layer_labels, save_figures, thinned_ticks
from seelike.results import Result, _KIND_MODULES

VIT = "seelike:vit?width=32&depth=2&heads=4"
RESNET = "seelike:resnet?widths=[8,16]&units_per_stage=[1,1]"
DATA = "synthetic:n=64,size=28,channels=1,classes=4,seed=0"


@pytest.fixture(scope="module")
def data():
    return load_dataset(DATA)


@pytest.fixture(scope="module")
def models():
    return load_model(VIT), load_model(RESNET)


def _data_scale(vit, cnn, data):
    less = load_model(VIT + "&seed=3")
    less.label = "less-data"
    return data_scale(vit, [less], vit, data, n=32, batch_size=16)


def _probes(vit, cnn, data):
    train, test = load_dataset(DATA, split="train"), load_dataset(DATA, split="test")
    return probe_layers(vit, train, test, n_train=32, n_test=16, batch_size=16, readouts="gap", shots=2, samples=2)


#: a small real result of each kind, and the figures it must give
RESULTS: dict[str, tuple[Callable[..., Result], set[str]]] = {
    "cka": (lambda vit, cnn, data: layer_similarity([vit, cnn], data, n=32, batch_size=16),
            {"cka_vit", "cka_resnet", "cka_vit_vs_resnet", "cka_grid"}),
    "attention_distance": (lambda vit, cnn, data: attention_distances(vit, data, n=16, batch_size=16),
                           {"attention_distance_heads", "attention_distance_depth"}),
    "head_similarity": (lambda vit, cnn, data: head_similarity(vit, cnn, data, n=16, batch_size=16, window=2), {"head_similarity"}),
    "receptive_field": (lambda vit, cnn, data: effective_receptive_fields(cnn, data, n=4, batch_size=4, channels="sum"), {"receptive_field"}),
    "skip_norms": (lambda vit, cnn, data: skip_norm_ratios(vit, data, n=16, batch_size=16), {"skip_norms"}),
    "localization": (lambda vit, cnn, data: spatial_localization(vit, data, n=32, batch_size=16, positions=[(0, 0), (3, 3)]), {"localization"}),
    "probes": (_probes, {"probes"}),
    "data_scale": (_data_scale, {"data_scale"}),
}


@pytest.fixture(scope="module")
def results(models, data):
    return {kind: make(*models, data) for kind, (make, _) in RESULTS.items()}


def test_every_result_kind_has_figures_and_a_test_here():
    assert set(FIGURE_KINDS) == set(_KIND_MODULES) == set(RESULTS)


@pytest.mark.parametrize("kind", sorted(RESULTS))
def test_each_kind_draws_and_saves_its_figures_and_closes_them(kind, results, tmp_path):
    result, expected = results[kind], RESULTS[kind][1]
    assert set(figure_names(result)) == expected and not plt.get_fignums()  # naming draws nothing
    drawn = figures(result)
    assert set(drawn) == expected and all(figure.axes for figure in drawn.values())
    for figure in drawn.values():
        plt.close(figure)
    written = save_figures(result, tmp_path)
    assert set(written) == expected and not plt.get_fignums()
    for name, paths in written.items():
        assert [path.name for path in paths] == [f"{name}.png", f"{name}.svg"]
        assert all(path.stat().st_size > 1000 for path in paths)


def test_save_figures_picks_and_renames_and_says_what_exists(results, tmp_path):
    result = results["attention_distance"]
    written = save_figures(result, tmp_path, names={"attention_distance_depth": "attention_vit"})
    assert list(written) == ["attention_distance_depth"] and sorted(p.name for p in tmp_path.iterdir()) == ["attention_vit.png", "attention_vit.svg"]
    with pytest.raises(InvalidInputError, match="no figure attention_map.*attention_distance_heads"):
        save_figures(result, tmp_path, names=["attention_map"])
    with pytest.raises(InvalidInputError, match="blocks \\[7\\] are not in this result"):
        figures(result, blocks=[7])
    with pytest.raises(InvalidInputError, match="one result at a time"):
        figures([results["cka"], results["cka"]])
    with pytest.raises(InvalidInputError, match="results of one kind"):
        figures([results["cka"], results["probes"]])
    assert not plt.get_fignums()


def test_save_figures_writes_the_formats_asked_for(results, tmp_path):
    written = save_figures(results["attention_distance"], tmp_path, names=["attention_distance_depth"], formats=("png",))
    assert [p.name for p in written["attention_distance_depth"]] == ["attention_distance_depth.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["attention_distance_depth.png"]
    with pytest.raises(InvalidInputError, match="figure formats must be some of png, svg"):
        save_figures(results["attention_distance"], tmp_path, formats=("jpg",))


@pytest.mark.parametrize("workers", [1, 2])
def test_a_figure_queue_writes_what_save_figures_writes_and_reports_a_failing_figure(results, tmp_path, monkeypatch, workers):
    """Queued figures (the study's): the same files as drawn at once, in one or several processes; a figure that
    fails to draw is reported for its owner and does not stop the others."""
    direct = save_figures(results["cka"], tmp_path / "direct", formats=("png",))
    queue = FigureQueue()
    with queue.collecting("step a"):
        queued = save_figures(results["cka"], tmp_path / "queued", formats=("png",))
    with queue.collecting("step b"):
        save_figures(results["attention_distance"], tmp_path / "queued", names=["attention_distance_depth"], formats=("png",))
    assert [p.name for paths in queued.values() for p in paths] == [p.name for paths in direct.values() for p in paths]
    assert not any(p.exists() for paths in queued.values() for p in paths)  # nothing drawn until the queue draws

    def broken(result):
        raise RuntimeError("no ink")

    monkeypatch.setattr(plots, "_attention_distance_depth", broken)  # b's figure fails to draw (looked up when drawn)
    failed = queue.draw(workers=workers)
    assert list(failed) == ["step b"] and "attention_distance_depth.png failed to draw" in failed["step b"]
    assert "no ink" in failed["step b"]
    for paths, written in zip(direct.values(), queued.values()):
        assert written[0].read_bytes() == paths[0].read_bytes()
    assert not (tmp_path / "queued" / "attention_distance_depth.png").exists() and not plt.get_fignums()
    assert queue.jobs == [] and queue.draw(workers=workers) == {}


def test_a_figure_queue_draws_here_when_a_drawing_process_dies(results, tmp_path, monkeypatch, caplog):
    import os

    parent = os.getpid()
    original = plots._attention_distance_depth

    def dies_in_a_child(result):
        if os.getpid() != parent:
            os._exit(1)  # e.g. killed for memory
        return original(result)

    monkeypatch.setattr(plots, "_attention_distance_depth", dies_in_a_child)
    queue = FigureQueue()
    with queue.collecting("step"):
        written = save_figures(results["attention_distance"], tmp_path, formats=("png",))
    assert queue.draw(workers=2) == {} and "drawing process died" in caplog.text
    assert all(path.exists() for paths in written.values() for path in paths) and not plt.get_fignums()


def test_comparison_figures_take_several_results(results, tmp_path):
    skips = results["skip_norms"]
    drawn = figures([skips, skips])
    assert list(drawn) == ["skip_norms"] and len(drawn["skip_norms"].axes) == 2  # one panel per model
    plt.close(drawn["skip_norms"])
    probes = results["probes"]
    assert figure_names([probes, probes]) == ["probe_comparison"] and figure_names([probes], comparison=True) == ["probe_comparison"]
    assert list(save_figures([probes, probes], tmp_path, labels=["a", "b"])) == ["probe_comparison"] and not plt.get_fignums()


def test_cka_heatmaps_name_each_model_and_pair_in_order(results):
    assert cka_heatmaps(results["cka"]) == {"cka_vit": ("vit", None), "cka_vit_vs_resnet": ("vit", "resnet"), "cka_resnet": ("resnet", None)}


def test_cka_command_with_three_models_writes_a_labelled_grid(tmp_path):
    specs = [VIT, RESNET, "seelike:vit?width=32&depth=3&heads=2"]
    out = tmp_path / "cka"
    outcome = CliRunner().invoke(app, ["cka", *specs, "--data", DATA, "--n", "32", "--batch-size", "16", "--out", str(out)])
    assert outcome.exit_code == 0, outcome.output
    result = load_result(out)
    names = result.models
    assert len(names) == 3 and (out / "cka_grid.png").stat().st_size > 1000 and (out / "cka_grid.svg").exists()
    assert len(list(out.glob("cka_*_vs_*.png"))) == 3 and len(list(out.glob("cka_*.png"))) == 3 + 3 + 1
    text = " ".join(outcome.output.split())
    assert "heatmaps: 6 in" in text and "all models in one figure:" in text and "cka_grid.png" in text
    grid = figures(result, names=["cka_grid"])["cka_grid"]
    panels, colour_bars = grid.axes[:9], grid.axes[9:]
    assert len(colour_bars) == 1  # one shared scale
    assert [panel.get_ylabel() for panel in panels[::3]] == names  # rows: the models, top to bottom
    assert [panel.get_title() for panel in panels[:3]] == names  # columns: the models, left to right
    assert all(panel.images[0].get_clim() == (0, 1) for panel in panels)
    assert panels[5].images[0].get_array().shape == result.block(names[1], names[2])[0].shape  # row 1, column 2
    plt.close(grid)


def _tick_texts(axis) -> list[str]:
    return [label.get_text() for label in axis.get_ticklabels()]


def test_sublayer_ticks_name_block_and_role_and_block_ticks_keep_numbers(data):
    vit = load_model("seelike:vit?width=32&depth=6&heads=2")
    result = layer_similarity([vit], data, n=16, batch_size=16, layers="all")
    labels, roles = layer_labels(result, "vit")
    assert len(labels) == 48 and labels[:8] == ["0.input", "0.norm1", "0.attn", "0.attn_residual", "0.norm2", "0.mlp_hidden", "0.mlp", "0.output"]
    heatmap = figures(result)["cka_vit"]
    shown = _tick_texts(heatmap.axes[0].xaxis)
    # 48 ticks do not fit in 32: each block shows the same roles, the branches, the output and the norms first
    assert shown == [f"{block}.{role}" for block in range(6) for role in ("norm1", "attn", "norm2", "mlp", "output")]
    assert _tick_texts(heatmap.axes[0].yaxis) == shown
    plt.close(heatmap)
    blocks = layer_similarity([vit], data, n=16, batch_size=16)
    assert layer_labels(blocks, "vit")[0] == [str(b) for b in range(6)]
    heatmap = figures(blocks)["cka_vit"]
    assert _tick_texts(heatmap.axes[0].xaxis) == [str(b) for b in range(6)]
    plt.close(heatmap)


def test_ticks_are_thinned_readably():
    assert thinned_ticks(["output"] * 10, 12) == list(range(10))
    assert thinned_ticks(["output"] * 30, 12) == list(range(0, 30, 3))  # block outputs: every k-th
    roles = ["input", "conv1", "bn1", "branch", "shortcut", "output"] * 20  # 120 sub-layers, 20 units
    assert [roles[i] for i in thinned_ticks(roles, 24)] == ["output"] * 20  # outputs and branches would be 40
    assert thinned_ticks([None, "attn", "mlp", None], 3) == [0, 1, 3]  # layers outside blocks stay labelled


def test_results_without_roles_keep_index_ticks(results):
    old = results["cka"]
    metadata = {key: value for key, value in old.metadata.items() if key not in ("layer_blocks", "layer_roles")}
    legacy = type(old)(arrays=old.arrays, metadata=metadata)
    assert layer_labels(legacy, "vit") == (["0", "1"], [None, None])
