"""An interrupted pass resumes at the batch it reached and gives the numbers of one uninterrupted pass."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from seelike.checkpoints import PassCheckpoint
from seelike.driver import run
from seelike.models import load_model
from test_accumulators import DATA, FACTORIES, KINDS, RESNET, VIT

N, BATCH = 48, 8  # six batches


@pytest.fixture(scope="module")
def models():
    return load_model(VIT), load_model(RESNET)


class Interrupted(Exception):
    """What a test raises in the middle of a pass (a Ctrl-C, a lost machine)."""


def _counting(accumulator, stop_after: int | None = None) -> list[int]:
    """Count ``accumulator``'s updates; raise :class:`Interrupted` instead of the update after ``stop_after``."""
    calls: list[int] = []
    update = accumulator.update

    def counted(activations, batch):
        if stop_after is not None and len(calls) == stop_after:
            raise Interrupted
        calls.append(len(batch))
        update(activations, batch)

    accumulator.update = counted
    return calls


def _interrupt(kind, models, checkpoint: PassCheckpoint, after: int) -> None:
    accumulator = FACTORIES[kind](*models)
    _counting(accumulator, stop_after=after)
    with pytest.raises(Interrupted):
        run([accumulator], DATA, n=N, batch_size=BATCH, seed=1, checkpoint=checkpoint)


def _assert_same_result(a, b) -> None:
    assert sorted(a.arrays) == sorted(b.arrays)
    for key in a.arrays:
        np.testing.assert_allclose(np.asarray(b.arrays[key], dtype=float), np.asarray(a.arrays[key], dtype=float),
                                   rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=key)
    assert a.metadata["n"] == b.metadata["n"] == N


@pytest.mark.parametrize("kind", KINDS)
def test_an_interrupted_pass_resumes_at_the_batch_it_reached(kind, models, tmp_path):
    whole = run([FACTORIES[kind](*models)], DATA, n=N, batch_size=BATCH, seed=1)[0]
    checkpoint = PassCheckpoint(tmp_path / "pass.pt", key="this pass", every_seconds=0)  # saved after every batch
    _interrupt(kind, models, checkpoint, after=4)
    assert checkpoint.file().exists()
    resumed = FACTORIES[kind](*models)
    streamed = _counting(resumed)
    result = run([resumed], DATA, n=N, batch_size=BATCH, seed=1, checkpoint=PassCheckpoint(tmp_path / "pass.pt", key="this pass"))[0]
    assert streamed == [BATCH, BATCH]  # only the two batches the interrupted pass had not summed
    _assert_same_result(whole, result)
    assert not checkpoint.file().exists()  # a finished pass leaves nothing to resume


def test_a_checkpoint_of_another_pass_or_a_damaged_one_is_not_trusted(models, tmp_path, caplog):
    whole = run([FACTORIES["cka"](*models)], DATA, n=N, batch_size=BATCH, seed=1)[0]
    _interrupt("cka", models, PassCheckpoint(tmp_path / "pass.pt", key="other steps", every_seconds=0), after=4)
    for damage in (None, b"not a checkpoint"):
        if damage is not None:
            (tmp_path / "pass.pt").write_bytes(damage)
        accumulator = FACTORIES["cka"](*models)
        streamed = _counting(accumulator)
        with caplog.at_level(logging.WARNING, logger="seelike.checkpoints"):
            result = run([accumulator], DATA, n=N, batch_size=BATCH, seed=1, checkpoint=PassCheckpoint(tmp_path / "pass.pt", key="this pass"))[0]
        assert len(streamed) == N // BATCH  # started over
        _assert_same_result(whole, result)
        assert "starting this pass over" in caplog.text
        caplog.clear()
        _interrupt("cka", models, PassCheckpoint(tmp_path / "pass.pt", key="other steps", every_seconds=0), after=4)


def test_a_checkpoint_is_saved_only_as_often_as_asked(models, tmp_path):
    checkpoint = PassCheckpoint(tmp_path / "pass.pt", key="k", every_seconds=3600)
    _interrupt("cka", models, checkpoint, after=4)
    assert not checkpoint.file().exists()  # nothing saved within the hour: the interruption loses these batches


def test_a_checkpoint_that_cannot_be_written_does_not_stop_the_pass(models, tmp_path, caplog):
    whole = run([FACTORIES["cka"](*models)], DATA, n=N, batch_size=BATCH, seed=1)[0]
    (tmp_path / "taken").write_text("a file where the checkpoint's folder should be")
    with caplog.at_level(logging.WARNING, logger="seelike.checkpoints"):
        result = run([FACTORIES["cka"](*models)], DATA, n=N, batch_size=BATCH, seed=1,
                     checkpoint=PassCheckpoint(tmp_path / "taken" / "pass.pt", key="k", every_seconds=0))[0]
    _assert_same_result(whole, result)
    assert "could not save the pass's state" in caplog.text
