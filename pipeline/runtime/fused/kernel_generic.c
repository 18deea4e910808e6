/* One time step in plain C: the variant every CPU runs (scalar, a libm fmaf per multiply-add; slower
 * than onnxruntime's graph, so used only when asked for by name, and by the tests).
 *
 * Owns: gru_step_generic (linear_before_reset=1) and gru_step0_generic (linear_before_reset=0, two
 * phases), and their folded forms gru_stepx_generic / gru_stepx0_generic (x.W read from the cell's
 * token table). Includes gru_kernel.h, ort_activations.h. Reads the packed cell, x (or the ids and
 * the table) and hA; writes hB, sum and the phase planes it is given.
 */
#include "gru_kernel.h"
#include "ort_activations.h"

/* x.Wz, x.Wr, x.Wn of unit j for row i at step t: summed from x, or (ids) read from the cell's token table */
static inline __attribute__((always_inline)) void x_sums(const gru_cell *m, const float *x, const int32_t *ids,
                                                         long T, long t, int i, int j, float *xz, float *xr,
                                                         float *xn) {
    const int F = m->F, K = F + m->H;
    if (ids) {  /* (vocab, Hp/16, 3, 16) */
        const float *p = m->xw + (size_t)ids[(size_t)i * T + t] * 3 * m->Hp + (size_t)(j / TILE) * 3 * TILE + (j % TILE);
        *xz = p[0]; *xr = p[TILE]; *xn = p[2 * TILE];
        return;
    }
    const float *xt = x + ((size_t)i * T + t) * F;
    const float *w = m->wpack + ((size_t)(j / TILE) * K) * 3 * TILE + (j % TILE);
    float az = 0, ar = 0, an = 0;
    for (int k = 0; k < F; k++) {
        const float *wk = w + (size_t)k * 3 * TILE;
        az = fmaf(xt[k], wk[0], az); ar = fmaf(xt[k], wk[TILE], ar); an = fmaf(xt[k], wk[2 * TILE], an);
    }
    *xz = az; *xr = ar; *xn = an;
}

/* One time step t of one direction, `rows` rows, every hidden unit: hA (rows, Hp) -> hB, sum += hB
 * when avg. m: the cell; x (rows, T, F), or ids (rows, T) for the folded form. */
static inline __attribute__((always_inline)) void step_body(const gru_cell *m, const float *x, const int32_t *ids,
                                                            long T, long t, int rows, const float *hA, float *hB,
                                                            float *sum, int avg) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    for (int i = 0; i < rows; i++) {
        const float *hp = hA + (size_t)i * Hp;
        float *hn = hB + (size_t)i * Hp;
        for (int j = 0; j < Hp; j++) {
            const float *w = m->wpack + ((size_t)(j / TILE) * K) * 3 * TILE + (j % TILE);
            float xz, xr, xn, hz = 0, hr = 0, hh = 0;
            x_sums(m, x, ids, T, t, i, j, &xz, &xr, &xn);
            for (int k = 0; k < H; k++) {
                const float *wk = w + (size_t)(F + k) * 3 * TILE;
                hz = fmaf(hp[k], wk[0], hz); hr = fmaf(hp[k], wk[TILE], hr); hh = fmaf(hp[k], wk[2 * TILE], hh);
            }
            float z = logistic1((hz + xz) + m->bz[j]);
            float nn = tanh1((xn + reset1((hr + xr) + m->br[j], hh + m->bhn[j])) + m->bxn[j]);
            float hv = (1.0f - z) * nn + z * hp[j];
            hn[j] = hv;
            if (avg) sum[(size_t)i * Hp + j] += hv;
        }
    }
}

void gru_step_generic(GRU_STEP_ARGS) { step_body(c, x, NULL, T, t, rows, hA, hB, sum, avg); }
void gru_stepx_generic(GRU_STEPX_ARGS) {
    gru_xw_prefetch(c, ids, T, t, rows);
    step_body(c, NULL, ids, T, t, rows, hA, hB, sum, avg);
}

/* linear_before_reset=0: phase 1 stores z, x.Wn and r * h of every unit (zb, xnb, rh: (rows, Hp)),
 * phase 2 computes n = tanh(((r * h).Rn + x.Wn) + (Wbn + Rbn)) and h'. */
static inline __attribute__((always_inline)) void step0_body(const gru_cell *m, const float *x, const int32_t *ids,
                                                             long T, long t, int rows, const float *hA, float *hB,
                                                             float *sum, int avg, float *zb, float *xnb, float *rh) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    for (int i = 0; i < rows; i++) {
        const float *hp = hA + (size_t)i * Hp;
        for (int j = 0; j < Hp; j++) {
            const float *w = m->wpack + ((size_t)(j / TILE) * K) * 3 * TILE + (j % TILE);
            float xz, xr, xn, hz = 0, hr = 0;
            x_sums(m, x, ids, T, t, i, j, &xz, &xr, &xn);
            for (int k = 0; k < H; k++) {
                const float *wk = w + (size_t)(F + k) * 3 * TILE;
                hz = fmaf(hp[k], wk[0], hz); hr = fmaf(hp[k], wk[TILE], hr);
            }
            const size_t o = (size_t)i * Hp + j;
            zb[o] = logistic1((hz + xz) + m->bz[j]);
            xnb[o] = xn;
            rh[o] = reset1((hr + xr) + m->br[j], hp[j]);
        }
    }
    for (int i = 0; i < rows; i++) {
        const float *hp = hA + (size_t)i * Hp, *rhi = rh + (size_t)i * Hp;
        for (int j = 0; j < Hp; j++) {
            const float *w = m->wpack + ((size_t)(j / TILE) * K) * 3 * TILE + (j % TILE) + 2 * TILE;
            float hh = 0;
            for (int k = 0; k < H; k++) hh = fmaf(rhi[k], w[(size_t)(F + k) * 3 * TILE], hh);
            const size_t o = (size_t)i * Hp + j;
            float nn = tanh1((hh + xnb[o]) + m->bxn[j]);
            float hv = (1.0f - zb[o]) * nn + zb[o] * hp[j];
            hB[o] = hv;
            if (avg) sum[o] += hv;
        }
    }
}

void gru_step0_generic(GRU_STEP0_ARGS) { step0_body(c, x, NULL, T, t, rows, hA, hB, sum, avg, zb, xnb, rh); }
void gru_stepx0_generic(GRU_STEPX0_ARGS) {
    gru_xw_prefetch(c, ids, T, t, rows);
    step0_body(c, NULL, ids, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
}
