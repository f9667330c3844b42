"""Embeddings for new nodes: fold-in quality on FB15k-237.

    python -m bench.fold_in_bench [--holdout 0.1] [--config configs/fb15k237.toml] [--epochs N]
                                  [--data data/fb15k-237 (train/valid/test.txt[.gz]; a quick run: tests/data/umls)]

10% of the entities (seeded) are held out of training entirely: every training edge that
touches one is removed. The shipped config trains on the rest; the held-out entities are
then folded in from their training edges (`embed-new`: only their rows are optimised, the
model is frozen). The test edges with one folded-in end and one trained end are ranked
(filtered, both directions) by that folded-in model and by the model trained normally on all
training edges (data/fb15k-237, shipped in the repository).

Same candidate set for both: each test edge is ranked against the entities both models hold,
the folded-in model's entities (held-out entities without an edge to fold in from are excluded
from both, and so are entities whose only edges touched held-out ones). `mrr` of each, and
`ratio` = folded-in / trained normally on that common set (the target is >= 0.7).
`mrr_own_entities` on the normally trained line ranks against all of its own entities, the
protocol earlier figures used, for reference only.

Timed: `fold_in_s`, the fold-in call alone (models already loaded; writing the folded-in run,
loading it and ranking not included); `seconds`, the whole bench from the first training on
(both trainings, fold-in, writes, loads, all rankings; with `--reuse`, the runs an earlier invocation
trained are loaded instead, and `seconds` leaves their training out). Dataset splitting is not timed.
"""

from __future__ import annotations

import argparse
import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import REPO, emit


def read(path: Path) -> list[tuple[str, str, str]]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:  # type: ignore[operator]
        return [tuple(line.rstrip("\n").split("\t")) for line in f if line.strip()]  # type: ignore[misc]


def write(path: Path, edges: list[tuple[str, str, str]]) -> Path:
    path.write_text("".join("\t".join(e) + "\n" for e in edges))
    return path


def entity_names(model: object) -> list[str]:
    from shardgraph.embeddings.model import EmbeddingModel

    assert isinstance(model, EmbeddingModel)
    names: list[str] = model.index().names.to_pylist()
    return names


def rank_edges(model: object, edges: list[tuple[str, str, str]], known: set[tuple[str, str, str]],
               names: list[str]) -> dict:
    """Filtered ranks of test edges (both directions) against the given entities (all known to the model)."""
    from shardgraph.embeddings.model import EmbeddingModel

    assert isinstance(model, EmbeddingModel)
    position = {n: i for i, n in enumerate(names)}
    vectors = torch.from_numpy(model.vectors(names))
    by_rel_lhs: dict[tuple[str, str], set[int]] = {}
    by_rel_rhs: dict[tuple[str, str], set[int]] = {}
    for s, r, o in known:
        if s in position and o in position:
            by_rel_lhs.setdefault((s, r), set()).add(position[o])
            by_rel_rhs.setdefault((o, r), set()).add(position[s])
    reciprocal = []
    with torch.no_grad():
        for s, r, o in edges:
            rel = model.relation_id(r)
            spec = model.model.relations[rel]
            for predict, known_id, truth, filters in (("rhs", s, o, by_rel_lhs.get((s, r), set())),
                                                      ("lhs", o, s, by_rel_rhs.get((o, r), set()))):
                direction = model.model.directions(spec)[0 if predict == "rhs" else 1]
                query = model.model.query(direction, vectors[position[known_id]][None], model.tables,
                                          torch.tensor([rel]))
                candidates = model.model.comparator.prepare(vectors) if direction.candidate_op is None else \
                    model.model.candidates(direction, vectors, model.tables, rel)
                scores = model.model.comparator.all_pairs(query[None], candidates[None])[0, 0]
                true_score = scores[position[truth]].item()
                mask = torch.zeros(len(names), dtype=torch.bool)
                mask[list(filters)] = True
                mask[position[truth]] = True
                others = scores[~mask]
                rank = 1 + (others > true_score).sum().item() + 0.5 * (others == true_score).sum().item()
                reciprocal.append(1.0 / rank)
    return {"mrr": float(np.mean(reciprocal)), "ranked": len(reciprocal)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--holdout", type=float, default=0.1)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "fb15k237.toml")
    ap.add_argument("--data", type=Path, default=REPO / "data" / "fb15k-237")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/sg-bench/foldin"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="override training.epochs (quick runs)")
    ap.add_argument("--reuse", action="store_true",
                    help="keep the two runs an earlier invocation with the same arguments trained in --workdir "
                         "(`seconds` then leaves their training out)")
    args = ap.parse_args()
    import shardgraph
    from shardgraph.embeddings.foldin import fold_in, write_new_entities

    if not args.reuse:
        shutil.rmtree(args.workdir, ignore_errors=True)
    shutil.rmtree(args.workdir / "folded_run", ignore_errors=True)
    args.workdir.mkdir(parents=True, exist_ok=True)
    train, valid, test = (read(next(p for p in (args.data / f"{s}.txt.gz", args.data / f"{s}.txt") if p.exists()))
                          for s in ("train", "valid", "test"))
    entities = sorted({e for s, _, o in train + valid + test for e in (s, o)})
    rng = np.random.default_rng(args.seed)
    held = set(rng.choice(entities, size=int(len(entities) * args.holdout), replace=False).tolist())
    kept_train = [e for e in train if e[0] not in held and e[2] not in held]
    relations = {r for _, r, _ in kept_train}  # the partial model knows no other relation (small graphs)
    fold_edges = [e for e in train if (e[0] in held) != (e[2] in held) and e[1] in relations]
    trained_entities = {x for s, _, o in kept_train for x in (s, o)}
    folded_entities = {x for s, _, o in fold_edges for x in (s, o)} & held

    def testable(edge: tuple[str, str, str]) -> bool:  # one end held out (and folded in), the other trained
        s, r, o = edge
        return r in relations and ((s in folded_entities and o in trained_entities)
                                   or (o in folded_entities and s in trained_entities))

    held_test = [e for e in test if testable(e)]
    extra = [f"training.epochs={args.epochs}"] if args.epochs else []

    def trained(name: str, train_edges: list[tuple[str, str, str]]) -> Path:
        run_dir = args.workdir / f"{name}_run"
        if args.reuse and (run_dir / "checkpoint" / "manifest.json").exists():
            return run_dir
        dataset = args.workdir / f"{name}_data"
        shardgraph.import_edges([write(args.workdir / f"{name}_train.tsv", train_edges)], dataset,
                                valid=[write(args.workdir / f"{name}_valid.tsv",
                                             [e for e in valid if e[0] not in held and e[2] not in held])],
                                overwrite=True, progress=False)
        config = shardgraph.load_config(args.config, [f"data.dataset={dataset}", *extra])
        return shardgraph.train(config, run_dir=run_dir, overwrite=True, progress=False).path

    known = set(train + valid + test)
    started = time.perf_counter()
    base = shardgraph.load(trained("full", train))
    partial_run = trained("partial", kept_train)
    partial = shardgraph.load(partial_run)
    fold_started = time.perf_counter()
    new = fold_in(partial, fold_edges)
    fold_seconds = time.perf_counter() - fold_started
    write_new_entities(partial, new, args.workdir / "folded_run")
    folded = shardgraph.load(args.workdir / "folded_run")
    candidates = entity_names(folded)
    base_names = set(entity_names(base))
    if not base_names.issuperset(candidates):
        raise SystemExit("fold_in_bench: the folded-in model knows entities the normally trained one does not")
    fold_result = rank_edges(folded, held_test, known, candidates)
    base_result = rank_edges(base, held_test, known, candidates)
    base_own = rank_edges(base, held_test, known, sorted(base_names))
    setting = f"{args.data.name}_holdout{args.holdout}"
    common = {"held_out_entities": len(held), "fold_in_edges": len(fold_edges), "test_edges": len(held_test),
              "candidates": len(candidates), "excluded_entities": len(base_names) - len(candidates)}
    emit({"bench": "fold_in", "tool": "shardgraph", "setting": f"{setting}_trained_normally",
          "mrr": round(base_result["mrr"], 4), "mrr_own_entities": round(base_own["mrr"], 4), **common})
    emit({"bench": "fold_in", "tool": "shardgraph", "setting": f"{setting}_folded_in",
          "mrr": round(fold_result["mrr"], 4), "ratio": round(fold_result["mrr"] / base_result["mrr"], 3),
          "fold_in_s": round(fold_seconds, 1), "seconds": round(time.perf_counter() - started, 1),
          "reused_runs": args.reuse, **common})


if __name__ == "__main__":
    main()
