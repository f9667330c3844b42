"""The inner loop of full ranking: one block of scores and the counts of candidates above / tied
with the true end, compiled kernel vs torch ops, on the evaluation's block shape.

    python -m bench.rank_count_bench [--queries 512] [--candidates 32768] [--dim 128] [--repeats 20]

Timed, in this process, each the mean of --repeats calls after one warm-up: `matmul` (the block's
scores, queries x candidates, as `shardgraph eval` computes them), `counts_compiled`
(shardgraph.eval.ranking.greater_and_equal with the C kernel) and `counts_torch` (the same with
torch ops: two comparisons and two reductions). Not timed: building the inputs. One JSON line per
variant with `ms_per_block`; `loadavg` is the 1-minute load at the start.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch

from bench.common import emit, machine_load
from shardgraph.eval.ranking import greater_and_equal


def mean_ms(call: Callable[[], object], repeats: int) -> float:
    call()
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=512)
    parser.add_argument("--candidates", type=int, default=32768)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    queries = torch.randn(args.queries, args.dim, generator=generator)
    candidates = torch.randn(args.candidates, args.dim, generator=generator)
    target = torch.randn(args.queries, generator=generator)
    scores = queries @ candidates.T
    load = machine_load()
    setting = f"{args.queries}x{args.candidates}_d{args.dim}_threads{torch.get_num_threads()}"
    for tool, call in (("matmul", lambda: queries @ candidates.T),
                       ("counts_compiled", lambda: greater_and_equal(scores, target, compiled=True)),
                       ("counts_torch", lambda: greater_and_equal(scores, target, compiled=False))):
        emit({"bench": "rank_count", "tool": "shardgraph", "setting": f"{tool}_{setting}",
              "ms_per_block": round(mean_ms(call, args.repeats), 2), "loadavg": load})


if __name__ == "__main__":
    main()
