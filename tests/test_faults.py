"""The fast subset of the kill -9 matrix (tests/faults/kill_matrix.py): every long command killed with
SIGKILL at a seeded moment and rerun or resumed (the buffered P = 4 training twice, once while a
checkpoint is being written); the full matrix is `python -m tests.faults.kill_matrix`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults.kill_matrix import run_matrix


@pytest.mark.parametrize(("command", "moments"), [("import", 2), ("train-p4-buffer", 2), ("train-p1", 1),
                                                  ("train-walks", 1), ("eval", 1), ("export", 1), ("index", 1),
                                                  ("embed-new", 1), ("torchrun-2", 1)])
def test_killed_commands_rerun_to_the_undisturbed_result(tmp_path_factory: pytest.TempPathFactory, command: str,
                                                         moments: int) -> None:
    scratch: Path = tmp_path_factory.getbasetemp() / "kill-matrix"
    scratch.mkdir(exist_ok=True)
    outcomes = run_matrix([command], moments, seed=0, size="small", scratch=scratch, log=lambda _line: None)
    assert len(outcomes) == moments
    problems = [f"#{o.moment} killed at {o.killed_at_s} s ({o.killed_while}): {'; '.join(o.problems)}"
                for o in outcomes if not o.ok]
    assert not problems, "\n".join(problems)
    if command.startswith("train") and moments > 1:
        assert any(o.killed_while == "writing a checkpoint" for o in outcomes), "no kill hit a checkpoint write"
