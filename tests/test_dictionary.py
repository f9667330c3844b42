"""The import's id dictionary (shardgraph.data.dictionary.StringIdTable), compiled hash table and numpy-only
levels, against a plain Python dict that numbers ids in order of first appearance."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from shardgraph.data.dictionary import StringIdTable
from tests.conftest import require_kernels


@pytest.mark.parametrize("compiled", [True, False])
def test_ids_are_numbered_in_order_of_first_appearance_as_a_dict_would(compiled: bool) -> None:
    if compiled:
        require_kernels()
    table = StringIdTable(compiled=compiled)
    assert (table.hashed is not None) == compiled
    naive: dict[str, int] = {}
    rng = np.random.default_rng(3)
    # blocks of ids drawn with repeats from a growing pool (200k distinct: the hash table doubles several
    # times), some of them lookups only
    for block in range(12):
        pool = 20_000 * (block + 1)
        names = [f"node-{i}" for i in rng.integers(0, pool, size=30_000)]
        insert = block % 4 != 3
        ids, new_names = table.lookup(pa.array(names, pa.string()), insert)
        expected_new: list[str] = []
        expected = []
        for name in names:
            if name not in naive and insert:
                naive[name] = len(naive)
                expected_new.append(name)
            expected.append(naive.get(name, -1))
        assert ids.tolist() == expected, block
        assert new_names.to_pylist() == expected_new, block
        assert table.count == len(naive)
    assert table.count > 100_000  # past 3/4 of 65,536 and of 131,072 slots: two doublings


def test_compiled_hashes_equal_numpy_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """The compiled hash of id strings is the numpy one (embeddings of trained runs are looked up by it)."""
    require_kernels()
    from shardgraph.data import dictionary

    rng = np.random.default_rng(5)
    names = [f"id{i}-" + "x" * int(rng.integers(0, 40)) for i in range(5000)]
    names += ["é€😀", "a", "z" * 700]  # multi-byte characters; longer than the 256 precomputed powers
    array = pa.array(names, pa.string()).slice(3)  # an array with an offset into its buffers
    compiled = dictionary.hash_strings(array)
    monkeypatch.setattr(dictionary, "_compiled_hash", False)
    numpy_only = dictionary.hash_strings(array)
    for got, expected in zip(compiled, numpy_only, strict=True):
        np.testing.assert_array_equal(got, expected)
    assert len(np.unique(compiled[0])) == len(array)
