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

/* For each occurrence i: state[row] += mean(grad[i]^2); table[row] -= lr / sqrt(state[row]) * grad[i].
 * A row met several times is updated once per occurrence, as consecutive steps.
 * Rows with an all-zero gradient are left unchanged. */
void rowwise_adagrad_f32(float *table, int64_t table_stride, float *state, const int64_t *index,
                         int64_t index_stride, const float *grad, int64_t n, int64_t dim, float lr) {
    for (int64_t i = 0; i < n; i++) {
        const int64_t row = index[i * index_stride];
        const float *g = grad + i * dim;
        float square = 0.0f;
        for (int64_t j = 0; j < dim; j++)
            square += g[j] * g[j];
        if (square == 0.0f)
            continue;
        state[row] += square / (float)dim;
        const float scale = lr / (sqrtf(state[row]) + 1e-10f);
        float *t = table + row * table_stride;
        for (int64_t j = 0; j < dim; j++)
            t[j] -= scale * g[j];
    }
}
