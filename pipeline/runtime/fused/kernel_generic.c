/* One time step in plain C: the variant every CPU runs (scalar, a libm fmaf per multiply-add; slower
 * than onnxruntime's graph, so used only when asked for by name, and by the tests).
 *
 * Owns: gru_step_generic (linear_before_reset=1) and gru_step0_generic (linear_before_reset=0, two
 * phases). Includes gru_kernel.h, ort_activations.h. Reads the packed cell, x and hA; writes hB,
 * sum and the phase planes it is given.
 */
#include "gru_kernel.h"
#include "ort_activations.h"

/* One time step t of one direction, `rows` rows, every hidden unit: hA (rows, Hp) -> hB, sum += hB
 * when avg. m: the cell. */
void gru_step_generic(const gru_cell *m, const float *x, long T, long t, int rows, const float *hA, float *hB,
                      float *sum, int avg) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    for (int i = 0; i < rows; i++) {
        const float *xt = x + ((size_t)i * T + t) * F;
        const float *hp = hA + (size_t)i * Hp;
        float *hn = hB + (size_t)i * Hp;
        for (int j = 0; j < Hp; j++) {
            const float *w = m->wpack + ((size_t)(j / TILE) * K) * 3 * TILE + (j % TILE);
            float xz = 0, xr = 0, xn = 0, hz = 0, hr = 0, hh = 0;
            for (int k = 0; k < F; k++) {
                const float *wk = w + (size_t)k * 3 * TILE;
                xz = fmaf(xt[k], wk[0], xz); xr = fmaf(xt[k], wk[TILE], xr); xn = fmaf(xt[k], wk[2 * TILE], xn);
            }
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

/* linear_before_reset=0: phase 1 stores z, x.Wn and r * h of every unit (zb, xnb, rh: (rows, Hp)),
 * phase 2 computes n = tanh(((r * h).Rn + x.Wn) + (Wbn + Rbn)) and h'. */
void gru_step0_generic(const gru_cell *m, const float *x, long T, long t, int rows, const float *hA, float *hB,
                       float *sum, int avg, float *zb, float *xnb, float *rh) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    for (int i = 0; i < rows; i++) {
        const float *xt = x + ((size_t)i * T + t) * F;
        const float *hp = hA + (size_t)i * Hp;
        for (int j = 0; j < Hp; j++) {
            const float *w = m->wpack + ((size_t)(j / TILE) * K) * 3 * TILE + (j % TILE);
            float xz = 0, xr = 0, xn = 0, hz = 0, hr = 0;
            for (int k = 0; k < F; k++) {
                const float *wk = w + (size_t)k * 3 * TILE;
                xz = fmaf(xt[k], wk[0], xz); xr = fmaf(xt[k], wk[TILE], xr); xn = fmaf(xt[k], wk[2 * TILE], xn);
            }
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
