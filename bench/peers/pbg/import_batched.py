"""PyTorch-BigGraph's TSV importer with edges written to each bucket in batches; runs in the peer's venv.

    $PBG_VENV/bin/python bench/peers/pbg/import_batched.py --lhs-col=0 --rel-col=1 --rhs-col=2 CONFIG TSV...

Same command line and same output as `torchbiggraph_import_from_tsv`. PBG 1.0.0's converter
appends each edge to its bucket's HDF5 file on its own (three one-element tensors and an HDF5
append per edge: about 2k edges/s here; later PBG versions batch). Everything else stays PBG's
code: entity and relation counting, the shuffled dictionaries, their partitions, the edge
storage and its appenders. Only `generate_edge_path_files` is replaced by one that looks each
word up in a table built from PBG's own `Dictionary.get_partition` and appends the edges of a
bucket FLUSH at a time, in file order: the buckets hold the same edges in the same order.
"""

from __future__ import annotations

import sys
from array import array
from contextlib import ExitStack
from pathlib import Path

import torch
import torchbiggraph.converters.import_from_tsv as stock
from torchbiggraph.edgelist import EdgeList
from torchbiggraph.entitylist import EntityList

FLUSH = 1 << 20
"""Edges buffered per bucket before one append."""


def generate_edge_path_files(edge_file_in: Path, edge_path_out: Path, edge_storage, entities_by_type,
                             relation_types, relation_configs, dynamic_relations: bool, lhs_col: int, rhs_col: int,
                             rel_col: int | None) -> None:
    print(f"Preparing edge path {edge_path_out} from {edge_file_in}, {FLUSH} edges per append")
    edge_storage.prepare()
    where = {kind: {word: d.get_partition(word) for word in d.get_list()} for kind, d in entities_by_type.items()}
    processed = skipped = 0
    with open(edge_file_in) as lines, ExitStack() as stack:
        appenders = {}
        pending: dict[tuple[int, int], tuple[array, array, array]] = {}

        def flush(bucket: tuple[int, int]) -> None:
            lhs, rhs, rel = pending.pop(bucket)
            if bucket not in appenders:
                appenders[bucket] = stack.enter_context(edge_storage.save_edges_by_appending(*bucket))
            appenders[bucket].append_edges(EdgeList(EntityList.from_tensor(torch.tensor(lhs, dtype=torch.long)),
                                                    EntityList.from_tensor(torch.tensor(rhs, dtype=torch.long)),
                                                    torch.tensor(rel, dtype=torch.long)))

        for number, line in enumerate(lines, start=1):
            words = line.split()
            try:
                lhs_word, rhs_word = words[lhs_col], words[rhs_col]
                rel_id = 0 if rel_col is None else relation_types.word_to_ix.get(words[rel_col])
            except IndexError:
                raise RuntimeError(f"Line {number} of {edge_file_in} has only {len(words)} words") from None
            if rel_id is None:
                skipped += 1
                continue
            relation = relation_configs[0 if dynamic_relations else rel_id]
            lhs, rhs = where[relation.lhs].get(lhs_word), where[relation.rhs].get(rhs_word)
            if lhs is None or rhs is None:
                skipped += 1
                continue
            bucket = (lhs[0], rhs[0])
            if bucket not in pending:
                pending[bucket] = (array("q"), array("q"), array("q"))
            columns = pending[bucket]
            columns[0].append(lhs[1])
            columns[1].append(rhs[1])
            columns[2].append(rel_id)
            if len(columns[0]) >= FLUSH:
                flush(bucket)
            processed += 1
        for bucket in list(pending):
            flush(bucket)
    print(f"- Processed {processed} edges in total")
    if skipped:
        print(f"- Skipped {skipped} edges whose relation type or entities were unknown")


if __name__ == "__main__":
    stock.generate_edge_path_files = generate_edge_path_files
    sys.argv[0] = "torchbiggraph_import_from_tsv"
    stock.main()
