"""Import every real edge file of ../shared/datasets with no flag but --out, and check the counts.

    python -m bench.import_shared_datasets [--only cora,snap-ca-hepth] [--datasets ../shared/datasets] [--json]

Each file goes through the `shardgraph import` command as a user would type it: no flag but
`--out` (`--valid`/`--test` for the held-out splits of a knowledge graph; `--columns` only where
the columns are not lhs/rhs or lhs/rel/rhs in that order). The expected counts are those of the
dataset's SOURCE.md: entities are the nodes that have at least one edge (SOURCE.md's node count
where it says there are no isolated nodes; `-` where it gives none for that file), edges are the
file's edge lines. Prints a Markdown table (dataset, file, entities, edges, expected, ok), or one
JSON line per file with --json; exits 1 if a count differs.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import DATASETS


@dataclass(frozen=True)
class Case:
    """One import: its files, the flags it needs besides --out, and SOURCE.md's counts."""

    dataset: str
    train: str
    entities: int | None  # None: SOURCE.md gives no count for this file's ids
    edges: int | tuple[int, int, int]  # train, or (train, valid, test)
    relations: int | None = None
    valid: str | None = None
    test: str | None = None
    columns: str | None = None
    note: str = ""
    flags: list[str] = field(default_factory=list)

    def args(self, root: Path, out: Path) -> list[str]:
        args = ["import", str(root / self.dataset / self.train), "--out", str(out)]
        if self.valid:
            args += ["--valid", str(root / self.dataset / self.valid)]
        if self.test:
            args += ["--test", str(root / self.dataset / self.test)]
        if self.columns:
            args += ["--columns", self.columns]
        return args


def kg(name: str, entities: int, relations: int, edges: tuple[int, int, int], suffix: str = ".txt.gz") -> Case:
    return Case(name, f"train{suffix}", entities, edges, relations, f"valid{suffix}", f"test{suffix}")


CASES = [
    kg("fb15k-237", 14_541, 237, (272_115, 17_535, 20_466)),
    Case("fb15k", "valid.txt.gz", 14_308, (50_000, 0, 59_071), 1_056, test="test.txt.gz",
         note="no train split here: valid imported as train"),
    kg("wn18rr", 40_943, 11, (86_835, 3_034, 3_134)),
    kg("wn18", 40_943, 18, (141_442, 5_000, 5_000)),
    kg("nations", 14, 55, (1_592, 199, 201), ".txt"),
    kg("umls", 135, 46, (5_216, 652, 661), ".txt"),
    kg("kinship", 104, 25, (8_544, 1_068, 1_074), ".txt"),
    Case("blogcatalog", "edges.csv.gz", 10_312, 333_983),
    Case("blogcatalog", "group-edges.csv.gz", None, 14_476, note="node,group pairs; group ids overlap node ids"),
    Case("ppi-node2vec", "ppi.edgelist.gz", 3_890, 76_584, note="third column kept as the weight attribute"),
    Case("snap-email-enron", "email-Enron.txt.gz", 36_692, 367_662),
    Case("snap-ego-facebook", "facebook_combined.txt.gz", 4_039, 88_234),
    Case("snap-ca-hepth", "CA-HepTh.txt.gz", 9_877, 51_971),
    Case("snap-p2p-gnutella08", "p2p-Gnutella08.txt.gz", 6_301, 20_777),
    Case("snap-email-eu-core", "email-Eu-core.txt.gz", 1_005, 25_571),
    Case("musae-facebook", "edges.csv.gz", 22_470, 171_002),
    Case("musae-github", "edges.csv.gz", 37_700, 289_003),
    Case("musae-twitch-en", "edges.csv.gz", 7_126, 35_324),
    Case("feather-lastfm-asia", "edges.csv.gz", 7_624, 27_806),
    Case("feather-deezer-europe", "edges.csv.gz", 28_281, 92_752),
    Case("cora", "edges.tsv.gz", 2_708, 5_278),
    Case("cora", "raw_linqs/cora.cites", 2_708, 5_429),
    Case("citeseer", "edges.tsv.gz", 3_327, 4_676, note="4,552 edges + 124 self-loops"),
    Case("pubmed", "edges.tsv.gz", 19_717, 44_327),
    Case("dblp-hgb", "edges.tsv.gz", 26_128, 119_783, 3, columns="lhs,rhs,rel"),
    Case("dblp-hgb", "raw_ji2010/paper_author.txt.gz", None, 41_794, note="paper and author ids overlap"),
    Case("dblp-hgb", "raw_ji2010/paper_conf.txt.gz", 14_396, 14_376, note="14,376 papers + 20 venues"),
    Case("dblp-hgb", "raw_ji2010/paper_term.txt.gz", None, 114_624, note="paper and term ids overlap"),
    Case("imdb-magnn", "edges.tsv.gz", 11_616, 17_106, 2, columns="lhs,rhs,rel"),
]


def run_case(case: Case, root: Path, workdir: Path) -> dict[str, Any]:
    from shardgraph.cli import main as shardgraph_main

    out = workdir / f"{case.dataset}-{Path(case.train).name}"
    shutil.rmtree(out, ignore_errors=True)
    stdout, stderr = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        status = shardgraph_main([*case.args(root, out), "--json"])
    seconds = time.perf_counter() - started
    shutil.rmtree(out, ignore_errors=True)
    flags = f"--columns {case.columns}" if case.columns else ""
    row: dict[str, Any] = {"dataset": case.dataset, "file": case.train, "flags": flags, "seconds": round(seconds, 2)}
    if status != 0:
        return {**row, "ok": False, "error": stderr.getvalue().strip()}
    summary = json.loads(stdout.getvalue().strip().splitlines()[-1])
    edges = summary["edges"]
    got_edges = edges["train"] if isinstance(case.edges, int) else (edges["train"], edges["valid"], edges["test"])
    ok = got_edges == case.edges and (case.entities is None or summary["entities"] == case.entities) and (
        case.relations is None or summary["relations"] == case.relations)
    return {**row, "entities": summary["entities"], "relations": summary["relations"], "edges": got_edges,
            "expected_entities": case.entities, "expected_edges": case.edges, "expected_relations": case.relations,
            "attributes": summary["edge_attributes"], "comment_lines": summary["comment_lines"],
            "detected": next(iter(summary["detected"].values()), {}), "ok": ok, "note": case.note}


def _count(value: int | tuple[int, ...] | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    return " / ".join(f"{v:,}" for v in value)


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| dataset | file | entities | edges | expected (SOURCE.md) | ok |", "|---|---|---:|---:|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['dataset']} | `{r['file']}` | | | | **no**: {r['error']} |")
            continue
        expected = f"{_count(r['expected_entities'])} entities, {_count(r['expected_edges'])} edges"
        if r["expected_relations"]:
            expected += f", {r['expected_relations']:,} relations"
        extra = [f"`{r['flags']}`"] if r["flags"] else []
        if r["attributes"]:
            extra.append("attributes: " + ", ".join(r["attributes"]))
        if r["note"]:
            extra.append(r["note"])
        lines.append(f"| {r['dataset']} | `{r['file']}` | {r['entities']:,} | {_count(r['edges'])} | {expected}"
                     f"{' (' + '; '.join(extra) + ')' if extra else ''} | {'yes' if r['ok'] else '**no**'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", type=Path, default=DATASETS)
    ap.add_argument("--only", help="comma-separated dataset names")
    ap.add_argument("--json", action="store_true", help="one JSON line per file instead of the table")
    args = ap.parse_args(argv)
    only = set(args.only.split(",")) if args.only else None
    cases = [c for c in CASES if only is None or c.dataset in only]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sg-shared-import-") as tmp:
        for case in cases:
            row = run_case(case, args.datasets, Path(tmp))
            rows.append(row)
            if args.json:
                print(json.dumps(row, default=str), flush=True)
    if not args.json:
        print(markdown(rows))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
