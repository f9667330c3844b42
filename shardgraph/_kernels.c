/* The loops of shardgraph's training step that torch ops do badly.
 *
 * Row-wise Adagrad on the rows a batch touched: torch needs a gather, a scatter (with an index
 * expanded to every element) and several temporaries for it; this is one pass over the gradient
 * rows. The softmax loss over sampled candidates (end of file): one pass per row instead of a
 * dozen over the score matrix.
 *
 * Plain C with no Python API: loaded with ctypes (shardgraph/training/optim.py), built by
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

/* ------------------------------------------------------------------------------------------------
 * Softmax loss over sampled candidates, in one pass per row.
 *
 * As torch ops this is a dozen passes over the (rows, candidates) score matrix: a mask built by
 * comparing ids, a fill, the sampling correction gathered and subtracted, the row max, exp, sum,
 * log and the normalisation. Here each row is read into L1 once and finished there.
 */

/* exp(x) for x <= 0 (a score minus its row max), to float precision; 0 below -87 (where expf
 * would be subnormal) and for -inf. Written so that the compiler vectorises the loops calling
 * it: 2^(x log2 e) = 2^k 2^f with k the nearest integer and |f| <= 1/2, 2^f by its series. */
static inline float exp_nonpositive(float x) {
    const float t = (x < -87.0f ? -87.0f : x) * 1.44269504088896341f;
    const float shifted = t + 0.5f;
    int32_t k = (int32_t)shifted; /* truncation; floor for negative values below */
    k -= (float)k > shifted;
    const float f = t - (float)k;
    float p = 1.5252733804059841e-05f;
    p = p * f + 1.5403530393381610e-04f;
    p = p * f + 1.3333558146428443e-03f;
    p = p * f + 9.6181291076284772e-03f;
    p = p * f + 5.5504108664821580e-02f;
    p = p * f + 2.4022650695910071e-01f;
    p = p * f + 6.9314718055994531e-01f;
    p = p * f + 1.0f;
    const int32_t bits = (k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return x < -87.0f ? 0.0f : p * scale;
}

/* n rows in chunks of `chunk` rows. Row i's candidates are the columns of each block b:
 * scores[b][i * widths[b] + j], candidate id ids[b][(i / chunk) * widths[b] + j] (a chunk shares
 * its candidates). A candidate whose id is the row's own positive id pos_id[i] is not a negative.
 * With `correction` (one float per entity, may be NULL) every score, the positive's included, is
 * first reduced by correction[id]. `scratch` holds sum(widths) floats.
 *
 * Writes loss[i] = log(exp(pos) + sum exp(neg)) - pos, dpos[i] = dL/dpos, and overwrites the score
 * blocks with dL/dscore (0 for excluded candidates). */
void softmax_blocks_f32(int64_t n, int64_t chunk, const float *pos, const int64_t *pos_id,
                        const float *correction, int64_t blocks, float *const *scores,
                        const int64_t *const *ids, const int64_t *widths, float *scratch, float *loss,
                        float *dpos) {
    for (int64_t c = 0; c * chunk < n; c++) {
        const int64_t first = c * chunk;
        const int64_t last = first + chunk < n ? first + chunk : n;
        /* the corrections of the chunk's candidates, gathered once for all its rows */
        for (int64_t b = 0, offset = 0; b < blocks; offset += widths[b], b++) {
            const int64_t *cand = ids[b] + c * widths[b];
            for (int64_t j = 0; j < widths[b]; j++)
                scratch[offset + j] = correction ? correction[cand[j]] : 0.0f;
        }
        for (int64_t i = first; i < last; i++) {
            const int64_t own = pos_id[i];
            const float p = pos[i] - (correction ? correction[own] : 0.0f);
            float top = p;
            for (int64_t b = 0, offset = 0; b < blocks; offset += widths[b], b++) {
                const int64_t w = widths[b];
                const int64_t *cand = ids[b] + c * w;
                const float *shift = scratch + offset;
                float *s = scores[b] + i * w;
                for (int64_t j = 0; j < w; j++) {
                    const float v = cand[j] == own ? -INFINITY : s[j] - shift[j];
                    s[j] = v;
                    top = v > top ? v : top;
                }
            }
            const float e_pos = exp_nonpositive(p - top);
            float total = e_pos;
            for (int64_t b = 0; b < blocks; b++) {
                const int64_t w = widths[b];
                float *s = scores[b] + i * w;
                for (int64_t j = 0; j < w; j++) {
                    const float e = exp_nonpositive(s[j] - top);
                    s[j] = e;
                    total += e;
                }
            }
            const float inv = 1.0f / total;
            for (int64_t b = 0; b < blocks; b++) {
                const int64_t w = widths[b];
                float *s = scores[b] + i * w;
                for (int64_t j = 0; j < w; j++)
                    s[j] *= inv;
            }
            loss[i] = logf(total) + top - p;
            dpos[i] = e_pos * inv - 1.0f;
        }
    }
}

/* Import of blank-separated edge files: runs of spaces and tabs become one tab, blanks at the
 * start and at the end of a line are dropped, so pyarrow's CSV parser can read the block with a
 * tab delimiter. Writes to out (at least n bytes) and returns the length written. One pass. */
int64_t collapse_blanks(const uint8_t *in, int64_t n, uint8_t *out) {
    int64_t written = 0;
    int pending = 0;    /* a run of blanks was seen after a field */
    int line_start = 1; /* no field yet on this line */
    for (int64_t i = 0; i < n; i++) {
        const uint8_t c = in[i];
        if (c == ' ' || c == '\t') {
            pending = !line_start;
            continue;
        }
        if (c == '\n' || c == '\r') {
            pending = 0;
            line_start = c == '\n';
        } else {
            if (pending)
                out[written++] = '\t';
            pending = 0;
            line_start = 0;
        }
        out[written++] = c;
    }
    return written;
}

/* Evaluation: for each row i of a (rows, cols) block of candidate scores (row stride `stride`),
 * add to greater[i] / equal[i] the number of scores above / equal to target[i]. One pass over the
 * block (torch needs two comparisons, two bool matrices and two reductions). NaN compares false,
 * as in torch. Counts per block fit 32 bits (cols < 2^31); the sums are 64-bit. */
void count_rank_block(int64_t rows, int64_t cols, const float *scores, int64_t stride, const float *target,
                      int64_t *greater, int64_t *equal) {
    for (int64_t i = 0; i < rows; i++) {
        const float *s = scores + i * stride;
        const float t = target[i];
        int32_t g = 0, e = 0;
        for (int64_t j = 0; j < cols; j++) {
            g += s[j] > t;
            e += s[j] == t;
        }
        greater[i] += g;
        equal[i] += e;
    }
}
