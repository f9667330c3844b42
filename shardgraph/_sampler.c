/* Neighbour sampling over a CSR graph for GraphSAGE mini-batches.
 *
 * For each target node, up to `fanout` of its arcs drawn uniformly without replacement (all of
 * them when the degree is at most `fanout`). Each target has its own random stream, seeded from
 * (seed, position of the target), so the result does not depend on the number of threads.
 * Targets are shared out over OpenMP threads where the compiler has OpenMP.
 *
 * Plain C with no Python API: loaded with ctypes (shardgraph/gnn/sampler.py), built by setup.py
 * as an optional extension; without it the sampler runs as numpy operations.
 */
#include <stdint.h>

static inline uint64_t splitmix64(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform integer in [0, bound) (Lemire's multiply-shift; the bias is below 2^-32 for our bounds). */
static inline int64_t below(uint64_t *state, int64_t bound) {
    return (int64_t)(((__uint128_t)splitmix64(state) * (uint64_t)bound) >> 64);
}

/* counts[i] = number sampled for targets[i]; out[i * fanout + j], j < counts[i], the neighbours.
 * Floyd's algorithm picks `fanout` distinct arc offsets out of the degree. */
#define SAMPLE_BODY(INDEX_T)                                                                       \
    _Pragma("omp parallel for schedule(dynamic, 256)")                                           \
    for (int64_t i = 0; i < n; i++) {                                                              \
        const int64_t node = targets[i];                                                           \
        const int64_t start = indptr[node], degree = indptr[node + 1] - start;                     \
        int64_t *row = out + i * fanout;                                                           \
        if (degree <= fanout) {                                                                    \
            for (int64_t j = 0; j < degree; j++)                                                   \
                row[j] = (int64_t)indices[start + j];                                              \
            counts[i] = degree;                                                                    \
            continue;                                                                              \
        }                                                                                          \
        uint64_t state = seed ^ ((uint64_t)i * 0xD1B54A32D192ED03ull);                             \
        int64_t picked = 0;                                                                        \
        for (int64_t top = degree - fanout; top < degree; top++) {                                 \
            int64_t offset = below(&state, top + 1);                                               \
            for (int64_t k = 0; k < picked; k++) {                                                 \
                if (row[k] == offset) {                                                            \
                    offset = top;                                                                  \
                    break;                                                                         \
                }                                                                                  \
            }                                                                                      \
            row[picked++] = offset;                                                                \
        }                                                                                          \
        for (int64_t k = 0; k < fanout; k++)                                                       \
            row[k] = (int64_t)indices[start + row[k]];                                             \
        counts[i] = fanout;                                                                        \
    }

void sample_neighbors_i32(const int64_t *indptr, const int32_t *indices, const int64_t *targets, int64_t n,
                          int64_t fanout, uint64_t seed, int64_t *counts, int64_t *out) {
    SAMPLE_BODY(int32_t)
}

void sample_neighbors_i64(const int64_t *indptr, const int64_t *indices, const int64_t *targets, int64_t n,
                          int64_t fanout, uint64_t seed, int64_t *counts, int64_t *out) {
    SAMPLE_BODY(int64_t)
}

/* Local positions of `nodes` in a table of size num_nodes: position[v] = -1 for nodes not yet
 * seen. Appends new nodes to `order` (starting at *count) and writes each node's position to
 * `local`. Sequential: the order of first appearance defines the positions. */
void relabel(const int64_t *nodes, int64_t n, int64_t *position, int64_t *order, int64_t *count, int64_t *local) {
    int64_t next = *count;
    for (int64_t i = 0; i < n; i++) {
        const int64_t v = nodes[i];
        if (position[v] < 0) {
            position[v] = next;
            order[next++] = v;
        }
        local[i] = position[v];
    }
    *count = next;
}
