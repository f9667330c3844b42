"""Import speed and memory, shardgraph vs PyTorch-BigGraph's importer, on the same file in one run.

    python -m bench.import_bench [--nodes 1000000] [--edges 10000000] [--partitions 1]
                                 [--delimiters tab,comma,semicolon,pipe,space,spaces] [--workdir /tmp/sg-bench]

Generates a power-law graph with the peers' generator (cached), writes the same edges with
every delimiter asked for (tab: the generator's file; comma: `.csv`; semicolon, pipe, a single
space, and runs of spaces: `.txt`), then imports each with `shardgraph import FILE --out DIR`
(no other flag: the delimiter is detected), and the tab file with PBG's importer (its own
converter, batched edge writer: ../shared/peers/pbg/pbg_import_batched.py). Prints one JSON
line per tool and delimiter.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from bench.common import (
    PEERS,
    PYTHON,
    emit,
    generated_graph,
    last_json,
    machine_load,
    pbg_config,
    pbg_python,
    run_measured,
)

# delimiter name -> (file suffix, bytes that replace each tab of the generator's file)
DELIMITERS = {
    "tab": (".tsv", b"\t"),
    "comma": (".csv", b","),
    "semicolon": (".semicolon.txt", b";"),
    "pipe": (".pipe.txt", b"|"),
    "space": (".space.txt", b" "),
    "spaces": (".spaces.txt", b"   "),
}


def with_delimiter(graph: Path, name: str) -> Path:
    """The generator's tab-separated file rewritten with another delimiter (cached beside it)."""
    suffix, replacement = DELIMITERS[name]
    if name == "tab":
        return graph
    path = graph.with_suffix(suffix)
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        with open(graph, "rb") as src, open(partial, "wb") as dst:
            while block := src.read(16 << 20):
                dst.write(block.replace(b"\t", replacement))
        partial.rename(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1_000_000)
    ap.add_argument("--edges", type=int, default=10_000_000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--delimiters", default=",".join(DELIMITERS),
                    help=f"comma-separated subset of {', '.join(DELIMITERS)}")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sg-bench"))
    ap.add_argument("--skip-pbg", action="store_true")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    graph = generated_graph(args.workdir, args.nodes, args.edges)["train"]
    setting = f"{args.nodes}n_{args.edges}e_P{args.partitions}"

    for name in args.delimiters.split(","):
        path = with_delimiter(graph, name)
        out = args.workdir / "import_sg"
        shutil.rmtree(out, ignore_errors=True)
        load = machine_load()
        sg = run_measured([PYTHON, "-m", "shardgraph", "import", str(path), "--out", str(out), "--partitions",
                           str(args.partitions), "--json"])
        summary = last_json(sg["stdout"])
        emit({"bench": "import", "tool": "shardgraph", "setting": f"{setting}_{name}", "delimiter": name,
              "edges": summary["edges"]["train"], "entities": summary["entities"], "seconds": sg["seconds"],
              "edges_per_sec": round(summary["edges"]["train"] / sg["seconds"], 1),
              "peak_mem_mb": sg["peak_mem_mb"], "import_s": summary["seconds"], "loadavg": load})
        shutil.rmtree(out, ignore_errors=True)

    if args.skip_pbg:
        return
    pbg_dir = args.workdir / "import_pbg"
    shutil.rmtree(pbg_dir, ignore_errors=True)
    pbg_dir.mkdir()
    config = pbg_dir / "config.py"
    config.write_text(pbg_config(pbg_dir / "data", [pbg_dir / "edges"], pbg_dir / "model", args.partitions, 100))
    load = machine_load()
    pbg = run_measured([str(pbg_python()), str(PEERS / "pbg" / "pbg_import_batched.py"), "--lhs-col=0",
                        "--rel-col=1", "--rhs-col=2", str(config), str(graph)])
    emit({"bench": "import", "tool": "pbg", "setting": f"{setting}_tab", "delimiter": "tab", "edges": args.edges,
          "seconds": pbg["seconds"], "edges_per_sec": round(args.edges / pbg["seconds"], 1),
          "peak_mem_mb": pbg["peak_mem_mb"], "loadavg": load})
    shutil.rmtree(pbg_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
