"""A handful of the small real edge files of ../shared/datasets import with no flag but --out (and
--columns where the columns are not lhs/rhs or lhs/rel/rhs), with the counts of their SOURCE.md."""

from __future__ import annotations

import pytest

from bench.import_shared_datasets import CASES, run_case
from tests.conftest import REPO

DATASETS = REPO.parent / "shared" / "datasets"
SMALL = ("nations", "snap-email-eu-core", "snap-ca-hepth", "cora", "musae-twitch-en", "ppi-node2vec", "imdb-magnn")


@pytest.mark.skipif(not DATASETS.is_dir(), reason="../shared/datasets is not here")
@pytest.mark.parametrize("case", [c for c in CASES if c.dataset in SMALL], ids=lambda c: f"{c.dataset}/{c.train}")
def test_shared_dataset_imports_with_source_counts(case, tmp_path) -> None:  # type: ignore[no-untyped-def]
    row = run_case(case, DATASETS, tmp_path)
    assert row["ok"], row
    assert row["edges"] == case.edges and (case.entities is None or row["entities"] == case.entities)
