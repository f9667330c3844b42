/* Random walks over a CSR graph: DeepWalk, node2vec (p, q) and metapath2vec, on all cores.
 *
 * Plain C with no Python API, loaded with ctypes by shardgraph/walks/kernels.py; setup.py builds it as an optional extension
 * (without a compiler, shardgraph/walks/reference.py runs the same walks, slowly, in Python).
 *
 * Every walk has its own random stream, seeded from (seed, walk id), so the walks are the same
 * whatever the number of threads and however the start nodes are cut into blocks. The stream is
 * splitmix64; a draw below n is floor(u * n) with u the top 53 bits as a double in [0, 1), which the
 * Python reference computes identically.
 *
 * node2vec's second-order bias uses rejection sampling (as KnightKing and PecanPy's SparseOTF do):
 * draw a neighbour x of the current node uniformly (or by weight) and accept it with probability
 * alpha(prev, x) / max(1/p, 1, 1/q), where alpha is 1/p when x is prev, 1 when x is a neighbour of prev
 * (a binary search: rows are sorted) and 1/q otherwise. Memory stays O(arcs): no alias tables.
 *
 * Metapath walks: node ids are contiguous per entity type and rows are sorted, so the neighbours of
 * the next type on the metapath are one contiguous range of the row, found by two binary searches;
 * a relation constraint filters that range.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

typedef struct {
    const int64_t *indptr;
    const void *indices;
    int indices_64;            /* indices are int64 (else int32) */
    const int32_t *arc_relation;
    const float *weights;      /* NULL: unweighted */
    const float *row_max;      /* (N,) largest weight of each row; NULL when unweighted */
    const int64_t *starts;
    const int64_t *walk_ids;
    int64_t n_walks;
    int64_t walk_length;
    double inv_p, inv_q;
    uint64_t seed;
    /* metapath: steps k; types[k] (type of the node before step i), relations[k] (arc relation of
       step i, -1 = any), next_types[k]; NULL when not a metapath walk */
    int64_t metapath_steps;
    const int32_t *metapath_relations;
    const int32_t *metapath_next_types;
    const int64_t *type_offsets;
    int64_t *out;              /* (n_walks, walk_length) */
    int64_t *lengths;          /* (n_walks,) */
    int threads;
    int thread_index;
} WalkJob;

static inline uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static inline double uniform(uint64_t *state) { return (double)(splitmix64(state) >> 11) * 0x1.0p-53; }

static inline int64_t below(uint64_t *state, int64_t n) {
    int64_t k = (int64_t)(uniform(state) * (double)n);
    return k < n ? k : n - 1;
}

static inline int64_t node_at(const WalkJob *job, int64_t arc) {
    return job->indices_64 ? ((const int64_t *)job->indices)[arc] : (int64_t)((const int32_t *)job->indices)[arc];
}

/* First arc in [lo, hi) whose node is >= target. */
static int64_t lower_bound(const WalkJob *job, int64_t lo, int64_t hi, int64_t target) {
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (node_at(job, mid) < target) lo = mid + 1; else hi = mid;
    }
    return lo;
}

static inline int is_neighbour(const WalkJob *job, int64_t node, int64_t x) {
    int64_t hi = job->indptr[node + 1];
    int64_t at = lower_bound(job, job->indptr[node], hi, x);
    return at < hi && node_at(job, at) == x;
}

/* A neighbour arc of `node` drawn uniformly or by weight (rejection against the row's largest weight). */
static int64_t first_order_arc(const WalkJob *job, int64_t node, uint64_t *state) {
    int64_t begin = job->indptr[node], degree = job->indptr[node + 1] - begin;
    for (;;) {
        int64_t arc = begin + below(state, degree);
        if (job->weights == NULL) return arc;
        if (uniform(state) * job->row_max[node] < job->weights[arc]) return arc;
    }
}

/* node2vec: a neighbour arc of `node` coming from `prev`, by rejection. */
static int64_t second_order_arc(const WalkJob *job, int64_t node, int64_t prev, double bound, uint64_t *state) {
    int64_t begin = job->indptr[node], degree = job->indptr[node + 1] - begin;
    for (;;) {
        int64_t arc = begin + below(state, degree);
        int64_t x = node_at(job, arc);
        double bias = x == prev ? job->inv_p : is_neighbour(job, prev, x) ? 1.0 : job->inv_q;
        double scale = bound;
        if (job->weights != NULL) {
            bias *= job->weights[arc];
            scale *= job->row_max[node];
        }
        if (uniform(state) * scale < bias) return arc;
    }
}

/* metapath2vec: an arc of `node` to the next type (and relation) of the metapath, or -1 if none. */
static int64_t metapath_arc(const WalkJob *job, int64_t node, int64_t step, uint64_t *state) {
    int32_t next_type = job->metapath_next_types[step];
    int32_t relation = job->metapath_relations[step];
    int64_t row_end = job->indptr[node + 1];
    int64_t lo = lower_bound(job, job->indptr[node], row_end, job->type_offsets[next_type]);
    int64_t hi = lower_bound(job, lo, row_end, job->type_offsets[next_type + 1]);
    double total = 0.0;
    for (int64_t a = lo; a < hi; a++)
        if (relation < 0 || job->arc_relation[a] == relation) total += job->weights ? job->weights[a] : 1.0;
    if (total <= 0.0) return -1;
    double target = uniform(state) * total, seen = 0.0;
    int64_t last = -1;
    for (int64_t a = lo; a < hi; a++) {
        if (relation >= 0 && job->arc_relation[a] != relation) continue;
        seen += job->weights ? job->weights[a] : 1.0;
        last = a;
        if (target < seen) return a;
    }
    return last; /* rounding at the very end of the sum */
}

static void walk_one(const WalkJob *job, int64_t w) {
    int64_t length = job->walk_length;
    int64_t *out = job->out + w * length;
    uint64_t state = job->seed ^ 0xD1B54A32D192ED03ULL;
    uint64_t mixed = splitmix64(&state);
    state = mixed ^ (uint64_t)job->walk_ids[w] * 0x9E3779B97F4A7C15ULL;
    splitmix64(&state);
    int first_order = job->inv_p == 1.0 && job->inv_q == 1.0;
    double bound = fmax(job->inv_p, fmax(1.0, job->inv_q));
    int64_t node = job->starts[w], prev = -1, n = 1;
    out[0] = node;
    for (; n < length; n++) {
        if (job->indptr[node + 1] == job->indptr[node]) break; /* dead end (directed graphs) */
        int64_t arc;
        if (job->metapath_steps > 0) arc = metapath_arc(job, node, (n - 1) % job->metapath_steps, &state);
        else if (first_order || prev < 0) arc = first_order_arc(job, node, &state);
        else arc = second_order_arc(job, node, prev, bound, &state);
        if (arc < 0) break;
        prev = node;
        node = node_at(job, arc);
        out[n] = node;
    }
    job->lengths[w] = n;
    for (int64_t k = n; k < length; k++) out[k] = -1;
}

static void *walk_thread(void *arg) {
    const WalkJob *job = (const WalkJob *)arg;
    for (int64_t w = job->thread_index; w < job->n_walks; w += job->threads) walk_one(job, w);
    return NULL;
}

/* Walks from starts[i] (walk ids walk_ids[i]) into out (n_walks, walk_length), -1 after the end;
 * lengths[i] = number of nodes of walk i. Returns 0. */
int sg_random_walks(const int64_t *indptr, const void *indices, int indices_64, const int32_t *arc_relation,
                    const float *weights, const float *row_max, const int64_t *starts, const int64_t *walk_ids,
                    int64_t n_walks, int64_t walk_length, double p, double q, uint64_t seed,
                    int64_t metapath_steps, const int32_t *metapath_relations,
                    const int32_t *metapath_next_types, const int64_t *type_offsets, int64_t *out,
                    int64_t *lengths, int threads) {
    if (threads < 1) threads = 1;
    if (threads > 256) threads = 256;
    WalkJob jobs[256];
    pthread_t handles[256];
    for (int t = 0; t < threads; t++) {
        jobs[t] = (WalkJob){indptr, indices, indices_64, arc_relation, weights, row_max, starts, walk_ids,
                            n_walks, walk_length, 1.0 / p, 1.0 / q, seed, metapath_steps, metapath_relations,
                            metapath_next_types, type_offsets, out, lengths, threads, t};
    }
    int started[256] = {0};
    for (int t = 1; t < threads; t++) started[t] = pthread_create(&handles[t], NULL, walk_thread, &jobs[t]) == 0;
    walk_thread(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t]) pthread_join(handles[t], NULL);
        else walk_thread(&jobs[t]); /* no thread: this one walks its share */
    }
    return 0;
}

/* Skip-gram pairs of a block of walks (n_walks, walk_length), -1 after each walk's end: for every
 * position i of a walk, reach r_i = window, or with `shrink` (word2vec's shrunk window) drawn uniformly
 * from 1..window, and the pairs (centre walk[i], context walk[i + d]) for 0 < d <= r_i, with `both` also
 * (walk[i], walk[i - d]). The draws come from one stream per walk, seeded from (seed, walk index).
 * Written as int64 centre[k] / context[k], or where `rows` is not NULL as int32 edge rows
 * (centre, 0, context) (a dataset's bucket rows, for a graph of one type and partition). The output
 * has room for sum(lengths) * window * (both ? 2 : 1) pairs. Returns the pair count. */
int64_t sg_window_pairs(const int64_t *walks, const int64_t *lengths, int64_t n_walks, int64_t walk_length,
                        int64_t window, int shrink, int both, uint64_t seed, int64_t *centre, int64_t *context,
                        int32_t *rows) {
    int64_t count = 0;
#define EMIT(a, b)                                                                                           \
    do {                                                                                                     \
        if (rows) {                                                                                          \
            rows[3 * count] = (int32_t)(a), rows[3 * count + 1] = 0, rows[3 * count + 2] = (int32_t)(b);     \
        } else {                                                                                             \
            centre[count] = (a), context[count] = (b);                                                       \
        }                                                                                                    \
        count++;                                                                                             \
    } while (0)
    for (int64_t w = 0; w < n_walks; w++) {
        const int64_t *walk = walks + w * walk_length, length = lengths[w];
        uint64_t state = seed ^ ((uint64_t)w * 0x9E3779B97F4A7C15ULL);
        splitmix64(&state);
        for (int64_t i = 0; i < length; i++) {
            const int64_t reach = shrink ? 1 + below(&state, window) : window;
            const int64_t ahead = i + reach < length - 1 ? reach : length - 1 - i;
            for (int64_t d = 1; d <= ahead; d++)
                EMIT(walk[i], walk[i + d]);
            if (both) {
                const int64_t behind = reach < i ? reach : i;
                for (int64_t d = 1; d <= behind; d++)
                    EMIT(walk[i], walk[i - d]);
            }
        }
    }
#undef EMIT
    return count;
}
