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
#include <stdlib.h>
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

/* ------------------------------------------------------------------------------------------------
 * The whole training step of a model scored by a plain dot product (operator none, comparator dot:
 * walk embeddings' skip-gram, or any such graph), on float32 tables, fused into one pass per chunk.
 *
 * The same step as the torch path of shardgraph/training/step.py: edges (lhs[i], rhs[i]) in chunks
 * of `chunk`; each direction's candidates are the chunk's other ends (batch negatives, when
 * `batch_negs`) and `uniform` rows drawn per chunk (lneg / rneg, (chunks, uniform)); a candidate whose
 * id is the edge's own end is not a negative; loss = both directions summed. As torch ops each
 * chunk costs some twenty small operations (gathers, matrix products, masks, the loss, scatters of
 * the updates), so that with the few negatives of a skip-gram the interpreter, not the arithmetic,
 * sets the speed; here a chunk is scored, differentiated and applied (row-wise Adagrad, one step
 * per occurrence) while its rows are in cache. The one difference: the updates are applied after
 * each chunk rather than after each batch (a chunk's gradients still all come from the values
 * before its own updates).
 *
 * The score matrix of a chunk, B[i][j] = lhs_i . rhs_j, holds both directions' batch negatives
 * (row i for the query lhs_i, column i for the query rhs_i) and, on its diagonal, the positives.
 */

enum { LOSS_RANKING = 0, LOSS_LOGISTIC = 1, LOSS_SOFTMAX = 2 };

#if defined(__GNUC__) && __GNUC__ >= 11 && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
/* AVX2 + FMA where the CPU has them, chosen when the library loads (GCC 11+ names x86-64-v3); baseline
   x86-64 otherwise */
#define VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define VECTOR_CLONES
#endif

/* Eight floats as one value (GCC / Clang vector extension): AVX registers in the x86-64-v3 build,
 * pairs of SSE registers in the baseline one. Loads and stores of any alignment. */
typedef float v8sf __attribute__((vector_size(32)));
typedef float v8sf_u __attribute__((vector_size(32), aligned(4), may_alias));

static inline v8sf load8(const float *p) { return *(const v8sf_u *)p; }
static inline void store8(float *p, v8sf v) { *(v8sf_u *)p = v; }
static inline float sum8(v8sf v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }

static inline void prefetch_row(const void *row, int64_t bytes) {
    for (int64_t k = 0; k < bytes; k += 256) /* every fourth 64-byte line: the hardware fetches its neighbours */
        __builtin_prefetch((const char *)row + k);
}

/* out[t] = q . c[t] for t < count. Four candidates at a time share each load of q and keep four
 * independent sums (one running sum would wait on the latency of every multiply-add). */
static inline void dots(const float *q, const float *const *c, int64_t count, int64_t dim, float *out) {
    const int64_t vec = dim & ~(int64_t)7;
    int64_t t = 0;
    for (; t + 4 <= count; t += 4) {
        const float *c0 = c[t], *c1 = c[t + 1], *c2 = c[t + 2], *c3 = c[t + 3];
        v8sf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};
        for (int64_t k = 0; k < vec; k += 8) {
            const v8sf x = load8(q + k);
            s0 += x * load8(c0 + k);
            s1 += x * load8(c1 + k);
            s2 += x * load8(c2 + k);
            s3 += x * load8(c3 + k);
        }
        float r0 = sum8(s0), r1 = sum8(s1), r2 = sum8(s2), r3 = sum8(s3);
        for (int64_t k = vec; k < dim; k++) {
            r0 += q[k] * c0[k];
            r1 += q[k] * c1[k];
            r2 += q[k] * c2[k];
            r3 += q[k] * c3[k];
        }
        out[t] = r0, out[t + 1] = r1, out[t + 2] = r2, out[t + 3] = r3;
    }
    for (; t < count; t++) {
        const float *c0 = c[t];
        v8sf s0 = {0}, s1 = {0};
        int64_t k = 0;
        for (; k + 16 <= vec; k += 16) {
            s0 += load8(q + k) * load8(c0 + k);
            s1 += load8(q + k + 8) * load8(c0 + k + 8);
        }
        for (; k < vec; k += 8)
            s0 += load8(q + k) * load8(c0 + k);
        float r = sum8(s0 + s1);
        for (k = vec; k < dim; k++)
            r += q[k] * c0[k];
        out[t] = r;
    }
}

/* out = sum_t coef[t] * rows[t] (count rows of dim floats; zero coefficients skipped). Each block of 32
 * columns is summed in registers over all the rows and stored once. */
static inline void combine(float *out, const float *coef, const float *const *rows, int64_t count, int64_t dim) {
    int64_t k = 0;
    for (; k + 32 <= dim; k += 32) {
        v8sf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
        for (int64_t t = 0; t < count; t++) {
            if (coef[t] == 0.0f)
                continue;
            const v8sf c = {coef[t], coef[t], coef[t], coef[t], coef[t], coef[t], coef[t], coef[t]};
            const float *r = rows[t] + k;
            a0 += c * load8(r);
            a1 += c * load8(r + 8);
            a2 += c * load8(r + 16);
            a3 += c * load8(r + 24);
        }
        store8(out + k, a0);
        store8(out + k + 8, a1);
        store8(out + k + 16, a2);
        store8(out + k + 24, a3);
    }
    for (; k < dim; k++) {
        float a = 0.0f;
        for (int64_t t = 0; t < count; t++)
            a += coef[t] * rows[t][k];
        out[k] = a;
    }
}

/* log(1 + e) for 0 <= e <= 1: 2 atanh(z) with z = e / (2 + e) <= 1/3, by its series (error < 1e-8);
 * vectorises, unlike log1pf. */
static inline float log1p_unit(float e) {
    const float z = e / (2.0f + e), z2 = z * z;
    float p = 1.0f / 13.0f;
    p = p * z2 + 1.0f / 11.0f;
    p = p * z2 + 1.0f / 9.0f;
    p = p * z2 + 1.0f / 7.0f;
    p = p * z2 + 1.0f / 5.0f;
    p = p * z2 + 1.0f / 3.0f;
    p = p * z2 + 1.0f;
    return 2.0f * z * p;
}

/* One query's loss over its positive score `pos` and candidate scores s[0..w) (ids[j]; a candidate
 * whose id is `own` is not a negative). Overwrites s with dL/ds (0 for non-negatives), sets *dpos.
 * `keep` is scratch for w floats. Branch-free loops of vectorisable functions: with the few
 * candidates of a skip-gram, libm's expf / log1pf per candidate would cost more than the scores. */
static inline float row_loss(int kind, float margin, float pos, float *s, const int64_t *ids, int64_t w,
                             int64_t own, float *keep, float *dpos) {
    int64_t valid = 0;
    for (int64_t j = 0; j < w; j++) {
        keep[j] = ids[j] != own ? 1.0f : 0.0f;
        valid += ids[j] != own;
    }
    if (kind == LOSS_SOFTMAX) {
        /* the row max may take an excluded candidate's score: it is the positive's own row, the same score */
        float top = pos;
        for (int64_t j = 0; j < w; j++)
            top = s[j] > top ? s[j] : top;
        const float e_pos = exp_nonpositive(pos - top);
        float total = e_pos;
        for (int64_t j = 0; j < w; j++) {
            s[j] = exp_nonpositive(s[j] - top) * keep[j];
            total += s[j];
        }
        const float inv = 1.0f / total;
        for (int64_t j = 0; j < w; j++)
            s[j] *= inv;
        *dpos = e_pos * inv - 1.0f;
        return logf(total) + top - pos;
    }
    if (kind == LOSS_LOGISTIC) { /* softplus(-pos) + mean over the negatives of softplus(neg) */
        const float weight = 1.0f / (float)(valid > 0 ? valid : 1);
        float loss = 0.0f;
        for (int64_t j = 0; j < w; j++) {
            const float x = s[j], e = exp_nonpositive(-fabsf(x)), r = 1.0f / (1.0f + e);
            const float k = keep[j] * weight;
            loss += k * ((x > 0.0f ? x : 0.0f) + log1p_unit(e)); /* softplus(x) */
            s[j] = k * (x >= 0.0f ? r : e * r);                   /* sigmoid(x), weighted */
        }
        const float e = exp_nonpositive(-fabsf(pos)), r = 1.0f / (1.0f + e);
        *dpos = -(pos >= 0.0f ? e * r : r); /* -sigmoid(-pos) */
        return (pos < 0.0f ? -pos : 0.0f) + log1p_unit(e) + loss;
    }
    float loss = 0.0f, count = 0.0f; /* ranking: sum of max(0, margin - pos + neg) */
    for (int64_t j = 0; j < w; j++) {
        const float hinge = margin - pos + s[j];
        const float active = hinge > 0.0f ? keep[j] : 0.0f;
        loss += active * hinge;
        count += active;
        s[j] = active;
    }
    *dpos = -count;
    return loss;
}

/* Row-wise Adagrad on row `row` of table with gradient g (as rowwise_adagrad_f32, one occurrence). */
static inline void adagrad_row(float *table, int64_t stride, float *state, int64_t row, const float *g,
                               int64_t dim, float lr) {
    const float scale = adagrad_step(&state[row], g, dim, lr);
    float *t = table + row * stride;
    if (scale != 0.0f)
        for (int64_t k = 0; k < dim; k++)
            t[k] -= scale * g[k];
}

/* The same on a bfloat16 table: the row read in float32, written back with stochastic rounding. The 16
 * bits of noise of each element come from a hash of (one draw of the xorshift per row, the column), not
 * from a chain of draws: the elements are independent and the loop vectorises (a chain of 128
 * dependent draws per row made bfloat16 tables a third slower than float32 ones). */
static inline void adagrad_row_bf16(uint16_t *table, int64_t stride, float *state, int64_t row, const float *g,
                                    int64_t dim, float lr, uint64_t *rng) {
    const float scale = adagrad_step(&state[row], g, dim, lr);
    if (scale == 0.0f)
        return;
    uint64_t x = *rng; /* xorshift64* */
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *rng = x;
    const uint32_t base = (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
    uint16_t *t = table + row * stride;
    for (int64_t k = 0; k < dim; k++) {
        uint32_t h = base + (uint32_t)k * 0x9E3779B9u; /* murmur3's finaliser */
        h ^= h >> 16;
        h *= 0x85EBCA6Bu;
        h ^= h >> 13;
        h *= 0xC2B2AE35u;
        h ^= h >> 16;
        const float value = bf16_to_f32(t[k]) - scale * g[k];
        uint32_t bits;
        memcpy(&bits, &value, sizeof bits);
        const uint32_t noise = (bits & 0x7f800000u) == 0x7f800000u ? 0u : (h & 0xffffu); /* inf, nan: as is */
        t[k] = (uint16_t)((bits + noise) >> 16);
    }
}

/* A bfloat16 row widened to float32 (the shift vectorises). */
static inline void widen_row(float *out, const uint16_t *row, int64_t dim) {
    uint32_t *bits = (uint32_t *)out;
    for (int64_t k = 0; k < dim; k++)
        bits[k] = (uint32_t)row[k] << 16;
}

/* sigmoid(x) and softplus(x) = log(1 + e^x) of each of n scores, in one vectorised pass: x is
 * overwritten with sigmoid(x), softplus written to sp. */
static inline void sigmoid_softplus(float *x, float *sp, int64_t n) {
    for (int64_t j = 0; j < n; j++) {
        const float v = x[j], e = exp_nonpositive(-fabsf(v)), r = 1.0f / (1.0f + e);
        sp[j] = (v > 0.0f ? v : 0.0f) + log1p_unit(e);
        x[j] = v >= 0.0f ? r : e * r;
    }
}

/* The losses of one chunk of m edges, both directions, and their gradients, written over the scores.
 * b (m, w): lhs_i . rhs_j, the batch negatives (w = m, or 0 without them); ur / ul (m, u): lhs_i .
 * rneg_k / rhs_i . lneg_k; pos (m): lhs_i . rhs_i. kr / kl (m, w), kur / kul (m, u): 1 where the
 * candidate is a negative of the rhs direction's query i (rhs_j != rhs_i, rneg_k != rhs_i) / the lhs
 * direction's (lhs_j != lhs_i: symmetric, so also its column; lneg_k != lhs_i). The direction rhs
 * of edge i reads row i of b, the direction lhs column i. `work` holds max(m * w, m * u) + 2m floats.
 * Returns the loss, or -1 where a softmax row underflowed (the caller then takes row_loss). */
static inline double chunk_losses(int kind, int64_t m, int64_t w, int64_t u, float *b, float *ur, float *ul,
                                  float *pos, const float *kr, const float *kl, const float *kur,
                                  const float *kul, const float *pr, const float *pl, float *work) {
    float *inv_r = work, *inv_l = work + m, *extra = work + 2 * m;
    double total = 0.0;
    if (kind == LOSS_LOGISTIC) {
        /* per direction: softplus(-pos) + mean over the negatives of softplus(neg) */
        for (int64_t i = 0; i < m; i++) {
            float cr = 0.0f, cl = 0.0f;
            for (int64_t j = 0; j < w; j++)
                cr += kr[i * w + j], cl += kl[i * w + j];
            for (int64_t k = 0; k < u; k++)
                cr += kur[i * u + k], cl += kul[i * u + k];
            inv_r[i] = 1.0f / (cr > 0.0f ? cr : 1.0f);
            inv_l[i] = 1.0f / (cl > 0.0f ? cl : 1.0f);
        }
        float *sp = extra, positives = 0.0f;
        for (int64_t i = 0; i < m; i++) { /* softplus(-x) and d/dx = -sigmoid(-x), for both directions */
            const float v = pos[i], e = exp_nonpositive(-fabsf(v)), r = 1.0f / (1.0f + e);
            positives += (v < 0.0f ? -v : 0.0f) + log1p_unit(e);
            pos[i] = -2.0f * (v >= 0.0f ? e * r : r);
        }
        total += 2.0 * (double)positives;
        if (w) {
            sigmoid_softplus(b, sp, m * w);
            for (int64_t i = 0; i < m; i++) {
                float row = 0.0f;
                for (int64_t j = 0; j < w; j++) {
                    const float weight = kr[i * w + j] * inv_r[i] + kl[i * w + j] * inv_l[j];
                    row += weight * sp[i * w + j];
                    b[i * w + j] *= weight;
                }
                total += row;
            }
        }
        for (int pass = 0; pass < 2; pass++) {
            float *x = pass ? ul : ur;
            const float *keep = pass ? kul : kur, *inv = pass ? inv_l : inv_r;
            sigmoid_softplus(x, sp, m * u);
            for (int64_t i = 0; i < m; i++) {
                float row = 0.0f;
                for (int64_t k = 0; k < u; k++) {
                    const float weight = keep[i * u + k] * inv[i];
                    row += weight * sp[i * u + k];
                    x[i * u + k] *= weight;
                }
                total += row;
            }
        }
        return total;
    }
    /* softmax: cross-entropy of the positive among itself and the negatives, per direction. All scores of
     * the chunk are shifted by their one maximum, so each exponential serves both directions. With
     * sampling corrections, e^(s - c) = e^s e^-c: the caller has multiplied the masks by the candidates'
     * e^-c, and pr / pl (or NULL) are the positives' e^-c of each direction. */
    float top = pos[0];
    for (int64_t i = 0; i < m; i++)
        top = pos[i] > top ? pos[i] : top;
    for (int64_t j = 0; j < m * w; j++)
        top = b[j] > top ? b[j] : top;
    for (int64_t j = 0; j < m * u; j++) {
        top = ur[j] > top ? ur[j] : top;
        top = ul[j] > top ? ul[j] : top;
    }
    for (int64_t i = 0; i < m; i++)
        pos[i] = exp_nonpositive(pos[i] - top);
    for (int64_t j = 0; j < m * w; j++)
        b[j] = exp_nonpositive(b[j] - top);
    for (int64_t j = 0; j < m * u; j++) {
        ur[j] = exp_nonpositive(ur[j] - top);
        ul[j] = exp_nonpositive(ul[j] - top);
    }
    for (int64_t i = 0; i < m; i++) { /* the sums: row i of b for direction rhs, column i for lhs */
        float tr = pos[i] * (pr ? pr[i] : 1.0f), tl = pos[i] * (pl ? pl[i] : 1.0f);
        for (int64_t k = 0; k < u; k++)
            tr += kur[i * u + k] * ur[i * u + k], tl += kul[i * u + k] * ul[i * u + k];
        inv_r[i] = tr, inv_l[i] = tl;
    }
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < w; j++) {
            inv_r[i] += kr[i * w + j] * b[i * w + j];
            inv_l[j] += kl[i * w + j] * b[i * w + j];
        }
    for (int64_t i = 0; i < m; i++) {
        const float er = pos[i] * (pr ? pr[i] : 1.0f), el = pos[i] * (pl ? pl[i] : 1.0f);
        if (!(inv_r[i] > 1e-30f && inv_l[i] > 1e-30f && er > 0.0f && el > 0.0f && inv_r[i] < 1e30f
              && inv_l[i] < 1e30f))
            return -1.0; /* scores too far apart for one shift */
        /* loss = log(sum) + top - positive; the positive's exponential is er = e^(positive - top) */
        total += (double)logf(inv_r[i] / er) + (double)logf(inv_l[i] / el);
        inv_r[i] = 1.0f / inv_r[i], inv_l[i] = 1.0f / inv_l[i];
        pos[i] = er * inv_r[i] + el * inv_l[i] - 2.0f;
    }
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < w; j++)
            b[i * w + j] *= kr[i * w + j] * inv_r[i] + kl[i * w + j] * inv_l[j];
    for (int64_t i = 0; i < m; i++)
        for (int64_t k = 0; k < u; k++) {
            ur[i * u + k] *= kur[i * u + k] * inv_r[i];
            ul[i * u + k] *= kul[i * u + k] * inv_l[i];
        }
    return total;
}

/* Edges (lhs[i], rhs[i]), read with a stride (columns of an edge block); uniform negatives lneg / rneg
 * (chunks, uniform). With corrections corr_l / corr_r (one float per row of each table, or NULL:
 * training.sampling_correction) every score of a direction, the positive's included, is first reduced
 * by the correction of its candidate (lhs rows for the direction that predicts lhs): with softmax in the
 * chunk's one shift (e^(s - c) = e^s e^-c), with the other losses one query at a time. `bf16`: the tables hold bfloat16 (uint16 bit patterns): a chunk's rows are
 * widened to float32 once, and each update is written back with stochastic rounding (xorshift seeded
 * with `seed`). Returns the summed loss of the n edges, both directions, or -1 where memory for the
 * chunk's scratch could not be had. */
static inline __attribute__((always_inline)) double
dot_step(void *ltab_v, float *lstate, void *rtab_v, float *rstate, int64_t stride, int64_t dim, const int64_t *lhs,
         const int64_t *rhs, int64_t id_stride, int64_t n, int64_t chunk, int64_t batch_negs, const int64_t *lneg,
         const int64_t *rneg, int64_t uniform, int64_t kind, float margin, float lr, const float *corr_l,
         const float *corr_r, const int bf16, uint64_t seed) {
    float *ltab = ltab_v, *rtab = rtab_v;
    uint16_t *lhalf = ltab_v, *rhalf = rtab_v;
    const int64_t row_bytes = dim * (bf16 ? 2 : 4);
#define LROW(r) (bf16 ? (const void *)(lhalf + (r) * stride) : (const void *)(ltab + (r) * stride))
#define RROW(r) (bf16 ? (const void *)(rhalf + (r) * stride) : (const void *)(rtab + (r) * stride))
    const int corrected = corr_l != NULL || corr_r != NULL;
    uint64_t rng = seed | 1u;
    const int64_t u = uniform, width = (batch_negs ? chunk : 1) + u; /* candidates (rows combined) per row */
    const int64_t block = batch_negs ? chunk * chunk : chunk;
    const int64_t widest = (batch_negs ? chunk * chunk : 0) > chunk * u ? chunk * chunk : chunk * u;
    const size_t staged = bf16 ? (size_t)(2 * (chunk + u) * dim) : 0; /* the chunk's rows widened */
    const size_t factors = (size_t)(2 * (chunk + u)); /* fl, fr below */
    const size_t floats = staged + factors
                          + (size_t)(2 * (chunk + u) * dim + 3 * block + 4 * chunk * u + 3 * width + 2 * chunk
                                     + 2 * chunk * (batch_negs ? chunk : 0) + 2 * chunk * u + widest + 2 * chunk);
    float *scratch = malloc(floats * sizeof(float));
    const float **ptr = malloc((size_t)(2 * (chunk + u) + 2 * width) * sizeof(float *));
    int64_t *ids = malloc((size_t)width * sizeof(int64_t));
    if (!scratch || !ptr || !ids) {
        free(scratch), free(ptr), free(ids);
        return -1.0;
    }
    float *stage_l = scratch, *stage_r = scratch + (bf16 ? (chunk + u) * dim : 0);
    float *fl = scratch + staged;     /* (m + u) e^-correction of lhs_0.., lneg_0.. (softmax with corrections) */
    float *fr = fl + chunk + u;       /* (m + u) the same of rhs_0.., rneg_0.. */
    float *d_l = fr + chunk + u;      /* (m, dim) gradient of each lhs occurrence */
    float *d_r = d_l + chunk * dim;   /* (m, dim) rhs occurrences */
    float *d_ln = d_r + chunk * dim;  /* (u, dim) lhs negatives */
    float *d_rn = d_ln + u * dim;     /* (u, dim) rhs negatives */
    float *b = d_rn + u * dim;        /* (m, m) scores lhs_i . rhs_j; without batch negatives (m,) the positives */
    float *gb = b + block;            /* the same shape: dL/dB */
    float *gbt = gb + block;          /* dL/dB transposed */
    float *ur = gbt + block;          /* (m, u) lhs_i . rneg_k, then dL/d(that) */
    float *ul = ur + chunk * u;       /* (m, u) rhs_i . lneg_k, then dL/d(that) */
    float *urt = ul + chunk * u;      /* (u, m) dL/d ur transposed */
    float *ult = urt + chunk * u;     /* (u, m) dL/d ul transposed */
    float *row = ult + chunk * u;     /* (width) one query's candidate scores, then their gradients */
    float *keep = row + width;        /* (width) 1 for a negative of the query, 0 for its own end */
    float *coef = keep + width;       /* (width) the coefficients of one combined gradient */
    float *pos_grad = coef + width;   /* (m) dL/d(positive score), both directions */
    float *pos = pos_grad + chunk;    /* (m) the positive scores */
    float *kr = pos + chunk;          /* (m, w) 1 where rhs_j is a negative of the query lhs_i (rhs_j != rhs_i) */
    float *kl = kr + (batch_negs ? chunk * chunk : 0); /* (m, w) lhs_j != lhs_i */
    float *kur = kl + (batch_negs ? chunk * chunk : 0); /* (m, u) rneg_k != rhs_i */
    float *kul = kur + chunk * u;     /* (m, u) lneg_k != lhs_i */
    float *work = kul + chunk * u;    /* chunk_losses' scratch */
    const float **lp = ptr, **rp = ptr + chunk + u; /* rows: lhs_0.., lneg_0.. / rhs_0.., rneg_0.. */
    const float **cand = ptr + 2 * (chunk + u);    /* (width) the rows combined into one gradient */
    double total = 0.0;
    for (int64_t first = 0, c = 0; first < n; first += chunk, c++) {
        const int64_t m = first + chunk < n ? chunk : n - first;
        const int64_t w = batch_negs ? m : 0; /* batch candidates per query */
        const int64_t *ln = lneg + c * u, *rn = rneg + c * u;
        const int64_t *li = lhs + first * id_stride, *ri = rhs + first * id_stride;
        if (bf16) {
            for (int64_t i = 0; i < m; i++) {
                widen_row(stage_l + i * dim, lhalf + li[i * id_stride] * stride, dim);
                widen_row(stage_r + i * dim, rhalf + ri[i * id_stride] * stride, dim);
            }
            for (int64_t k = 0; k < u; k++) {
                widen_row(stage_l + (m + k) * dim, lhalf + ln[k] * stride, dim);
                widen_row(stage_r + (m + k) * dim, rhalf + rn[k] * stride, dim);
            }
            for (int64_t i = 0; i < m + u; i++) {
                lp[i] = stage_l + i * dim;
                rp[i] = stage_r + i * dim;
            }
        } else {
            for (int64_t i = 0; i < m; i++) {
                lp[i] = ltab + li[i * id_stride] * stride;
                rp[i] = rtab + ri[i * id_stride] * stride;
            }
            for (int64_t k = 0; k < u; k++) {
                lp[m + k] = ltab + ln[k] * stride;
                rp[m + k] = rtab + rn[k] * stride;
            }
        }
        /* the next chunk's rows are read from memory while this one computes (they are random rows
         * of tables larger than the caches: waiting for them would take most of the time) */
        if (first + chunk < n) {
            const int64_t next = first + chunk < n - chunk ? chunk : n - first - chunk;
            for (int64_t i = 0; i < next; i++) {
                prefetch_row(LROW(li[(chunk + i) * id_stride]), row_bytes);
                prefetch_row(RROW(ri[(chunk + i) * id_stride]), row_bytes);
            }
            for (int64_t k = 0; k < u; k++) {
                prefetch_row(LROW(ln[u + k]), row_bytes);
                prefetch_row(RROW(rn[u + k]), row_bytes);
            }
        }
        /* scores: B (or its diagonal), lhs_i against the rhs negatives, rhs_i against the lhs negatives */
        for (int64_t i = 0; i < m; i++) {
            if (batch_negs)
                dots(lp[i], rp, m, dim, b + i * m);
            else
                dots(lp[i], rp + i, 1, dim, b + i);
            dots(lp[i], rp + m, u, dim, ur + i * u);
            dots(rp[i], lp + m, u, dim, ul + i * u);
        }
#define DIAG(i) (batch_negs ? (i) * m + (i) : (i))
        for (int64_t i = 0; i < m; i++) {
            pos[i] = b[DIAG(i)];
            const int64_t own_r = ri[i * id_stride], own_l = li[i * id_stride];
            for (int64_t j = 0; j < w; j++) {
                kr[i * w + j] = ri[j * id_stride] != own_r ? 1.0f : 0.0f;
                kl[i * w + j] = li[j * id_stride] != own_l ? 1.0f : 0.0f;
            }
            for (int64_t k = 0; k < u; k++) {
                kur[i * u + k] = rn[k] != own_r ? 1.0f : 0.0f;
                kul[i * u + k] = ln[k] != own_l ? 1.0f : 0.0f;
            }
        }
        /* softmax with corrections, one shift for the chunk: each candidate's mask times its e^-correction */
        const int shared_shift = kind == LOSS_SOFTMAX || (kind == LOSS_LOGISTIC && !corrected);
        if (corrected && shared_shift) {
            for (int64_t i = 0; i < m; i++) {
                fl[i] = corr_l ? expf(-corr_l[li[i * id_stride]]) : 1.0f;
                fr[i] = corr_r ? expf(-corr_r[ri[i * id_stride]]) : 1.0f;
            }
            for (int64_t k = 0; k < u; k++) {
                fl[m + k] = corr_l ? expf(-corr_l[ln[k]]) : 1.0f;
                fr[m + k] = corr_r ? expf(-corr_r[rn[k]]) : 1.0f;
            }
            for (int64_t i = 0; i < m; i++) {
                for (int64_t j = 0; j < w; j++) {
                    kr[i * w + j] *= fr[j];
                    kl[i * w + j] *= fl[i]; /* column j of B, the query rhs_j: candidate lhs_i */
                }
                for (int64_t k = 0; k < u; k++) {
                    kur[i * u + k] *= fr[m + k];
                    kul[i * u + k] *= fl[m + k];
                }
            }
        }
        float *grad_b = b; /* where dL/dB ends up */
        double loss = -1.0;
        if (shared_shift) {
            if (kind == LOSS_SOFTMAX) { /* kept for row_loss, should one shift not do */
                memcpy(gb, b, (size_t)(m * w) * sizeof(float));
                memcpy(urt, ur, (size_t)(m * u) * sizeof(float));
                memcpy(ult, ul, (size_t)(m * u) * sizeof(float));
                memcpy(pos_grad, pos, (size_t)m * sizeof(float));
            }
            loss = chunk_losses((int)kind, m, w, u, b, ur, ul, pos, kr, kl, kur, kul, corrected ? fr : NULL,
                                corrected ? fl : NULL, work);
            if (loss < 0.0) {
                memcpy(b, gb, (size_t)(m * w) * sizeof(float));
                memcpy(ur, urt, (size_t)(m * u) * sizeof(float));
                memcpy(ul, ult, (size_t)(m * u) * sizeof(float));
            } else {
                memcpy(pos_grad, pos, (size_t)m * sizeof(float));
            }
        }
        if (loss < 0.0) { /* one query at a time */
            loss = 0.0;
            grad_b = gb;
            /* rhs direction, query lhs_i: candidates rhs_j (row i of B) and the rhs negatives */
            for (int64_t j = 0; j < w; j++)
                ids[j] = ri[j * id_stride];
            for (int64_t k = 0; k < u; k++)
                ids[w + k] = rn[k];
            for (int64_t i = 0; i < m; i++) {
                memcpy(row, b + i * w, (size_t)w * sizeof(float));
                memcpy(row + w, ur + i * u, (size_t)u * sizeof(float));
                float p = b[DIAG(i)];
                if (corr_r) {
                    for (int64_t j = 0; j < w + u; j++)
                        row[j] -= corr_r[ids[j]];
                    p -= corr_r[ri[i * id_stride]];
                }
                loss += row_loss((int)kind, margin, p, row, ids, w + u, ri[i * id_stride], keep, &pos_grad[i]);
                memcpy(gb + i * w, row, (size_t)w * sizeof(float));
                memcpy(ur + i * u, row + w, (size_t)u * sizeof(float));
            }
            /* lhs direction, query rhs_i: candidates lhs_j (column i of B) and the lhs negatives */
            for (int64_t j = 0; j < w; j++)
                ids[j] = li[j * id_stride];
            for (int64_t k = 0; k < u; k++)
                ids[w + k] = ln[k];
            for (int64_t i = 0; i < m; i++) {
                for (int64_t j = 0; j < w; j++)
                    row[j] = b[j * m + i];
                memcpy(row + w, ul + i * u, (size_t)u * sizeof(float));
                float dpos, p = b[DIAG(i)];
                if (corr_l) {
                    for (int64_t j = 0; j < w + u; j++)
                        row[j] -= corr_l[ids[j]];
                    p -= corr_l[li[i * id_stride]];
                }
                loss += row_loss((int)kind, margin, p, row, ids, w + u, li[i * id_stride], keep, &dpos);
                pos_grad[i] += dpos;
                for (int64_t j = 0; j < w; j++)
                    gb[j * m + i] += row[j];
                memcpy(ul + i * u, row + w, (size_t)u * sizeof(float));
            }
        }
        total += loss;
        if (batch_negs)
            for (int64_t i = 0; i < m; i++)
                grad_b[i * m + i] += pos_grad[i]; /* the positive is B's diagonal */
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < w; j++)
                gbt[j * m + i] = grad_b[i * m + j];
        for (int64_t i = 0; i < m; i++)
            for (int64_t k = 0; k < u; k++) {
                urt[k * m + i] = ur[i * u + k];
                ult[k * m + i] = ul[i * u + k];
            }
        /* the rows' gradients: dL/dlhs_i = sum_j G_ij rhs_j + sum_k Ur_ik rneg_k, and so on */
        for (int64_t i = 0; i < m; i++) {
            if (batch_negs) {
                memcpy(coef, grad_b + i * m, (size_t)m * sizeof(float));
                memcpy(coef + m, ur + i * u, (size_t)u * sizeof(float));
                combine(d_l + i * dim, coef, rp, m + u, dim);
                memcpy(coef, gbt + i * m, (size_t)m * sizeof(float));
                memcpy(coef + m, ul + i * u, (size_t)u * sizeof(float));
                combine(d_r + i * dim, coef, lp, m + u, dim);
            } else { /* only the positive and the negatives */
                coef[0] = pos_grad[i];
                memcpy(coef + 1, ur + i * u, (size_t)u * sizeof(float));
                cand[0] = rp[i];
                memcpy(cand + 1, rp + m, (size_t)u * sizeof(float *));
                combine(d_l + i * dim, coef, cand, 1 + u, dim);
                memcpy(coef + 1, ul + i * u, (size_t)u * sizeof(float));
                cand[0] = lp[i];
                memcpy(cand + 1, lp + m, (size_t)u * sizeof(float *));
                combine(d_r + i * dim, coef, cand, 1 + u, dim);
            }
        }
        for (int64_t k = 0; k < u; k++) {
            combine(d_rn + k * dim, urt + k * m, lp, m, dim);
            combine(d_ln + k * dim, ult + k * m, rp, m, dim);
        }
        /* one Adagrad step per occurrence: lhs, rhs, lhs negatives, rhs negatives */
        if (bf16) {
            for (int64_t i = 0; i < m; i++)
                adagrad_row_bf16(lhalf, stride, lstate, li[i * id_stride], d_l + i * dim, dim, lr, &rng);
            for (int64_t i = 0; i < m; i++)
                adagrad_row_bf16(rhalf, stride, rstate, ri[i * id_stride], d_r + i * dim, dim, lr, &rng);
            for (int64_t k = 0; k < u; k++)
                adagrad_row_bf16(lhalf, stride, lstate, ln[k], d_ln + k * dim, dim, lr, &rng);
            for (int64_t k = 0; k < u; k++)
                adagrad_row_bf16(rhalf, stride, rstate, rn[k], d_rn + k * dim, dim, lr, &rng);
        } else {
            for (int64_t i = 0; i < m; i++)
                adagrad_row(ltab, stride, lstate, li[i * id_stride], d_l + i * dim, dim, lr);
            for (int64_t i = 0; i < m; i++)
                adagrad_row(rtab, stride, rstate, ri[i * id_stride], d_r + i * dim, dim, lr);
            for (int64_t k = 0; k < u; k++)
                adagrad_row(ltab, stride, lstate, ln[k], d_ln + k * dim, dim, lr);
            for (int64_t k = 0; k < u; k++)
                adagrad_row(rtab, stride, rstate, rn[k], d_rn + k * dim, dim, lr);
        }
#undef DIAG
    }
#undef LROW
#undef RROW
    free(scratch), free(ptr), free(ids);
    return total;
}

VECTOR_CLONES
double dot_step_f32(float *ltab, float *lstate, float *rtab, float *rstate, int64_t stride, int64_t dim,
                    const int64_t *lhs, const int64_t *rhs, int64_t id_stride, int64_t n, int64_t chunk,
                    int64_t batch_negs, const int64_t *lneg, const int64_t *rneg, int64_t uniform, int64_t kind,
                    float margin, float lr, const float *corr_l, const float *corr_r) {
    return dot_step(ltab, lstate, rtab, rstate, stride, dim, lhs, rhs, id_stride, n, chunk, batch_negs, lneg, rneg,
                    uniform, kind, margin, lr, corr_l, corr_r, 0, 0);
}

/* The same step on bfloat16 tables (float32 Adagrad state). */
VECTOR_CLONES
double dot_step_bf16(uint16_t *ltab, float *lstate, uint16_t *rtab, float *rstate, int64_t stride, int64_t dim,
                     const int64_t *lhs, const int64_t *rhs, int64_t id_stride, int64_t n, int64_t chunk,
                     int64_t batch_negs, const int64_t *lneg, const int64_t *rneg, int64_t uniform, int64_t kind,
                     float margin, float lr, const float *corr_l, const float *corr_r, uint64_t seed) {
    return dot_step(ltab, lstate, rtab, rstate, stride, dim, lhs, rhs, id_stride, n, chunk, batch_negs, lneg, rneg,
                    uniform, kind, margin, lr, corr_l, corr_r, 1, seed);
}

/* ------------------------------------------------------------------------------------------------
 * Import: the id dictionary (shardgraph/data/dictionary.py) as an open-addressing hash table of 128-bit
 * keys (two 64-bit hashes of the id string) -> dense ids. Slots: first[cap], second[cap], id[cap]
 * (uint32, EMPTY_ID where free); cap a power of two; linear probing from first & (cap - 1) (the halves
 * are already avalanched). Two keys are one only when both halves are equal. One probe per id instead of
 * a sort and a binary search per level of sorted arrays: the import of 30M edges spent 40 s of 70 there. */
#define EMPTY_ID 0xffffffffu

static inline int64_t idmap_slot(const uint64_t *first, const uint64_t *second, const uint32_t *ids, int64_t mask,
                                 uint64_t f, uint64_t s) {
    int64_t slot = (int64_t)(f & (uint64_t)mask);
    while (ids[slot] != EMPTY_ID && (first[slot] != f || second[slot] != s))
        slot = (slot + 1) & mask;
    return slot;
}

/* For each of the n keys (f[i], s[i]): out[i] = its id, or -1 when absent and not `insert`. With `insert`
 * an absent key gets the id next_id, next_id + 1, ... in order of first appearance, and its row goes to
 * new_rows. The caller keeps the table under 3/4 full (count + n <= 3 cap / 4). Returns the new keys' count. */
int64_t idmap_lookup(uint64_t *first, uint64_t *second, uint32_t *ids, int64_t cap, const uint64_t *f,
                     const uint64_t *s, int64_t n, int64_t insert, int64_t next_id, int64_t *out,
                     int64_t *new_rows) {
    const int64_t mask = cap - 1, ahead = 16;
    int64_t added = 0;
    for (int64_t i = 0; i < n; i++) {
        if (i + ahead < n) { /* random slots of a table larger than the caches: fetch them early */
            const int64_t later = (int64_t)(f[i + ahead] & (uint64_t)mask);
            __builtin_prefetch(&ids[later]);
            __builtin_prefetch(&first[later]);
        }
        const int64_t slot = idmap_slot(first, second, ids, mask, f[i], s[i]);
        if (ids[slot] != EMPTY_ID) {
            out[i] = ids[slot];
        } else if (insert) {
            first[slot] = f[i], second[slot] = s[i];
            ids[slot] = (uint32_t)(next_id + added);
            out[i] = next_id + added;
            new_rows[added++] = i;
        } else {
            out[i] = -1;
        }
    }
    return added;
}

/* Move every key of one table into another, larger (empty) one. */
void idmap_rehash(const uint64_t *first, const uint64_t *second, const uint32_t *ids, int64_t cap,
                  uint64_t *to_first, uint64_t *to_second, uint32_t *to_ids, int64_t to_cap) {
    for (int64_t i = 0; i < cap; i++) {
        if (ids[i] == EMPTY_ID)
            continue;
        const int64_t slot = idmap_slot(to_first, to_second, to_ids, to_cap - 1, first[i], second[i]);
        to_first[slot] = first[i], to_second[slot] = second[i], to_ids[slot] = ids[i];
    }
}

/* The two 64-bit hashes of each of n strings (bytes data[offsets[i] .. offsets[i + 1]), non-empty) that
 * shardgraph/data/dictionary.py computes with numpy, in one pass: per half, the sum over positions p of
 * tables[half][byte] * multiplier^p (mod 2^64), xor length * multiplier, then murmur3's finaliser. */
static inline uint64_t fmix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    h ^= h >> 33;
    return h;
}

void hash_strings_u64(const int64_t *offsets, const uint8_t *data, int64_t n, const uint64_t *tables,
                      uint64_t multiplier0, uint64_t multiplier1, uint64_t *out0, uint64_t *out1) {
    for (int64_t i = 0; i < n; i++) {
        const uint8_t *p = data + offsets[i];
        const int64_t length = offsets[i + 1] - offsets[i];
        uint64_t h0 = 0, h1 = 0, power0 = 1, power1 = 1;
        for (int64_t k = 0; k < length; k++) {
            h0 += tables[p[k]] * power0;
            h1 += tables[256 + p[k]] * power1;
            power0 *= multiplier0;
            power1 *= multiplier1;
        }
        out0[i] = fmix64(h0 ^ ((uint64_t)length * multiplier0));
        out1[i] = fmix64(h1 ^ ((uint64_t)length * multiplier1));
    }
}
