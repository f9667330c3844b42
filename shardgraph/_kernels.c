/* The one update loop of shardgraph that torch ops do badly: row-wise Adagrad on the rows a
 * batch touched. torch needs a gather, a scatter (with an index expanded to every element)
 * and several temporaries for it; this is one pass over the gradient rows.
 *
 * Plain C with no Python API: loaded with ctypes (shardgraph/train/optim.py), built by
 * setup.py as an optional extension. Without it, the same update runs as torch ops.
 *
 * HOGWILD: several worker processes call it on the same shared tables without locks.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>

/* Accumulate mean(g^2) into *state and return the row's step size lr / sqrt(*state), or 0 for an
 * all-zero gradient (the row and its state are then left unchanged). */
static inline float adagrad_step(float *state, const float *g, int64_t dim, float lr) {
    float square = 0.0f;
    for (int64_t j = 0; j < dim; j++)
        square += g[j] * g[j];
    if (square == 0.0f)
        return 0.0f;
    *state += square / (float)dim;
    return lr / (sqrtf(*state) + 1e-10f);
}

/* For each occurrence i: state[row] += mean(grad[i]^2); table[row] -= lr / sqrt(state[row]) * grad[i].
 * A row met several times is updated once per occurrence, as consecutive steps. */
void rowwise_adagrad_f32(float *table, int64_t table_stride, float *state, const int64_t *index,
                         int64_t index_stride, const float *grad, int64_t n, int64_t dim, float lr) {
    for (int64_t i = 0; i < n; i++) {
        const int64_t row = index[i * index_stride];
        const float *g = grad + i * dim;
        const float scale = adagrad_step(&state[row], g, dim, lr);
        if (scale == 0.0f)
            continue;
        float *t = table + row * table_stride;
        for (int64_t j = 0; j < dim; j++)
            t[j] -= scale * g[j];
    }
}

static inline float bf16_to_f32(uint16_t half) {
    const uint32_t bits = (uint32_t)half << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* float32 -> bfloat16 rounded stochastically: add 16 random bits below the kept ones, truncate.
 * Rounds up with probability proportional to the distance from the lower neighbour, so that
 * steps smaller than bfloat16's resolution still move a value on average. */
static inline uint16_t f32_to_bf16_stochastic(float value, uint64_t *rng) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    if ((bits & 0x7f800000u) == 0x7f800000u) /* inf or nan: keep as is */
        return (uint16_t)(bits >> 16);
    uint64_t x = *rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    const uint32_t noise = (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 48);
    return (uint16_t)((bits + noise) >> 16);
}

/* The same update on a bfloat16 table (math in float32, stochastic rounding on write). */
void rowwise_adagrad_bf16(uint16_t *table, int64_t table_stride, float *state, const int64_t *index,
                          int64_t index_stride, const float *grad, int64_t n, int64_t dim, float lr,
                          uint64_t seed) {
    uint64_t rng = seed | 1u;
    for (int64_t i = 0; i < n; i++) {
        const int64_t row = index[i * index_stride];
        const float *g = grad + i * dim;
        const float scale = adagrad_step(&state[row], g, dim, lr);
        if (scale == 0.0f)
            continue;
        uint16_t *t = table + row * table_stride;
        for (int64_t j = 0; j < dim; j++)
            t[j] = f32_to_bf16_stochastic(bf16_to_f32(t[j]) - scale * g[j], &rng);
    }
}
