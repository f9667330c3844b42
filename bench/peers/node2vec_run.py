#!/usr/bin/env python3
"""node2vec / DeepWalk benchmark peer: PecanPy random walks + gensim Word2Vec (skip-gram, negative sampling).

  run_node2vec.py EDGES --out EMB.npz [--p 1 --q 1] [--mode auto|SparseOTF|PreComp|FirstOrderUnweighted|...]
                  [--cols 0,1] [--directed] [--walk-length 80 --num-walks 10 --window 10 --dim 128 --epochs 1]
                  [--workers 2] [--seed 0] [--time-limit S] [--mem-limit-mb M]

EDGES: edge list, one edge per line, fields separated by whitespace or commas, '#'/'%' comment lines
skipped, optionally gzipped (.gz). --cols picks the src,dst columns (0-based; "0,2" for gen_graph.py's
"src rel dst"). Node ids are kept as strings (as PecanPy does). Graph is undirected unless --directed;
unweighted (any weight column is ignored); duplicate edges are merged; self-loops are kept (as PecanPy's
own reader does).

Pipeline = PecanPy's own (`pecanpy.cli` / `Base.embed`): numba.set_num_threads(workers), mode object
(p, q, workers, random_state), [preprocess_transition_probs for PreComp], simulate_walks(num_walks,
walk_length) -> list of str walks, gensim Word2Vec(walks, vector_size=dim, window, min_count=0, sg=1,
workers, epochs, seed) with gensim defaults otherwise (negative=5, hs=0, sample=1e-3, alpha=0.025).
The only change: the graph is loaded by a streaming numpy/scipy reader into exactly PecanPy's CSR
layout (uint32 indptr, sorted uint32 indices, float32 data) -- PecanPy's pure-Python edge-list reader
takes minutes and several GB at 10M edges. Loading is timed separately (load_s) and is not in `seconds`.

--mode auto = FirstOrderUnweighted when p == q == 1 (what PecanPy recommends for DeepWalk walks: uniform
neighbour sampling, no second-order bookkeeping), else SparseOTF.

Output: EMB.npz with IDs (str) and data (float32, one row per ID), like `pecanpy --output x.npz`;
stdout's last line is one JSON object:
  {"bench":"node2vec","tool":"pecanpy+gensim","setting":{...},"walk_s","w2v_s","seconds","peak_mem_mb",...}
walk_s includes PreComp's preprocessing, numba JIT compilation of the walk kernel (a few seconds, paid on
every run) and mapping walks to str ids; seconds = walk_s + w2v_s. peak_mem_mb = max over time of RSS
summed over this process and its children (sampled every 0.2 s; numba and gensim use threads, so this is
one process), and never below this process's getrusage ru_maxrss high-water mark.

w2v_s = w2v_vocab_s (gensim build_vocab: one pass over the walks) + w2v_train_s (model.train); this is exactly
what Word2Vec(walks, ...) does internally, split so that both steps are timed.

--time-limit / --w2v-time-limit / --mem-limit-mb: a watchdog aborts the run (exit 3) once the walk phase
(resp. the word2vec phase) has run longer than S seconds or tree RSS exceeds M MB, after printing a JSON line
with status "aborted", the progress of that phase (walks finished / total from PecanPy's progress counter, or
gensim's "% examples" progress) and the projected time of the phase. Progress is also logged to stderr every
--progress-every seconds.
"""
import argparse
import contextlib
import gzip
import json
import logging
import os
import re
import resource
import sys
import threading
import time

import numpy as np


def open_text(path):
    return gzip.open(path, "rt") if path.endswith(".gz") else open(path)


def read_edges(path, cols, chunk_lines=1_000_000):
    """Stream an edge list -> (src_idx uint32, dst_idx uint32, ids list[str]) with ids in order of first appearance."""
    c0, c1 = cols
    need = max(c0, c1) + 1
    idmap = {}
    get = idmap.setdefault
    src_parts, dst_parts = [], []
    s_buf, d_buf = [], []

    def flush():
        if s_buf:
            src_parts.append(np.fromiter(s_buf, dtype=np.uint32, count=len(s_buf)))
            dst_parts.append(np.fromiter(d_buf, dtype=np.uint32, count=len(d_buf)))
            s_buf.clear()
            d_buf.clear()

    with open_text(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip() or line[0] in "#%":
                continue
            parts = line.replace(",", " ").split()
            if len(parts) < need:
                sys.exit(f"run_node2vec: {path}:{lineno}: expected at least {need} fields, got {len(parts)}: {line!r}")
            s_buf.append(get(parts[c0], len(idmap)))
            d_buf.append(get(parts[c1], len(idmap)))
            if len(s_buf) >= chunk_lines:
                flush()
    flush()
    if not src_parts:
        sys.exit(f"run_node2vec: no edges in {path}")
    ids = [None] * len(idmap)
    for k, v in idmap.items():
        ids[v] = k
    return np.concatenate(src_parts), np.concatenate(dst_parts), ids


def to_csr(src, dst, n, directed):
    """PecanPy's CSR layout: indptr uint32 (n+1), indices uint32 sorted per row, data float32 (all 1.0)."""
    import scipy.sparse as sp
    if not directed:
        src, dst = np.concatenate([src, dst]), np.concatenate([dst, src])
    m = sp.csr_matrix((np.ones(src.size, dtype=np.float32), (src, dst)), shape=(n, n))
    m.sum_duplicates()  # also sorts indices
    m.data[:] = 1.0
    if m.nnz >= 2**32:
        sys.exit("run_node2vec: more than 2^32 adjacency entries; PecanPy's uint32 CSR cannot hold them")
    return m.indptr.astype(np.uint32), m.indices.astype(np.uint32), m.data.astype(np.float32)


class MemWatch:
    """Samples RSS of this process + children; optional abort on time / memory limits during walks."""

    def __init__(self, interval=0.2):
        import psutil
        self.proc = psutil.Process()
        self.peak = 0
        self.interval = interval
        self.stop = threading.Event()
        self.phase = None      # "walk" or "w2v" while a limited phase runs
        self.phase_t0 = None
        self.walk_total = None
        self.progress = None   # numba_progress.ProgressBar of the running simulate_walks
        self.w2v_progress = None  # (percent of walks processed, words/s) from gensim's progress log
        self.time_limit = None
        self.w2v_time_limit = None
        self.mem_limit_mb = None
        self.progress_every = 60.0
        self.on_abort = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def rss(self):
        total = 0
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except Exception:
            procs = [self.proc]
        for p in procs:
            with contextlib.suppress(Exception):
                total += p.memory_info().rss
        return total

    def walks_done(self):
        return int(self.progress.hook[0]) if self.progress is not None else None

    def _run(self):
        last_log = time.time()
        while not self.stop.is_set():
            r = self.rss()
            self.peak = max(self.peak, r)
            now = time.time()
            if self.phase is not None:
                el = now - self.phase_t0
                if now - last_log >= self.progress_every:
                    last_log = now
                    prog = (f"walks done {self.walks_done()}/{self.walk_total}" if self.phase == "walk"
                            else f"gensim progress {self.w2v_progress}")
                    print(f"run_node2vec: {self.phase} phase {el:.0f} s, {prog}, rss {r / 2**20:.0f} MB",
                          file=sys.stderr, flush=True)
                limit = self.time_limit if self.phase == "walk" else self.w2v_time_limit
                over_t = limit is not None and el > limit
                over_m = self.mem_limit_mb is not None and r / 2**20 > self.mem_limit_mb
                if (over_t or over_m) and self.on_abort is not None:
                    self.on_abort("time_limit" if over_t else "mem_limit", self.phase, el, r)
                    os._exit(3)
            self.stop.wait(self.interval)

    def peak_mb(self):
        self.peak = max(self.peak, self.rss())
        # not + RUSAGE_CHILDREN: a forked helper (gensim/platform probes) inherits the parent's high-water mark,
        # which would double-count; real concurrent children are in the sampled tree sum
        ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return max(self.peak, ru * 1024) / 2**20


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("edges")
    ap.add_argument("--out", required=True, help="embeddings: .npz (IDs, data) or anything else = word2vec text format")
    ap.add_argument("--p", type=float, default=1.0)
    ap.add_argument("--q", type=float, default=1.0)
    ap.add_argument("--mode", default="auto",
                    choices=["auto", "SparseOTF", "PreComp", "DenseOTF", "FirstOrderUnweighted", "PreCompFirstOrder"])
    ap.add_argument("--cols", default="0,1", help="0-based src,dst columns (gen_graph.py output: 0,2)")
    ap.add_argument("--directed", action="store_true")
    ap.add_argument("--walk-length", type=int, default=80)
    ap.add_argument("--num-walks", type=int, default=10)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--time-limit", type=float, default=None, help="abort if the walk phase runs longer (s)")
    ap.add_argument("--w2v-time-limit", type=float, default=None,
                    help="abort if word2vec training runs longer (s); reports gensim's progress and a projection")
    ap.add_argument("--mem-limit-mb", type=float, default=None,
                    help="abort if tree RSS exceeds this (walks or word2vec)")
    ap.add_argument("--progress-every", type=float, default=60.0)
    ap.add_argument("--tag", default="", help="free text copied into setting.tag")
    args = ap.parse_args()

    import importlib.metadata as md

    import gensim
    import numba
    from gensim.models import Word2Vec
    from pecanpy import pecanpy as pp

    cols = tuple(int(c) for c in args.cols.split(","))
    if len(cols) != 2:
        sys.exit("run_node2vec: --cols must be two comma-separated 0-based column numbers, e.g. 0,1")
    mode = args.mode
    if mode == "auto":
        mode = "FirstOrderUnweighted" if args.p == 1 and args.q == 1 else "SparseOTF"
    if mode in ("FirstOrderUnweighted", "PreCompFirstOrder") and not (args.p == 1 and args.q == 1):
        sys.exit(f"run_node2vec: --mode {mode} needs p = q = 1, got p={args.p}, q={args.q}")

    watch = MemWatch()
    watch.time_limit, watch.mem_limit_mb, watch.progress_every = args.time_limit, args.mem_limit_mb, args.progress_every
    watch.w2v_time_limit = args.w2v_time_limit
    load1 = os.getloadavg()
    t_start = time.time()
    numba.set_num_threads(args.workers)

    t0 = time.time()
    src, dst, ids = read_edges(args.edges, cols)
    n_lines = int(src.size)
    indptr, indices, data = to_csr(src, dst, len(ids), args.directed)
    del src, dst
    load_s = time.time() - t0

    g = getattr(pp, mode)(args.p, args.q, args.workers, False, False, 0, args.seed)
    g.set_node_ids(ids)
    g.indptr, g.indices, g.data = indptr, indices, data
    n_nodes, n_adj = g.num_nodes, int(indptr[-1])

    setting = {"p": args.p, "q": args.q, "mode": mode, "directed": args.directed, "walk_length": args.walk_length,
               "num_walks": args.num_walks, "window": args.window, "dim": args.dim, "epochs": args.epochs,
               "sg": 1, "negative": 5, "workers": args.workers, "seed": args.seed,
               "input": os.path.abspath(args.edges), "tag": args.tag}
    base = {"bench": "node2vec", "tool": "pecanpy+gensim", "setting": setting,
            "nodes": n_nodes, "edge_lines": n_lines, "adj_entries": n_adj}

    # capture the ProgressBar pecanpy creates so the watchdog can read how many walks are done
    orig_pb = pp.ProgressBar

    def capturing_pb(*a, **k):
        pb = orig_pb(*a, **k)
        watch.progress = pb
        return pb
    pp.ProgressBar = capturing_pb

    done_phases = {}

    def on_abort(reason, phase, el, rss):
        out = dict(base, status="aborted", reason=reason, phase=phase, load_s=round(load_s, 2), **done_phases)
        if phase == "walk":
            done = watch.walks_done() or 0
            total = watch.walk_total
            frac = done / total if total else 0.0
            out.update(walk_elapsed_s=round(el, 1), walks_done=done, walks_total=total, walk_fraction=round(frac, 5),
                       projected_walk_s=round(el / frac, 1) if frac > 0 else None)
        else:
            pct, wps = watch.w2v_progress or (0.0, None)
            train_el = el - done_phases.get("w2v_vocab_s", 0.0)
            out.update(w2v_elapsed_s=round(el, 1), w2v_train_elapsed_s=round(train_el, 1),
                       w2v_train_fraction=round(pct / 100, 5), w2v_words_per_s=wps,
                       projected_w2v_train_s=round(train_el / (pct / 100), 1) if pct > 0 else None)
        out.update(rss_mb_at_abort=round(rss / 2**20, 1), peak_mem_mb=round(watch.peak_mb(), 1),
                   loadavg_start=[round(x, 2) for x in load1], loadavg_end=[round(x, 2) for x in os.getloadavg()])
        print(json.dumps(out), flush=True)

    watch.on_abort = on_abort
    watch.walk_total = n_nodes * args.num_walks

    t0 = time.time()
    watch.phase_t0, watch.phase = t0, "walk"
    precomp_s = 0.0
    if mode in ("PreComp", "PreCompFirstOrder"):
        g.preprocess_transition_probs()
        g._preprocessed = True
        precomp_s = time.time() - t0
    walks = g.simulate_walks(args.num_walks, args.walk_length)
    walk_s = time.time() - t0
    watch.phase = None
    mem_after_walks = watch.peak_mb()
    n_tokens = sum(len(w) for w in walks)
    done_phases.update(walk_s=round(walk_s, 2), precomp_s=round(precomp_s, 2), walk_tokens=n_tokens,
                       peak_mem_mb_after_walks=round(mem_after_walks, 1))

    # gensim's own progress log ("EPOCH 0 - PROGRESS: at 12.34% examples, 123456 words/s, ...") feeds the watchdog
    class GensimProgress(logging.Handler):
        pat = re.compile(r"PROGRESS: at ([0-9.]+)% examples, ([0-9]+) words/s")

        def emit(self, record):
            m = self.pat.search(record.getMessage())
            if m:
                watch.w2v_progress = (float(m.group(1)), int(m.group(2)))
    glog = logging.getLogger("gensim.models.word2vec")
    glog.setLevel(logging.INFO)
    glog.addHandler(GensimProgress())
    glog.propagate = False

    # = Word2Vec(walks, ...) as in pecanpy.cli, split into its two steps so each is timed
    t0 = time.time()
    watch.phase_t0, watch.phase = t0, "w2v"
    model = Word2Vec(vector_size=args.dim, window=args.window, min_count=0, sg=1,
                     workers=args.workers, epochs=args.epochs, seed=args.seed)
    model.build_vocab(walks)
    w2v_vocab_s = time.time() - t0
    done_phases["w2v_vocab_s"] = round(w2v_vocab_s, 2)
    model.train(walks, total_examples=model.corpus_count, epochs=model.epochs)
    w2v_s = time.time() - t0
    watch.phase = None
    del walks

    t0 = time.time()
    vecs = model.wv[g.nodes]  # rows aligned with the graph's node order
    if args.out.endswith(".npz"):
        np.savez(args.out, IDs=np.array(g.nodes), data=vecs.astype(np.float32))
    else:
        with open(args.out, "w") as f:
            f.write(f"{len(g.nodes)} {vecs.shape[1]}\n")
            for nid, v in zip(g.nodes, vecs, strict=False):
                f.write(nid + " " + " ".join(f"{x:.6f}" for x in v) + "\n")
    write_s = time.time() - t0
    total_s = time.time() - t_start
    peak = watch.peak_mb()
    watch.stop.set()
    ru = resource.getrusage(resource.RUSAGE_SELF)

    out = dict(base, status="ok", walk_s=round(walk_s, 2), w2v_s=round(w2v_s, 2),
               seconds=round(walk_s + w2v_s, 2), peak_mem_mb=round(peak, 1),
               w2v_vocab_s=round(w2v_vocab_s, 2), w2v_train_s=round(w2v_s - w2v_vocab_s, 2),
               w2v_words_per_s_last=(watch.w2v_progress or (None, None))[1],
               peak_mem_mb_after_walks=round(mem_after_walks, 1), precomp_s=round(precomp_s, 2),
               load_s=round(load_s, 2), write_s=round(write_s, 2), total_s=round(total_s, 2),
               walk_tokens=n_tokens, cpu_user_s=round(ru.ru_utime, 1), cpu_sys_s=round(ru.ru_stime, 1),
               loadavg_start=[round(x, 2) for x in load1], loadavg_end=[round(x, 2) for x in os.getloadavg()],
               versions={"pecanpy": md.version("pecanpy"), "gensim": gensim.__version__,
                         "numba": numba.__version__, "numpy": np.__version__},
               out=os.path.abspath(args.out))
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
