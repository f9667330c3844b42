"""Seeded power-law graphs with hidden communities, written in bounded memory: the benches' data.

    python -m bench.graphs --nodes 100000 --edges 2000000 --seed 0 --out /tmp/g.tsv [--holdout 0.01]

The model is a degree-corrected stochastic block model on Chung-Lu weights, the graph the
PyTorch-BigGraph comparisons have always used, so that figures stay comparable:

- out- and in-weights w_i = (i + offset)^(-1/(gamma-1)), each independently permuted over the
  node ids (out-hubs and in-hubs are different nodes); gamma = 2.2, offset = 10;
- every node gets one of K = 100 communities uniformly; an edge draws src ~ w_out, then with
  probability 1 - mixing (0.7) dst ~ w_in among src's community, else dst ~ w_in over all nodes;
- self-loops and duplicate edges are dropped and redrawn until exactly `edges` distinct edges
  exist; the file lists them in random order as `n<src>\\tr0\\tn<dst>` lines.

With `--holdout f` it writes `<stem>_train.tsv` and `<stem>_test.tsv` instead: each edge goes to
test with probability f, except that a test edge with an end that has no train edge goes back to
train (every test node has a trained embedding).

Bounded memory: the sources are cut into blocks of consecutive ids, each block gets its share of
the edges (a multinomial draw by its total out-weight) and is generated and deduplicated on its
own (duplicates are redrawn inside the block, so a saturated hub's surplus goes to the other
sources of its block rather than to the whole graph); its edges are scattered over shards on disk,
and each shard is shuffled and written out in a second pass. Memory is O(nodes + edges per
block). Same arguments, same seed: same bytes. Up to BLOCK_EDGES edges (one block) the edge
set and the train/test split are exactly those of the generator behind the figures measured
before it moved here (checked on 100k nodes / 2M edges, holdout 0.01); only the line order differs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

BLOCK_EDGES = 4_000_000
"""Edges generated (and deduplicated) at a time, and about as many per shuffle shard."""

RECORD = np.dtype([("src", np.int32), ("dst", np.int32), ("test", np.bool_)])


@dataclass(frozen=True)
class GraphSpec:
    nodes: int
    edges: int
    seed: int = 0
    gamma: float = 2.2
    offset: float = 10.0
    communities: int = 100
    mixing: float = 0.3

    def check(self) -> None:
        if self.nodes < 2 or not 0 < self.edges <= self.nodes * (self.nodes - 1) // 4:
            raise ValueError(f"graphs: {self.edges} distinct edges do not fit comfortably on {self.nodes} nodes")
        if self.nodes >= 2**31:
            raise ValueError("graphs: node ids are written through int32")


class _Sampler:
    """Draws edges whose sources lie in one block of node ids; all tables are O(nodes)."""

    def __init__(self, spec: GraphSpec, rng: np.random.Generator) -> None:
        n = spec.nodes
        base = (np.arange(n, dtype=np.float64) + spec.offset) ** (-1.0 / (spec.gamma - 1.0))
        self.w_out = base[rng.permutation(n)]
        w_in = base[rng.permutation(n)]
        self.in_cdf = np.cumsum(w_in)
        self.in_cdf /= self.in_cdf[-1]
        self.communities = spec.communities if spec.communities > 1 else 0
        self.mixing = spec.mixing
        if self.communities:
            self.community = rng.integers(0, self.communities, n)
            self.by_community = np.argsort(self.community, kind="stable")
            self.community_cdf = np.cumsum(w_in[self.by_community])
            starts = np.concatenate([[0.0], self.community_cdf])
            self.bounds = np.searchsorted(self.community[self.by_community], np.arange(self.communities + 1))
            self.low, self.high = starts[self.bounds[:-1]], starts[self.bounds[1:]]
        self.nodes = n

    def draw(self, lo: int, hi: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`count` edges (int64 src, dst), sources in [lo, hi) by out-weight; may hold loops and repeats."""
        out_cdf = np.cumsum(self.w_out[lo:hi])
        src = lo + np.minimum(np.searchsorted(out_cdf, rng.random(count) * out_cdf[-1], side="right"), hi - lo - 1)
        dst = np.minimum(np.searchsorted(self.in_cdf, rng.random(count), side="right"), self.nodes - 1)
        if self.communities:
            inside = rng.random(count) >= self.mixing
            c = self.community[src[inside]]
            target = self.low[c] + rng.random(c.size) * (self.high[c] - self.low[c])
            j = np.clip(np.searchsorted(self.community_cdf, target, side="right"), self.bounds[c],
                        self.bounds[c + 1] - 1)
            dst[inside] = self.by_community[j]
        return src.astype(np.int64), dst.astype(np.int64)

    def distinct(self, lo: int, hi: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Exactly `count` distinct non-loop edges with sources in [lo, hi), in random order."""
        keys = np.empty(0, dtype=np.int64)
        for _ in range(100):
            need = count - keys.size
            if need <= 0:
                break
            src, dst = self.draw(lo, hi, int(need * 1.15) + 1000, rng)
            keep = src != dst
            keys = np.unique(np.concatenate([keys, src[keep] * self.nodes + dst[keep]]))
        else:
            raise ValueError(f"graphs: sources {lo}..{hi} cannot hold {count} distinct edges (graph too dense)")
        keys = keys[rng.permutation(keys.size)[:count]]
        return keys // self.nodes, keys % self.nodes


def _write_tsv(f: TextIO, src: np.ndarray, dst: np.ndarray, chunk: int = 1_000_000) -> None:
    for i in range(0, src.size, chunk):
        pairs = zip(src[i:i + chunk].tolist(), dst[i:i + chunk].tolist(), strict=True)
        f.write("".join(f"n{a}\tr0\tn{b}\n" for a, b in pairs))


def generate(spec: GraphSpec, out: Path, holdout: float = 0.0) -> dict[str, object]:
    """Write the graph to `out` (or `<stem>_train.tsv` / `<stem>_test.tsv` with a holdout); a summary.

    Each file appears whole or not at all (written under a temporary name, then renamed).
    """
    spec.check()
    started = time.perf_counter()
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    sampler = _Sampler(spec, rng)
    blocks = -(-spec.edges // BLOCK_EDGES)
    cuts = np.linspace(0, spec.nodes, blocks + 1).astype(np.int64)
    weight = np.add.reduceat(sampler.w_out, cuts[:-1])
    per_block = rng.multinomial(spec.edges, weight / weight.sum())
    shards = blocks
    has_train = np.zeros(spec.nodes, dtype=bool)
    out_degree = np.zeros(spec.nodes, dtype=np.int64)
    in_degree = np.zeros(spec.nodes, dtype=np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".graph-") as tmp:
        shard_paths = [Path(tmp) / f"shard_{i}.bin" for i in range(shards)]
        with ExitStack() as opened:
            files = [opened.enter_context(open(p, "wb")) for p in shard_paths]
            for b in range(blocks):
                src, dst = sampler.distinct(int(cuts[b]), int(cuts[b + 1]), int(per_block[b]), rng)
                records = np.empty(src.size, dtype=RECORD)
                records["src"], records["dst"] = src, dst
                records["test"] = rng.random(src.size) < holdout if holdout > 0 else False
                train = ~records["test"]
                has_train[src[train]] = True
                has_train[dst[train]] = True
                out_degree += np.bincount(src, minlength=spec.nodes)
                in_degree += np.bincount(dst, minlength=spec.nodes)
                where = rng.integers(0, shards, src.size)
                for s in range(shards):
                    records[where == s].tofile(files[s])
        stem = out.with_suffix("") if out.suffix == ".tsv" else out
        targets = {"train": Path(f"{stem}_train.tsv"), "test": Path(f"{stem}_test.tsv")} if holdout > 0 else \
            {"train": out}
        written = {name: path.with_name(f".{path.name}.{os.getpid()}.tmp") for name, path in targets.items()}
        counts = dict.fromkeys(targets, 0)
        moved_back = 0
        with ExitStack() as opened:
            handles = {name: opened.enter_context(open(path, "w")) for name, path in written.items()}
            for path in shard_paths:
                records = np.fromfile(path, dtype=RECORD)
                records = records[rng.permutation(records.size)]
                test = records["test"].copy()
                if holdout > 0:
                    back = test & ~(has_train[records["src"]] & has_train[records["dst"]])
                    moved_back += int(back.sum())
                    test &= ~back
                    _write_tsv(handles["test"], records["src"][test], records["dst"][test])
                    counts["test"] += int(test.sum())
                _write_tsv(handles["train"], records["src"][~test], records["dst"][~test])
                counts["train"] += int((~test).sum())
                path.unlink()
        for name, path in targets.items():
            written[name].replace(path)
    summary: dict[str, object] = {
        **spec.__dict__, "holdout": holdout, "files": {k: str(v) for k, v in targets.items()},
        "edges_per_file": counts, "moved_back_to_train": moved_back, "blocks": blocks,
        "max_out_degree": int(out_degree.max()), "max_in_degree": int(in_degree.max()),
        "nodes_with_edges": int(((out_degree + in_degree) > 0).sum()),
        "seconds": round(time.perf_counter() - started, 2)}
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, required=True)
    ap.add_argument("--edges", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--holdout", type=float, default=0.0, help="fraction of edges for test (0: one file)")
    ap.add_argument("--gamma", type=float, default=2.2, help="power-law exponent of the degree tails")
    ap.add_argument("--offset", type=float, default=10.0, help="rank offset of the weights; larger: milder hubs")
    ap.add_argument("--communities", type=int, default=100, help="hidden communities; 0: plain Chung-Lu")
    ap.add_argument("--mixing", type=float, default=0.3, help="fraction of edges whose dst ignores the community")
    args = ap.parse_args()
    spec = GraphSpec(args.nodes, args.edges, args.seed, args.gamma, args.offset, args.communities, args.mixing)
    try:
        summary = generate(spec, args.out, args.holdout)
    except ValueError as e:
        raise SystemExit(str(e)) from None
    print(json.dumps(summary), file=sys.stderr)


if __name__ == "__main__":
    main()
