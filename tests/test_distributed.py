"""Two gloo ranks on the CPU give every accumulator the state of one process over the same batches."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from seelike.driver import feed
from seelike.results import load_result
from seelike.models import load_model
from test_accumulators import FACTORIES, KINDS, ORDERED, RESNET, VIT, _batches

VIT_SPEC = "seelike:vit?width=32&depth=2&heads=4"


@pytest.fixture(scope="module")
def models():
    return load_model(VIT), load_model(RESNET)

WORKER = textwrap.dedent('''
    import sys, warnings
    import numpy as np, torch, torch.distributed as dist
    sys.path.insert(0, sys.argv[2])
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    from seelike.distributed import RankFailedError, init_from_environment, world
    from seelike.driver import feed
    from seelike.models import load_model
    from test_accumulators import FACTORIES, KINDS, VIT, RESNET, _batches
    init_from_environment("cpu")
    rank, size = world()
    models = load_model(VIT), load_model(RESNET)
    for kind in KINDS:
        accumulator = FACTORIES[kind](*models)
        feed([accumulator], _batches(list(range(32))), progress=False)
        if rank == 0:
            np.savez(f"{sys.argv[1]}/{kind}.npz", **accumulator.compute().arrays)
    twice = FACTORIES["probe_statistics"](*models)  # fed two passes, as the probes' held-out pass adds to the fitting sums
    feed([twice], _batches(list(range(16))), progress=False)
    feed([twice], _batches(list(range(16, 32))), progress=False)
    if rank == 0:
        np.savez(f"{sys.argv[1]}/two_passes.npz", **{k: v.numpy() for k, v in twice.state_dict().items()})
    from seelike.checkpoints import PassCheckpoint
    checkpoint = PassCheckpoint(f"{sys.argv[1]}/pass.pt", key="cka", every_seconds=0)  # one file per rank
    interrupted = FACTORIES["cka"](*models)
    update, seen = interrupted.update, []
    def stop_after_one(activations, batch):
        if seen:
            raise KeyboardInterrupt
        seen.append(len(batch))
        update(activations, batch)
    interrupted.update = stop_after_one
    try:
        feed([interrupted], _batches(list(range(32))), progress=False, checkpoint=checkpoint)
    except KeyboardInterrupt:
        print(f"rank {rank}: interrupted")
    resumed = FACTORIES["cka"](*models)
    resumed_update, streamed = resumed.update, []
    resumed.update = lambda activations, batch: (streamed.append(len(batch)), resumed_update(activations, batch))
    feed([resumed], _batches(list(range(32))), progress=False, checkpoint=checkpoint)
    print(f"rank {rank}: resumed with {len(streamed)} batch(es)")
    if rank == 0:
        np.savez(f"{sys.argv[1]}/cka_resumed.npz", **resumed.compute().arrays)
    failing = FACTORIES["attention_distance"](*models)
    if rank == 1:
        failing.update = lambda *args: (_ for _ in ()).throw(RuntimeError("rank 1 broke"))
    try:
        feed([failing], _batches(list(range(32))), progress=False)
    except RankFailedError as error:
        print(f"rank {rank}: {error}")
    except RuntimeError as error:
        print(f"rank {rank}: own error {error}")
    dist.destroy_process_group()
''')


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("ranks")
    script = out / "worker.py"
    script.write_text(WORKER)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(script), str(out), str(Path(__file__).parent)]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=300,
                              env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert finished.returncode == 0, finished.stderr[-3000:]
    return out, finished.stdout


@pytest.mark.parametrize("kind", KINDS)
def test_two_ranks_equal_one_process(kind, models, two_ranks):
    out, _ = two_ranks
    single = FACTORIES[kind](*models)
    feed([single], _batches(list(range(32))), progress=False)
    expected = single.compute().arrays
    with np.load(out / f"{kind}.npz") as loaded:
        distributed = dict(loaded)
    assert sorted(distributed) == sorted(expected)
    if kind in ORDERED:  # rows arrive rank by rank: compare them in image order
        mine, theirs = np.argsort(expected["indices"]), np.argsort(distributed["indices"])
        expected = {key: value[mine] for key, value in expected.items()}
        distributed = {key: value[theirs] for key, value in distributed.items()}
    for key in expected:
        np.testing.assert_allclose(distributed[key], expected[key], rtol=1e-10, atol=1e-10, err_msg=key)


def test_an_accumulator_fed_two_passes_counts_the_first_pass_once(models, two_ranks):
    out, _ = two_ranks
    single = FACTORIES["probe_statistics"](*models)
    feed([single], _batches(list(range(32))), progress=False)
    with np.load(out / "two_passes.npz") as loaded:
        distributed = dict(loaded)
    expected = {key: value.numpy() for key, value in single.state_dict().items()}
    assert sorted(distributed) == sorted(expected)
    for key in expected:
        np.testing.assert_allclose(distributed[key], expected[key], rtol=1e-10, atol=1e-10, err_msg=key)


def test_each_rank_resumes_its_own_share_of_an_interrupted_pass(two_ranks):
    out, stdout = two_ranks
    assert "rank 0: interrupted" in stdout and "rank 1: interrupted" in stdout
    assert "rank 0: resumed with 1 batch(es)" in stdout and "rank 1: resumed with 1 batch(es)" in stdout  # of two each
    assert not list(out.glob("pass*.pt"))  # each rank removed its file when the resumed pass ended
    with np.load(out / "cka.npz") as whole, np.load(out / "cka_resumed.npz") as resumed:
        for key in whole.files:
            np.testing.assert_array_equal(resumed[key], whole[key], err_msg=key)


def test_a_failing_rank_stops_every_rank_with_a_clear_error(two_ranks):
    _, stdout = two_ranks
    assert "rank 0: rank(s) [1] of 2 failed" in stdout
    assert "rank 1: own error rank 1 broke" in stdout


def test_torchrun_of_a_command_writes_once_what_one_process_writes(tmp_path):
    command = ["cka", VIT_SPEC, "--data", "synthetic:n=64", "--images", "32", "--batch-size", "8"]  # torchrun reads --n as its own
    single = subprocess.run([sys.executable, "-m", "seelike", *command, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "seelike",
                            *command, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=300,
                           env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    assert ranks.stdout.count("result:") == 1  # rank 0 speaks, rank 1 is quiet
    one, two = load_result(tmp_path / "one"), load_result(tmp_path / "two")
    np.testing.assert_allclose(two.matrix, one.matrix, rtol=1e-10, atol=1e-10)
    assert two.metadata["n"] == one.metadata["n"] == 32


def _numbers(document: dict) -> dict[str, object]:
    """Every step's status, numbers and findings (what the study computed, not when or where)."""
    return {name: {key: step[key] for key in ("status", "numbers", "findings")} for name, step in document["steps"].items()}


def _assert_same(a: object, b: object, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, float) and isinstance(b, (int, float)):
        np.testing.assert_allclose(b, a, rtol=1e-10, atol=1e-10, err_msg=where)
    else:
        assert a == b, where


def test_the_study_under_torchrun_writes_once_the_numbers_of_one_process(tmp_path):
    """Two gloo ranks: every step's numbers and findings as one process gives them (1e-10), one report, rank 1 silent."""
    from test_study import TINY

    narrow = {role: spec.replace("width=32", "width=16").replace("width=48", "width=24") for role, spec in TINY.items()}
    roles = [arg for role, spec in narrow.items() for arg in ("--models", f"{role}={spec}")]
    # 40 images in batches of 8: the probes' 8 held-out training images fill one batch, which the probes split in two,
    # one per rank (they failed with "1 batches cannot be shared by 2 ranks" before)
    command = ["--threads", "1", "study", *roles, "--data", "synthetic:n=256,size=28,channels=1,classes=4,seed=0",
               "--images", "40", "--batch-size", "8"]  # torchrun reads --n as its own
    environment = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([sys.executable, "-m", "seelike", *command, "--out", str(tmp_path / "one")],
                            capture_output=True, text=True, timeout=600, env=environment)
    assert single.returncode == 0, single.stdout[-2000:] + single.stderr[-2000:]
    scratch = tmp_path / "tmp"  # where a rank would put throwaway files
    scratch.mkdir()
    ranks = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "seelike",
                            *command, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=600,
                           env={**environment, "TMPDIR": str(scratch)})
    assert ranks.returncode == 0, ranks.stdout[-2000:] + ranks.stderr[-3000:]
    assert ranks.stdout.count("report:") == 1 and ranks.stdout.count("[13/13]") == 1  # rank 0 speaks, rank 1 is quiet
    assert not [p.name for p in scratch.iterdir() if p.name.startswith("seelike")]  # (torchrun keeps its own files there)
    files = {run: sorted(p.relative_to(tmp_path / run).as_posix() for p in (tmp_path / run).rglob("*") if p.is_file())
             for run in ("one", "two")}
    assert files["two"] == files["one"] and "report/index.html" in files["two"]
    one, two = (json.loads((tmp_path / run / "results.json").read_text()) for run in ("one", "two"))
    assert all(step["status"] == "ok" for step in two["steps"].values())
    _assert_same(_numbers(one), _numbers(two))


def test_batch_size_for_ranks_gives_every_rank_a_batch(monkeypatch):
    import seelike.distributed as distributed

    monkeypatch.setattr(distributed, "world", lambda: (0, 2))
    assert [distributed.batch_size_for_ranks(images, 8) for images in (8, 9, 16, 100, 1)] == [4, 5, 8, 8, 1]
    monkeypatch.setattr(distributed, "world", lambda: (0, 1))
    assert distributed.batch_size_for_ranks(8, 8) == 8  # one process: the batch size as given
