"""The PyTorch Geometric peer of bench/sage_bench.py: full-batch GraphSAGE on a Planetoid folder.

    .peers/pyg-sage/bin/python bench/peers/pyg_sage_run.py --data DATASETS/cora [--features raw|hashed]
        [--hash-dim 256] [--inductive] [--seeds 10] [--threads 1]

Runs in the peer's own venv (bench/peers/pyg_sage.sh), never imports shardgraph. The protocol is
the one bench/sage_bench.py gives shardgraph: 2 × SAGEConv(aggr="mean"), hidden 64, ReLU, dropout
0.5 before each layer, Adam lr 0.01, weight decay 5e-4, cross-entropy on the training nodes, early
stopping on validation accuracy (patience 100, at most 1000 epochs, the best epoch's weights kept,
ties broken by the lower validation loss). Features: the binary word features L1-normalised
(`raw`), or each node's word ids hashed by scikit-learn's FeatureHasher (signed) into --hash-dim
columns (`hashed`). `--inductive`: the test nodes and every edge touching them are removed while
training; the test nodes are predicted on the whole graph with the trained weights. Full batch
only: pyg-lib and torch-sparse do not install here, so PyG's NeighborLoader cannot run.

Reads the dataset's edges.tsv.gz, labels.tsv, features.tsv.gz and split_{train,val,test}.txt.
Timed: each seed's training loop (steps and validation), not loading. The last stdout line is
one JSON object: accuracy (mean over seeds), std, top2_accuracy, macro_f1, seconds, epochs_mean.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.feature_extraction import FeatureHasher
from sklearn.metrics import f1_score
from torch_geometric.nn import SAGEConv
from torch_geometric.utils import coalesce, remove_self_loops, subgraph, to_torch_csr_tensor, to_undirected


def load(folder: Path) -> tuple[int, torch.Tensor, torch.Tensor, list[np.ndarray], dict[str, torch.Tensor]]:
    """Nodes, undirected edge_index, labels, each node's word ids, and the public split."""
    labelled = np.loadtxt(folder / "labels.tsv", dtype=np.int64, delimiter="\t", ndmin=2)
    n = int(labelled[:, 0].max()) + 1
    labels = np.full(n, -1, dtype=np.int64)
    labels[labelled[:, 0]] = labelled[:, 1]
    edges = torch.from_numpy(np.loadtxt(folder / "edges.tsv.gz", dtype=np.int64, delimiter="\t", ndmin=2).T.copy())
    edges = coalesce(to_undirected(remove_self_loops(edges)[0], num_nodes=n), num_nodes=n)
    words = np.loadtxt(folder / "features.tsv.gz", dtype=np.int64, delimiter="\t", ndmin=2)
    words = words[np.lexsort((words[:, 1], words[:, 0]))]
    bounds = np.searchsorted(words[:, 0], np.arange(n + 1))
    per_node = [words[bounds[i] : bounds[i + 1], 1] for i in range(n)]
    split = {k: torch.from_numpy(np.loadtxt(folder / f"split_{k}.txt", dtype=np.int64, ndmin=1))
             for k in ("train", "val", "test")}
    return n, edges, torch.from_numpy(labels), per_node, split


def features(per_node: list[np.ndarray], kind: str, hash_dim: int) -> torch.Tensor:
    if kind == "raw":
        width = max(int(w.max()) for w in per_node if len(w)) + 1
        x = np.zeros((len(per_node), width), dtype=np.float32)
        for i, w in enumerate(per_node):
            x[i, w] = 1.0
    else:
        hasher = FeatureHasher(n_features=hash_dim, input_type="string", alternate_sign=True)
        x = hasher.transform([[str(int(v)) for v in w] for w in per_node]).toarray().astype(np.float32)
    return torch.from_numpy(x / np.maximum(np.abs(x).sum(1, keepdims=True), 1e-12))


class Sage(torch.nn.Module):
    def __init__(self, width: int, hidden: int, classes: int, dropout: float) -> None:
        super().__init__()
        self.conv1, self.conv2 = SAGEConv(width, hidden, aggr="mean"), SAGEConv(hidden, classes, aggr="mean")
        self.dropout = dropout

    def forward(self, x: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(F.dropout(x, self.dropout, self.training), adjacency))
        return self.conv2(F.dropout(x, self.dropout, self.training), adjacency)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--features", choices=["raw", "hashed"], default="raw")
    parser.add_argument("--hash-dim", type=int, default=256)
    parser.add_argument("--inductive", action="store_true")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--weight-decay", type=float, default=5e-4)
    parser.add_argument("--epochs", type=int, default=1000)
    parser.add_argument("--patience", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    n, edges, y, per_node, split = load(args.data)
    x = features(per_node, args.features, args.hash_dim)
    train_nodes, valid_nodes, test = split["train"], split["val"], split["test"]
    x_train, y_train, edges_train = x, y, edges
    if args.inductive:  # the graph without the test nodes, renumbered
        keep = torch.ones(n, dtype=torch.bool)
        keep[test] = False
        edges_train = subgraph(keep, edges, relabel_nodes=True, num_nodes=n)[0]
        renumber = torch.full((n,), -1, dtype=torch.long)
        renumber[keep] = torch.arange(int(keep.sum()))
        x_train, y_train = x[keep], y[keep]
        train_nodes, valid_nodes = renumber[train_nodes], renumber[valid_nodes]
    # a CSR adj_t: SAGEConv aggregates with one sparse product (about 2x faster than edge_index here)
    adjacency_train = to_torch_csr_tensor(edges_train.flip(0), size=(len(x_train), len(x_train)))
    adjacency = to_torch_csr_tensor(edges.flip(0), size=(n, n))
    classes = int(y.max()) + 1
    results = []
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = Sage(x.shape[1], args.hidden, classes, args.dropout)
        optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
        best, best_state, waited, epochs = (-1.0, float("inf")), None, 0, 0
        started = time.perf_counter()
        for epochs in range(1, args.epochs + 1):  # noqa: B007 - the count is reported
            model.train()
            optimizer.zero_grad()
            F.cross_entropy(model(x_train, adjacency_train)[train_nodes], y_train[train_nodes]).backward()
            optimizer.step()
            model.eval()
            with torch.no_grad():
                out = model(x_train, adjacency_train)[valid_nodes]
            score = ((out.argmax(1) == y_train[valid_nodes]).float().mean().item(),
                     F.cross_entropy(out, y_train[valid_nodes]).item())
            if score[0] > best[0] or (score[0] == best[0] and score[1] < best[1]):
                best, best_state, waited = score, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
                if waited >= args.patience:
                    break
        seconds = time.perf_counter() - started
        model.load_state_dict(best_state)
        model.eval()
        with torch.no_grad():
            logits = model(x, adjacency)[test]
        predicted = logits.argmax(1)
        results.append({"accuracy": (predicted == y[test]).float().mean().item(),
                        "top2": (logits.topk(2, 1).indices == y[test, None]).any(1).float().mean().item(),
                        "macro_f1": f1_score(y[test].numpy(), predicted.numpy(), average="macro"),
                        "seconds": seconds, "epochs": epochs})
        print(f"seed {seed}: accuracy {results[-1]['accuracy']:.4f}, {epochs} epochs, {seconds:.2f} s", file=sys.stderr)

    def mean(key: str) -> float:
        return round(float(np.mean([r[key] for r in results])), 4)

    print(json.dumps({"accuracy": mean("accuracy"), "std": round(float(np.std([r["accuracy"] for r in results])), 4),
                      "top2_accuracy": mean("top2"), "macro_f1": mean("macro_f1"), "seconds": mean("seconds"),
                      "epochs_mean": mean("epochs"), "per_seed_accuracy": [round(r["accuracy"], 4) for r in results]}))


if __name__ == "__main__":
    main()
