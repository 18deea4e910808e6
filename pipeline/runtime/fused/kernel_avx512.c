/* One time step with AVX-512 (avx512f/dq/bw/vl + FMA): 16 hidden units per zmm, up to 6 rows x 4
 * column tiles of accumulators at once.
 *
 * Owns: gru_step_avx512 (linear_before_reset=1) and gru_step0_avx512 (linear_before_reset=0, two
 * phases), and their folded forms gru_stepx_avx512 / gru_stepx0_avx512 (x.W read from the cell's
 * token table at each row's id). Every function carries its target attributes (T512, I512): the file builds with the
 * project's common flags and runs only where gru_isa_supported(ISA_AVX512) says so. Includes
 * gru_kernel.h, ort_activations.h, immintrin.h (x86 only; elsewhere the file is empty). Reads the
 * packed cell, x and hA; writes hB, sum and the phase planes it is given.
 */
#include "gru_kernel.h"

#if GRU_X86
#include <immintrin.h>

#include "ort_activations.h"

#define T512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#define I512 static inline __attribute__((always_inline, target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))

ORT_ACTIVATIONS(I512, __m512, _mm512_, 512)

/* M rows x J column tiles of one step: 4 accumulators (z, r, x_n, h_n) per row and tile. x (M, T, F), or
 * ids (M, T) (folded; x unused). */
I512 void tile512(const gru_cell *m, int M, int J, int j0, const float *x, const int32_t *ids, long T, long t,
                  const float *hA, float *hB, float *sum, int avg) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    __m512 az[6][4], ar[6][4], axn[6][4], ahn[6][4];
    __m512 xz[6][4], xr[6][4];  /* x.Wz, x.Wr: kept apart from h.R (stack; 2 stores, 2 loads per tile) */
#pragma GCC unroll 4
    for (int j = 0; j < J; j++) {
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) { az[i][j] = ar[i][j] = axn[i][j] = _mm512_setzero_ps(); }
    }
    const float *w0 = m->wpack + (size_t)j0 * K * 3 * TILE;
    const size_t jstride = (size_t)K * 3 * TILE;
    if (ids) {  /* folded: the sums of each row's token, (vocab, Hp/16, 3, 16) */
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            const float *p = m->xw + (size_t)ids[(size_t)i * T + t] * 3 * Hp + (size_t)j0 * 3 * TILE;
#pragma GCC unroll 4
            for (int j = 0; j < J; j++) {
                az[i][j] = _mm512_load_ps(p + j * 3 * TILE);
                ar[i][j] = _mm512_load_ps(p + j * 3 * TILE + TILE);
                axn[i][j] = _mm512_load_ps(p + j * 3 * TILE + 2 * TILE);
            }
        }
    } else
        for (int k = 0; k < F; k++) {
            const float *wk = w0 + (size_t)k * 3 * TILE;
            __m512 xv[6];
#pragma GCC unroll 6
            for (int i = 0; i < M; i++) xv[i] = _mm512_set1_ps(x[((size_t)i * T + t) * F + k]);
#pragma GCC unroll 4
            for (int j = 0; j < J; j++) {
                __m512 wz = _mm512_load_ps(wk + j * jstride), wr = _mm512_load_ps(wk + j * jstride + TILE);
                __m512 wn = _mm512_load_ps(wk + j * jstride + 2 * TILE);
#pragma GCC unroll 6
                for (int i = 0; i < M; i++) {
                    az[i][j] = _mm512_fmadd_ps(xv[i], wz, az[i][j]);
                    ar[i][j] = _mm512_fmadd_ps(xv[i], wr, ar[i][j]);
                    axn[i][j] = _mm512_fmadd_ps(xv[i], wn, axn[i][j]);
                }
            }
        }
#pragma GCC unroll 4
    for (int j = 0; j < J; j++) {
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            xz[i][j] = az[i][j]; xr[i][j] = ar[i][j];
            az[i][j] = ar[i][j] = ahn[i][j] = _mm512_setzero_ps();
        }
    }
    for (int k = 0; k < H; k++) {
        const float *wk = w0 + (size_t)(F + k) * 3 * TILE;
        __m512 hv[6];
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) hv[i] = _mm512_set1_ps(hA[(size_t)i * Hp + k]);
#pragma GCC unroll 4
        for (int j = 0; j < J; j++) {
            __m512 wz = _mm512_load_ps(wk + j * jstride), wr = _mm512_load_ps(wk + j * jstride + TILE);
            __m512 wn = _mm512_load_ps(wk + j * jstride + 2 * TILE);
#pragma GCC unroll 6
            for (int i = 0; i < M; i++) {
                az[i][j] = _mm512_fmadd_ps(hv[i], wz, az[i][j]);
                ar[i][j] = _mm512_fmadd_ps(hv[i], wr, ar[i][j]);
                ahn[i][j] = _mm512_fmadd_ps(hv[i], wn, ahn[i][j]);
            }
        }
    }
    __m512 one = _mm512_set1_ps(1.0f);
#pragma GCC unroll 4
    for (int j = 0; j < J; j++) {
        const int c = (j0 + j) * TILE;
        __m512 bz = _mm512_load_ps(m->bz + c), br = _mm512_load_ps(m->br + c);
        __m512 bxn = _mm512_load_ps(m->bxn + c), bhn = _mm512_load_ps(m->bhn + c);
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            __m512 z = logistic512(_mm512_add_ps(_mm512_add_ps(az[i][j], xz[i][j]), bz));
            __m512 rl = reset512(_mm512_add_ps(_mm512_add_ps(ar[i][j], xr[i][j]), br), _mm512_add_ps(ahn[i][j], bhn));
            __m512 n = tanh512(_mm512_add_ps(_mm512_add_ps(axn[i][j], rl), bxn));
            __m512 hold = _mm512_load_ps(hA + (size_t)i * Hp + c);
            __m512 hnew = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(one, z), n), _mm512_mul_ps(z, hold));
            _mm512_store_ps(hB + (size_t)i * Hp + c, hnew);
            if (avg) {
                float *s = sum + (size_t)i * Hp + c;
                _mm512_store_ps(s, _mm512_add_ps(_mm512_load_ps(s), hnew));
            }
        }
    }
}

/* x or ids of the rows from i0 on */
#define XI0 (x ? x + (size_t)i0 * T * F : NULL), (ids ? ids + (size_t)i0 * T : NULL)
#define TILE512(M_, J_) tile512(m, M_, J_, jt, XI0, T, t, hA + (size_t)i0 * Hp, \
                                 hB + (size_t)i0 * Hp, sum + (size_t)i0 * Hp, avg)

/* One time step of one or two rows: several column tiles at once, for independent FMA chains. */
I512 void small512(const gru_cell *m, const float *x, const int32_t *ids, long T, long t, int rows,
                   const float *hA, float *hB, float *sum, int avg) {
    const int Hp = m->Hp, F = m->F, NJ = Hp / TILE;
    for (int jt = 0; jt < NJ;) {
        int i0 = 0, left = NJ - jt;
        if (rows == 1) {
            if (left >= 4) { TILE512(1, 4); jt += 4; }
            else if (left >= 2) { TILE512(1, 2); jt += 2; }
            else { TILE512(1, 1); jt += 1; }
        } else {
            if (left >= 2) { TILE512(2, 2); jt += 2; }
            else { TILE512(2, 1); jt += 1; }
        }
    }
}

/* noinline: inlined into gru_step_avx512, their accumulators spill to the stack (twice the time). */
T512 __attribute__((noinline)) static void step_small512(const gru_cell *m, const float *x, long T, long t, int rows,
                                                        const float *hA, float *hB, float *sum, int avg) {
    small512(m, x, NULL, T, t, rows, hA, hB, sum, avg);
}
T512 __attribute__((noinline)) static void stepx_small512(const gru_cell *m, const int32_t *ids, long T, long t,
                                                         int rows, const float *hA, float *hB, float *sum, int avg) {
    small512(m, NULL, ids, T, t, rows, hA, hB, sum, avg);
}

/* One time step, all hidden units of `rows` rows: up to 6 rows of one column tile together. x (rows, T, F),
 * or ids (rows, T) (folded). */
I512 void step512(const gru_cell *m, const float *x, const int32_t *ids, long T, long t, int rows,
                  const float *hA, float *hB, float *sum, int avg) {
    const int Hp = m->Hp, F = m->F, NJ = Hp / TILE;
    if (rows <= 2) {
        if (ids) stepx_small512(m, ids, T, t, rows, hA, hB, sum, avg);
        else step_small512(m, x, T, t, rows, hA, hB, sum, avg);
        return;
    }
    for (int jt = 0; jt < NJ; jt++) {
        int i0 = 0;
        for (; i0 + 6 <= rows; i0 += 6) TILE512(6, 1);
        switch (rows - i0) {
            case 5: TILE512(5, 1); break;
            case 4: TILE512(4, 1); break;
            case 3: TILE512(3, 1); break;
            case 2: TILE512(2, 1); break;
            case 1: TILE512(1, 1); break;
            default: break;
        }
    }
}

T512 void gru_step_avx512(GRU_STEP_ARGS) { step512(c, x, NULL, T, t, rows, hA, hB, sum, avg); }
T512 void gru_stepx_avx512(GRU_STEPX_ARGS) {
    gru_xw_prefetch(c, ids, T, t, rows);
    step512(c, NULL, ids, T, t, rows, hA, hB, sum, avg);
}

/* linear_before_reset=0, phase 1, M rows x the 16 units at column c: z, x.Wn and r * h. */
I512 void tile512_zr(const gru_cell *m, int M, int c, const float *x, const int32_t *ids, long T, long t,
                     const float *hA, float *zb, float *xnb, float *rh) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    __m512 az[6], ar[6], axn[6], xz[6], xr[6];
#pragma GCC unroll 6
    for (int i = 0; i < M; i++) { az[i] = ar[i] = axn[i] = _mm512_setzero_ps(); }
    const float *w0 = m->wpack + (size_t)(c / TILE) * K * 3 * TILE;
    if (ids) {  /* folded: the sums of each row's token, (vocab, Hp/16, 3, 16) */
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            const float *p = m->xw + (size_t)ids[(size_t)i * T + t] * 3 * Hp + (size_t)(c / TILE) * 3 * TILE;
            az[i] = _mm512_load_ps(p); ar[i] = _mm512_load_ps(p + TILE); axn[i] = _mm512_load_ps(p + 2 * TILE);
        }
    } else
        for (int k = 0; k < F; k++) {
            const float *wk = w0 + (size_t)k * 3 * TILE;
            __m512 wz = _mm512_load_ps(wk), wr = _mm512_load_ps(wk + TILE), wn = _mm512_load_ps(wk + 2 * TILE);
#pragma GCC unroll 6
            for (int i = 0; i < M; i++) {
                __m512 xv = _mm512_set1_ps(x[((size_t)i * T + t) * F + k]);
                az[i] = _mm512_fmadd_ps(xv, wz, az[i]);
                ar[i] = _mm512_fmadd_ps(xv, wr, ar[i]);
                axn[i] = _mm512_fmadd_ps(xv, wn, axn[i]);
            }
        }
#pragma GCC unroll 6
    for (int i = 0; i < M; i++) {
        _mm512_store_ps(xnb + (size_t)i * Hp + c, axn[i]);
        xz[i] = az[i]; xr[i] = ar[i]; az[i] = ar[i] = _mm512_setzero_ps();
    }
    for (int k = 0; k < H; k++) {
        const float *wk = w0 + (size_t)(F + k) * 3 * TILE;
        __m512 wz = _mm512_load_ps(wk), wr = _mm512_load_ps(wk + TILE);
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) {
            __m512 hv = _mm512_set1_ps(hA[(size_t)i * Hp + k]);
            az[i] = _mm512_fmadd_ps(hv, wz, az[i]);
            ar[i] = _mm512_fmadd_ps(hv, wr, ar[i]);
        }
    }
    __m512 bz = _mm512_load_ps(m->bz + c), br = _mm512_load_ps(m->br + c);
#pragma GCC unroll 6
    for (int i = 0; i < M; i++) {
        const size_t o = (size_t)i * Hp + c;
        _mm512_store_ps(zb + o, logistic512(_mm512_add_ps(_mm512_add_ps(az[i], xz[i]), bz)));
        _mm512_store_ps(rh + o, reset512(_mm512_add_ps(_mm512_add_ps(ar[i], xr[i]), br), _mm512_load_ps(hA + o)));
    }
}

/* linear_before_reset=0, phase 2, M rows x the 16 units at column c: n and h'. */
I512 void tile512_n(const gru_cell *m, int M, int c, const float *hA, float *hB, float *sum, int avg,
                    const float *zb, const float *xnb, const float *rh) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    __m512 acc[6];
#pragma GCC unroll 6
    for (int i = 0; i < M; i++) acc[i] = _mm512_setzero_ps();
    const float *w0 = m->wpack + (size_t)(c / TILE) * K * 3 * TILE + 2 * TILE;
    for (int k = 0; k < H; k++) {
        __m512 wn = _mm512_load_ps(w0 + (size_t)(F + k) * 3 * TILE);
#pragma GCC unroll 6
        for (int i = 0; i < M; i++) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(rh[(size_t)i * Hp + k]), wn, acc[i]);
    }
    __m512 one = _mm512_set1_ps(1.0f), bn = _mm512_load_ps(m->bxn + c);
#pragma GCC unroll 6
    for (int i = 0; i < M; i++) {
        const size_t o = (size_t)i * Hp + c;
        __m512 n = tanh512(_mm512_add_ps(_mm512_add_ps(acc[i], _mm512_load_ps(xnb + o)), bn));
        __m512 z = _mm512_load_ps(zb + o);
        __m512 hnew = _mm512_add_ps(_mm512_mul_ps(_mm512_sub_ps(one, z), n), _mm512_mul_ps(z, _mm512_load_ps(hA + o)));
        _mm512_store_ps(hB + o, hnew);
        if (avg) _mm512_store_ps(sum + o, _mm512_add_ps(_mm512_load_ps(sum + o), hnew));
    }
}

#define ROWS_IN_SIXES(CALL)                                              \
    do {                                                                 \
        int i0 = 0;                                                      \
        for (; i0 + 6 <= rows; i0 += 6) CALL(6);                         \
        switch (rows - i0) {                                             \
            case 5: CALL(5); break;                                      \
            case 4: CALL(4); break;                                      \
            case 3: CALL(3); break;                                      \
            case 2: CALL(2); break;                                      \
            case 1: CALL(1); break;                                      \
            default: break;                                              \
        }                                                                \
    } while (0)
#define ZR512(M_) tile512_zr(m, M_, c, XI0, T, t, hA + (size_t)i0 * Hp, zb + (size_t)i0 * Hp, \
                             xnb + (size_t)i0 * Hp, rh + (size_t)i0 * Hp)
#define N512(M_) tile512_n(m, M_, c, hA + (size_t)i0 * Hp, hB + (size_t)i0 * Hp, sum + (size_t)i0 * Hp, avg, \
                           zb + (size_t)i0 * Hp, xnb + (size_t)i0 * Hp, rh + (size_t)i0 * Hp)

I512 void step0_512(const gru_cell *m, const float *x, const int32_t *ids, long T, long t, int rows,
                    const float *hA, float *hB, float *sum, int avg, float *zb, float *xnb, float *rh) {
    const int Hp = m->Hp, F = m->F;
    for (int c = 0; c < Hp; c += TILE) ROWS_IN_SIXES(ZR512);
    for (int c = 0; c < Hp; c += TILE) ROWS_IN_SIXES(N512);
}

T512 void gru_step0_avx512(GRU_STEP0_ARGS) { step0_512(c, x, NULL, T, t, rows, hA, hB, sum, avg, zb, xnb, rh); }
T512 void gru_stepx0_avx512(GRU_STEPX0_ARGS) {
    gru_xw_prefetch(c, ids, T, t, rows);
    step0_512(c, NULL, ids, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
}
#endif /* GRU_X86 */
