"""Two gloo ranks on the CPU give every accumulator the state of one process over the same batches."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from seelike.driver import feed
from seelike.results import load_result
from test_accumulators import FACTORIES, KINDS, ORDERED, _batches, models  # noqa: F401,F811  (models: the fixture)

VIT_SPEC = "seelike:vit?width=32&depth=2&heads=4"

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
def test_two_ranks_equal_one_process(kind, models, two_ranks):  # noqa: F811  (the fixture imported above)
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
