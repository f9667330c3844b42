"""A seeded two-type power-law graph with shared communities, written as Parquet parts in bounded memory.

    python -m bench.typed_graphs --scale 0.01 --out /tmp/seed [--seed 0] [--test-edges 1000]

The seed-scale bench's data (issue 17): the heterogeneous recommender graph, at `--scale` of its
size. At scale 1: 19M nodes of type A, 32M of type B, 280M A-B edges (relation `ab`) and a
smaller A-A relation (`aa`, 10% of that: 28M edges); the test split holds `test_edges` A-B edges.

- Chung-Lu weights on both types, w_i = (i + offset)^(-1/(gamma-1)) permuted over the ids
  (gamma = 2.2, offset = 10, as bench/graphs.py);
- communities shared by A and B: every node gets one uniformly, and there are as many as it takes
  for a community to hold about `community_a` (1,900) A nodes, so the local structure is the same
  at every scale (100 communities at scale 0.01, 10,000 at scale 1);
- an edge draws its A end by weight, then with probability 1 - mixing (0.7) its other end by weight
  among the A end's community (B nodes for `ab`, A nodes for `aa`), else by weight over all nodes
  of that type; loops and repeats are redrawn, so every relation has exactly its count of distinct
  edges.
- ids are integers per type (type A node 5 and type B node 5 are different entities: the import
  config gives each type its own id space); columns `lhs` (int64), `rel` (string), `rhs` (int64).

Written to OUT/train/part-<k>.parquet and OUT/test/part-<k>.parquet, plus OUT/config.toml (the
entity types and relations for `shardgraph import --config`) and OUT/summary.json; the folder
appears whole (written beside, then renamed). A test edge with an end that has no train edge goes
back to train. Bounded memory: the A sources are cut into blocks of about BLOCK_EDGES edges, each
drawn, deduplicated and written as one part on its own; the per-node tables take about 25 bytes a
node (1.3 GB at scale 1). Parts are in source-block order; the importer shuffles each bucket.
Same arguments, same seed: the same edges in the same parts.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

BLOCK_EDGES = 2_000_000
"""Edges drawn and deduplicated at a time: one Parquet part per block and relation."""

FULL_A, FULL_B, FULL_AB = 19_000_000, 32_000_000, 280_000_000

CONFIG = """# entity types and relations of bench/typed_graphs.py; partitions are set by `import --partitions`
[entities.A]
partitions = 1
[entities.B]
partitions = 1
[[relations]]
name = "ab"
lhs = "A"
rhs = "B"
[[relations]]
name = "aa"
lhs = "A"
rhs = "A"
"""


@dataclass(frozen=True)
class TypedGraphSpec:
    a_nodes: int
    b_nodes: int
    ab_edges: int
    aa_edges: int
    test_edges: int
    seed: int = 0
    gamma: float = 2.2
    offset: float = 10.0
    community_a: int = 1_900
    mixing: float = 0.3

    @classmethod
    def at_scale(cls, scale: float, seed: int = 0, test_edges: int | None = None) -> TypedGraphSpec:
        """The issue's graph times `scale` (1.0: 19M / 32M nodes, 280M + 28M edges, 100k test edges)."""
        ab = round(FULL_AB * scale)
        return cls(round(FULL_A * scale), round(FULL_B * scale), ab, ab // 10,
                   max(1_000, round(100_000 * scale)) if test_edges is None else test_edges, seed)

    @property
    def communities(self) -> int:
        return max(1, round(self.a_nodes / self.community_a))

    def check(self) -> None:
        if min(self.a_nodes, self.b_nodes) < 2 or max(self.a_nodes, self.b_nodes) >= 2**31:
            raise ValueError("typed_graphs: each type needs 2 .. 2^31 - 1 nodes")
        if self.ab_edges > self.a_nodes * self.b_nodes // 4 or self.aa_edges > self.a_nodes * (self.a_nodes - 1) // 4:
            raise ValueError("typed_graphs: too many edges for the nodes")
        if not 0 <= self.test_edges < self.ab_edges // 2:
            raise ValueError("typed_graphs: test_edges must be below half the A-B edges")


class _Side:
    """One entity type's weights and communities; sampling by weight, overall or inside a community.

    One cumulative table serves both: nodes are laid out by community, so a community is a
    contiguous range of it (about 24 bytes a node).
    """

    def __init__(self, nodes: int, spec: TypedGraphSpec, community: np.ndarray, rng: np.random.Generator) -> None:
        base = (np.arange(nodes, dtype=np.float64) + spec.offset) ** (-1.0 / (spec.gamma - 1.0))
        self.weight = base[rng.permutation(nodes)]
        del base
        self.community = community
        self.by_community = np.argsort(community, kind="stable").astype(np.int32)
        self.cdf = np.cumsum(self.weight[self.by_community])
        self.bounds = np.searchsorted(community[self.by_community], np.arange(spec.communities + 1))
        starts = np.concatenate([[0.0], self.cdf])
        self.low, self.high = starts[self.bounds[:-1]], starts[self.bounds[1:]]
        self.nodes = nodes

    def draw(self, communities: np.ndarray, inside: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A node per row by weight: inside the row's community where `inside`, else over all (int64)."""
        low = np.where(inside, self.low[communities], 0.0)
        high = np.where(inside, self.high[communities], self.cdf[-1])
        j = _sorted_search(self.cdf, low + rng.random(len(low)) * (high - low))
        lo_bound = np.where(inside, self.bounds[communities], 0)
        hi_bound = np.where(inside, self.bounds[communities + 1], self.nodes) - 1
        return self.by_community[np.clip(j, lo_bound, hi_bound)].astype(np.int64)


def _sorted_search(cdf: np.ndarray, values: np.ndarray) -> np.ndarray:
    """np.searchsorted(cdf, values, side="right"), with the values searched in sorted order: each search then
    starts where the last ended (random searches into a table of 32M entries miss the caches at every step:
    6x slower)."""
    order = np.argsort(values)
    out = np.empty(len(values), dtype=np.int64)
    out[order] = np.searchsorted(cdf, values[order], side="right")
    return out


def _count(degree: np.ndarray, nodes: np.ndarray) -> None:
    """degree[v] += occurrences of v in nodes, in place (bincount with a minlength of 32M allocates and
    clears 256 MB per call)."""
    np.add.at(degree, nodes, 1)


def _distinct(a: _Side, other: _Side, lo: int, hi: int, count: int, mixing: float, loops_ok: bool,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Exactly `count` distinct edges (A source in [lo, hi), other end in `other`), in random order."""
    out_cdf = np.cumsum(a.weight[lo:hi])
    keys = np.empty(0, dtype=np.int64)
    for _ in range(100):
        need = count - keys.size
        if need <= 0:
            break
        n = int(need * 1.15) + 1000
        src = lo + np.minimum(np.searchsorted(out_cdf, rng.random(n) * out_cdf[-1], side="right"), hi - lo - 1)
        dst = other.draw(a.community[src], rng.random(n) >= mixing, rng)
        keep = np.ones(n, dtype=bool) if loops_ok else src != dst
        keys = np.unique(np.concatenate([keys, src[keep] * other.nodes + dst[keep]]))
    else:
        raise ValueError(f"typed_graphs: A sources {lo}..{hi} cannot hold {count} distinct edges (too dense)")
    keys = keys[rng.permutation(keys.size)[:count]]
    return keys // other.nodes, keys % other.nodes


def _table(src: np.ndarray, relation: str, dst: np.ndarray) -> pa.Table:
    rel = pa.DictionaryArray.from_arrays(pa.array(np.zeros(len(src), np.int8)), pa.array([relation]))
    return pa.table({"lhs": pa.array(src), "rel": rel.cast(pa.string()), "rhs": pa.array(dst)})


def generate(spec: TypedGraphSpec, out: Path, progress: bool = False) -> dict[str, object]:
    """Write the graph to the folder `out` (see the module docstring); a summary."""
    spec.check()
    started = time.perf_counter()
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    k = spec.communities
    a = _Side(spec.a_nodes, spec, rng.integers(0, k, spec.a_nodes).astype(np.int32), rng)
    b = _Side(spec.b_nodes, spec, rng.integers(0, k, spec.b_nodes).astype(np.int32), rng)
    b.weight = np.empty(0)  # B is only ever drawn through its cumulative table
    has_train_a = np.zeros(spec.a_nodes, dtype=bool)
    has_train_b = np.zeros(spec.b_nodes, dtype=bool)
    a_degree = np.zeros(spec.a_nodes, dtype=np.int32)
    b_degree = np.zeros(spec.b_nodes, dtype=np.int32)
    temp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(temp, ignore_errors=True)
    (temp / "train").mkdir(parents=True)
    (temp / "test").mkdir()
    parts = 0
    held: list[tuple[np.ndarray, np.ndarray]] = []
    holdout = spec.test_edges / spec.ab_edges
    counts = {"ab": 0, "aa": 0}
    for relation, total, other in (("ab", spec.ab_edges, b), ("aa", spec.aa_edges, a)):
        blocks = max(1, -(-total // BLOCK_EDGES))
        cuts = np.linspace(0, spec.a_nodes, blocks + 1).astype(np.int64)
        block_weight = np.add.reduceat(a.weight, cuts[:-1])
        per_block = rng.multinomial(total, block_weight / block_weight.sum())
        for block in range(blocks):
            src, dst = _distinct(a, other, int(cuts[block]), int(cuts[block + 1]), int(per_block[block]),
                                 spec.mixing, relation == "ab", rng)
            if relation == "ab":
                test = rng.random(src.size) < holdout * 1.5  # the surplus goes back to train below
                held.append((src[test], dst[test]))
                src, dst = src[~test], dst[~test]
                has_train_b[dst] = True
                _count(b_degree, dst)
            else:
                has_train_a[dst] = True
                _count(a_degree, dst)
            has_train_a[src] = True
            _count(a_degree, src)
            pq.write_table(_table(src, relation, dst), temp / "train" / f"part-{parts:05d}.parquet")
            parts += 1
            counts[relation] += src.size
            if progress:
                print(f"typed_graphs: {relation} block {block + 1}/{blocks}, {time.perf_counter() - started:.0f} s",
                      flush=True)
    test_src = np.concatenate([s for s, _ in held])
    test_dst = np.concatenate([d for _, d in held])
    ok = has_train_a[test_src] & has_train_b[test_dst]
    order = rng.permutation(np.flatnonzero(ok))
    keep, back = order[:spec.test_edges], np.concatenate([order[spec.test_edges:], np.flatnonzero(~ok)])
    if len(keep) < spec.test_edges:
        raise ValueError(f"typed_graphs: only {len(keep)} test edges have both ends in train")
    if len(back):
        pq.write_table(_table(test_src[back], "ab", test_dst[back]), temp / "train" / f"part-{parts:05d}.parquet")
        counts["ab"] += len(back)
        _count(a_degree, test_src[back])
        _count(b_degree, test_dst[back])
    pq.write_table(_table(test_src[np.sort(keep)], "ab", test_dst[np.sort(keep)]), temp / "test" / "part-00000.parquet")
    (temp / "config.toml").write_text(CONFIG)
    summary: dict[str, object] = {
        **asdict(spec), "communities": k, "train_edges": counts, "test_edges": len(keep),
        "moved_back_to_train": len(back), "train_parts": parts + (1 if len(back) else 0),
        "max_degree": {"A": int(a_degree.max()), "B": int(b_degree.max())},
        "nodes_with_edges": {"A": int((a_degree > 0).sum()), "B": int((b_degree > 0).sum())},
        "seconds": round(time.perf_counter() - started, 2)}
    (temp / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    temp.replace(out)
    return summary


def community_of(spec: TypedGraphSpec) -> tuple[np.ndarray, np.ndarray]:
    """The communities (A, B) the seed draws, for checks: the first draws of generate()."""
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    community_a = rng.integers(0, spec.communities, spec.a_nodes)
    rng.permutation(spec.a_nodes)
    return community_a, rng.integers(0, spec.communities, spec.b_nodes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", type=float, default=0.01, help="fraction of the full graph (1.0: 19M/32M/280M)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--test-edges", type=int, default=None, help="held-out A-B edges (default 100k × scale, >= 1000)")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    try:
        summary = generate(TypedGraphSpec.at_scale(args.scale, args.seed, args.test_edges), args.out, progress=True)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
