"""Export speed: shardgraph's writers vs PyTorch-BigGraph's export_to_tsv, on the same table.

    python -m bench.export_bench [--rows 1000000] [--dim 100] [--formats tsv npy parquet h5 w2v]

Builds a run directory holding a random (rows, dim) float32 table (through
shardgraph.storage.run.create_run), exports it to every format, then exports the same table
with PBG's torchbiggraph.converters.export_to_tsv (from a PBG checkpoint written with PBG's
own storage code, in the peer's venv: `bash bench/peers/pbg.sh`). Also reports the raw disk
write speed (dd of the same number of bytes, fsync included) for comparison with npy/parquet.
One JSON line per tool and format.

Timed (`seconds`): for shardgraph, the `export(...)` call in this process (reading the
checkpoint, with its checksum verification, and writing the file); for PBG, the `make_tsv`
call in its own process (reading its checkpoint and writing the TSV). Not timed: building the
table, the run directory and PBG's checkpoint, process start-up and imports. No memory figure.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from bench.common import emit, pbg_python, run_measured

PBG_SCRIPT = r'''
import json, sys, time
from pathlib import Path
import numpy as np, torch
from torchbiggraph.checkpoint_manager import CheckpointManager
from torchbiggraph.config import ConfigFileLoader
from torchbiggraph.converters.export_to_tsv import make_tsv
from torchbiggraph.graph_storages import ENTITY_STORAGES, RELATION_TYPE_STORAGES
from torchbiggraph.model import make_model

root, rows, dim, table = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
root.mkdir(parents=True, exist_ok=True)
config = root / "config.py"
config.write_text(f"""
def get_torchbiggraph_config():
    return dict(entity_path={str(root / 'data')!r}, edge_paths=[], checkpoint_path={str(root / 'model')!r},
                entities={{'node': {{'num_partitions': 1}}}},
                relations=[{{'name': 'r0', 'lhs': 'node', 'rhs': 'node', 'operator': 'none'}}],
                dimension={dim}, global_emb=False)
""")
cfg = ConfigFileLoader().load_config(str(config))
entities = ENTITY_STORAGES.make_instance(cfg.entity_path)
entities.prepare()
entities.save_count("node", 0, rows)
entities.save_names("node", 0, [f"n{i}" for i in range(rows)])
relations = RELATION_TYPE_STORAGES.make_instance(cfg.entity_path)
relations.prepare()
relations.save_count(1)
relations.save_names(["r0"])
manager = CheckpointManager(cfg.checkpoint_path)
manager.write("node", 0, torch.from_numpy(np.load(table)), None)
manager.write_model(make_model(cfg).state_dict(), None)
manager.write_config(cfg)
manager.switch_to_new_version()
start = time.perf_counter()
with open(root / "entities.tsv", "xt") as ef, open(root / "relations.tsv", "xt") as rf:
    make_tsv(cfg, ef, rf)
print(json.dumps({"seconds": time.perf_counter() - start}))
'''


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=100)
    ap.add_argument("--formats", nargs="+", default=["tsv", "npy", "parquet", "h5", "w2v"])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sg-bench/export"))
    ap.add_argument("--skip-pbg", action="store_true")
    args = ap.parse_args()
    shutil.rmtree(args.workdir, ignore_errors=True)
    args.workdir.mkdir(parents=True)
    import numpy as np

    from shardgraph.config import load_config
    from shardgraph.data.dataset import Dataset
    from shardgraph.data.importer import import_edges
    from shardgraph.embeddings.writers import export
    from shardgraph.storage.run import create_run

    rows, dim = args.rows, args.dim
    edges = args.workdir / "ids.tsv"
    with open(edges, "w") as f:  # a path graph over rows ids: every id appears, in order
        f.write("".join(f"n{i}\tn{i + 1}\n" for i in range(0, rows - 1, 2)))
        if rows % 2:
            f.write(f"n{rows - 1}\tn0\n")
    import_edges([edges], args.workdir / "ds", progress=False)
    table = np.random.default_rng(0).standard_normal((rows, dim), dtype=np.float32)
    np.save(args.workdir / "table.npy", table)
    import torch

    run = create_run(args.workdir / "run", load_config(None, [f"model.dimension={dim}"]),
                     Dataset(args.workdir / "ds"), {"entity": [torch.from_numpy(table)]})
    setting = f"{rows}x{dim}"
    size_mb = rows * dim * 4 / 2**20
    for fmt in args.formats:
        out = args.workdir / f"out.{fmt}"
        started = time.perf_counter()
        export(run, fmt, out, progress=False)
        seconds = time.perf_counter() - started
        emit({"bench": "export", "tool": "shardgraph", "setting": f"{setting}_{fmt}", "seconds": round(seconds, 2),
              "rows_per_sec": round(rows / seconds), "mb_per_sec": round(size_mb / seconds, 1)})
        out.unlink()
    started = time.perf_counter()
    subprocess.run(["dd", "if=/dev/zero", f"of={args.workdir / 'dd.bin'}", "bs=16M",
                    f"count={max(1, int(size_mb / 16))}", "conv=fsync"], check=True, capture_output=True)
    seconds = time.perf_counter() - started
    emit({"bench": "export", "tool": "dd", "setting": f"{setting}_raw_write", "seconds": round(seconds, 2),
          "mb_per_sec": round(size_mb / seconds, 1)})
    if args.skip_pbg:
        return
    script = args.workdir / "pbg_export.py"
    script.write_text(PBG_SCRIPT)
    result = run_measured([str(pbg_python()), str(script), str(args.workdir / "pbg"), str(rows), str(dim),
                           str(args.workdir / "table.npy")])
    import json

    seconds = json.loads(result["stdout"].strip().splitlines()[-1])["seconds"]
    emit({"bench": "export", "tool": "pbg", "setting": f"{setting}_tsv", "seconds": round(seconds, 2),
          "rows_per_sec": round(rows / seconds), "mb_per_sec": round(size_mb / seconds, 1)})


if __name__ == "__main__":
    sys.exit(main())
