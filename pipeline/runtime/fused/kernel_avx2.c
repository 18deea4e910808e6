/* One time step with AVX2 + FMA: each 16-wide column tile read as two 8-wide halves, up to 3 rows
 * of accumulators at once (12 of the 16 ymm registers).
 *
 * Owns: gru_step_avx2 (linear_before_reset=1) and gru_step0_avx2 (linear_before_reset=0, two
 * phases), and their folded forms gru_stepx_avx2 / gru_stepx0_avx2 (x.W read from the cell's token
 * table at each row's id). Every function carries its target attributes (T256, I256): the file builds with the
 * project's common flags and runs only where gru_isa_supported(ISA_AVX2) says so. Includes
 * gru_kernel.h, ort_activations.h, immintrin.h (x86 only; elsewhere the file is empty). Reads the
 * packed cell, x and hA; writes hB, sum and the phase planes it is given.
 */
#include "gru_kernel.h"

#if GRU_X86
#include <immintrin.h>

#include "ort_activations.h"

#define T256 __attribute__((target("avx2,fma")))
#define I256 static inline __attribute__((always_inline, target("avx2,fma")))

ORT_ACTIVATIONS(I256, __m256, _mm256_, 256)

/* M rows (<= 3) x one 8-wide half-tile: 12 accumulators of the 16 ymm registers. x (M, T, F), or ids
 * (M, T) (folded; x unused). */
I256 void tile256(const gru_cell *m, int M, int c, const float *x, const int32_t *ids, long T, long t,
                  const float *hA, float *hB, float *sum, int avg) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    __m256 az[3], ar[3], axn[3], ahn[3], xz[3], xr[3];
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) { az[i] = ar[i] = axn[i] = _mm256_setzero_ps(); }
    const float *w0 = m->wpack + (size_t)(c / TILE) * K * 3 * TILE + (c % TILE);
    if (ids) {  /* folded: the sums of each row's token, (vocab, Hp/16, 3, 16) */
        const float *xw = m->xw + (size_t)(c / TILE) * 3 * TILE + (c % TILE);
#pragma GCC unroll 3
        for (int i = 0; i < M; i++) {
            const float *p = xw + (size_t)ids[(size_t)i * T + t] * 3 * Hp;
            az[i] = _mm256_load_ps(p); ar[i] = _mm256_load_ps(p + TILE); axn[i] = _mm256_load_ps(p + 2 * TILE);
        }
    } else
        for (int k = 0; k < F; k++) {
            const float *wk = w0 + (size_t)k * 3 * TILE;
            __m256 wz = _mm256_load_ps(wk), wr = _mm256_load_ps(wk + TILE), wn = _mm256_load_ps(wk + 2 * TILE);
#pragma GCC unroll 3
            for (int i = 0; i < M; i++) {
                __m256 xv = _mm256_broadcast_ss(x + ((size_t)i * T + t) * F + k);
                az[i] = _mm256_fmadd_ps(xv, wz, az[i]);
                ar[i] = _mm256_fmadd_ps(xv, wr, ar[i]);
                axn[i] = _mm256_fmadd_ps(xv, wn, axn[i]);
            }
        }
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) { xz[i] = az[i]; xr[i] = ar[i]; az[i] = ar[i] = ahn[i] = _mm256_setzero_ps(); }
    for (int k = 0; k < H; k++) {
        const float *wk = w0 + (size_t)(F + k) * 3 * TILE;
        __m256 wz = _mm256_load_ps(wk), wr = _mm256_load_ps(wk + TILE), wn = _mm256_load_ps(wk + 2 * TILE);
#pragma GCC unroll 3
        for (int i = 0; i < M; i++) {
            __m256 hv = _mm256_broadcast_ss(hA + (size_t)i * Hp + k);
            az[i] = _mm256_fmadd_ps(hv, wz, az[i]);
            ar[i] = _mm256_fmadd_ps(hv, wr, ar[i]);
            ahn[i] = _mm256_fmadd_ps(hv, wn, ahn[i]);
        }
    }
    __m256 one = _mm256_set1_ps(1.0f);
    __m256 bz = _mm256_load_ps(m->bz + c), br = _mm256_load_ps(m->br + c);
    __m256 bxn = _mm256_load_ps(m->bxn + c), bhn = _mm256_load_ps(m->bhn + c);
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) {
        __m256 z = logistic256(_mm256_add_ps(_mm256_add_ps(az[i], xz[i]), bz));
        __m256 rl = reset256(_mm256_add_ps(_mm256_add_ps(ar[i], xr[i]), br), _mm256_add_ps(ahn[i], bhn));
        __m256 n = tanh256(_mm256_add_ps(_mm256_add_ps(axn[i], rl), bxn));
        __m256 hold = _mm256_load_ps(hA + (size_t)i * Hp + c);
        __m256 hnew = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(one, z), n), _mm256_mul_ps(z, hold));
        _mm256_store_ps(hB + (size_t)i * Hp + c, hnew);
        if (avg) {
            float *s = sum + (size_t)i * Hp + c;
            _mm256_store_ps(s, _mm256_add_ps(_mm256_load_ps(s), hnew));
        }
    }
}

/* x or ids of the rows from i0 on */
#define XI0 (x ? x + (size_t)i0 * T * F : NULL), (ids ? ids + (size_t)i0 * T : NULL)

/* One time step, all hidden units of `rows` rows: x (rows, T, F), or ids (rows, T) (folded). */
I256 void step256(const gru_cell *m, const float *x, const int32_t *ids, long T, long t, int rows,
                  const float *hA, float *hB, float *sum, int avg) {
    const int Hp = m->Hp, F = m->F;
    for (int c = 0; c < Hp; c += 8) {
        int i0 = 0;
        for (; i0 + 3 <= rows; i0 += 3)
            tile256(m, 3, c, XI0, T, t, hA + (size_t)i0 * Hp, hB + (size_t)i0 * Hp, sum + (size_t)i0 * Hp, avg);
        if (rows - i0 == 2)
            tile256(m, 2, c, XI0, T, t, hA + (size_t)i0 * Hp, hB + (size_t)i0 * Hp, sum + (size_t)i0 * Hp, avg);
        else if (rows - i0 == 1)
            tile256(m, 1, c, XI0, T, t, hA + (size_t)i0 * Hp, hB + (size_t)i0 * Hp, sum + (size_t)i0 * Hp, avg);
    }
}

T256 void gru_step_avx2(GRU_STEP_ARGS) { step256(c, x, NULL, T, t, rows, hA, hB, sum, avg); }
T256 void gru_stepx_avx2(GRU_STEPX_ARGS) {
    gru_xw_prefetch(c, ids, T, t, rows);
    step256(c, NULL, ids, T, t, rows, hA, hB, sum, avg);
}

/* linear_before_reset=0, phase 1, M rows (<= 3) x the 8 units at column c: z, x.Wn and r * h. */
I256 void tile256_zr(const gru_cell *m, int M, int c, const float *x, const int32_t *ids, long T, long t,
                     const float *hA, float *zb, float *xnb, float *rh) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    __m256 az[3], ar[3], axn[3], xz[3], xr[3];
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) { az[i] = ar[i] = axn[i] = _mm256_setzero_ps(); }
    const float *w0 = m->wpack + (size_t)(c / TILE) * K * 3 * TILE + (c % TILE);
    if (ids) {  /* folded: the sums of each row's token, (vocab, Hp/16, 3, 16) */
        const float *xw = m->xw + (size_t)(c / TILE) * 3 * TILE + (c % TILE);
#pragma GCC unroll 3
        for (int i = 0; i < M; i++) {
            const float *p = xw + (size_t)ids[(size_t)i * T + t] * 3 * Hp;
            az[i] = _mm256_load_ps(p); ar[i] = _mm256_load_ps(p + TILE); axn[i] = _mm256_load_ps(p + 2 * TILE);
        }
    } else
        for (int k = 0; k < F; k++) {
            const float *wk = w0 + (size_t)k * 3 * TILE;
            __m256 wz = _mm256_load_ps(wk), wr = _mm256_load_ps(wk + TILE), wn = _mm256_load_ps(wk + 2 * TILE);
#pragma GCC unroll 3
            for (int i = 0; i < M; i++) {
                __m256 xv = _mm256_broadcast_ss(x + ((size_t)i * T + t) * F + k);
                az[i] = _mm256_fmadd_ps(xv, wz, az[i]);
                ar[i] = _mm256_fmadd_ps(xv, wr, ar[i]);
                axn[i] = _mm256_fmadd_ps(xv, wn, axn[i]);
            }
        }
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) {
        _mm256_store_ps(xnb + (size_t)i * Hp + c, axn[i]);
        xz[i] = az[i]; xr[i] = ar[i]; az[i] = ar[i] = _mm256_setzero_ps();
    }
    for (int k = 0; k < H; k++) {
        const float *wk = w0 + (size_t)(F + k) * 3 * TILE;
        __m256 wz = _mm256_load_ps(wk), wr = _mm256_load_ps(wk + TILE);
#pragma GCC unroll 3
        for (int i = 0; i < M; i++) {
            __m256 hv = _mm256_broadcast_ss(hA + (size_t)i * Hp + k);
            az[i] = _mm256_fmadd_ps(hv, wz, az[i]);
            ar[i] = _mm256_fmadd_ps(hv, wr, ar[i]);
        }
    }
    __m256 bz = _mm256_load_ps(m->bz + c), br = _mm256_load_ps(m->br + c);
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) {
        const size_t o = (size_t)i * Hp + c;
        _mm256_store_ps(zb + o, logistic256(_mm256_add_ps(_mm256_add_ps(az[i], xz[i]), bz)));
        _mm256_store_ps(rh + o, reset256(_mm256_add_ps(_mm256_add_ps(ar[i], xr[i]), br), _mm256_load_ps(hA + o)));
    }
}

/* linear_before_reset=0, phase 2, M rows (<= 3) x the 8 units at column c: n and h'. */
I256 void tile256_n(const gru_cell *m, int M, int c, const float *hA, float *hB, float *sum, int avg,
                    const float *zb, const float *xnb, const float *rh) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    __m256 acc[3];
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) acc[i] = _mm256_setzero_ps();
    const float *w0 = m->wpack + (size_t)(c / TILE) * K * 3 * TILE + (c % TILE) + 2 * TILE;
    for (int k = 0; k < H; k++) {
        __m256 wn = _mm256_load_ps(w0 + (size_t)(F + k) * 3 * TILE);
#pragma GCC unroll 3
        for (int i = 0; i < M; i++) acc[i] = _mm256_fmadd_ps(_mm256_broadcast_ss(rh + (size_t)i * Hp + k), wn, acc[i]);
    }
    __m256 one = _mm256_set1_ps(1.0f), bn = _mm256_load_ps(m->bxn + c);
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) {
        const size_t o = (size_t)i * Hp + c;
        __m256 n = tanh256(_mm256_add_ps(_mm256_add_ps(acc[i], _mm256_load_ps(xnb + o)), bn));
        __m256 z = _mm256_load_ps(zb + o);
        __m256 hnew = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(one, z), n), _mm256_mul_ps(z, _mm256_load_ps(hA + o)));
        _mm256_store_ps(hB + o, hnew);
        if (avg) _mm256_store_ps(sum + o, _mm256_add_ps(_mm256_load_ps(sum + o), hnew));
    }
}

#define ZR256(M_) tile256_zr(m, M_, c, XI0, T, t, hA + (size_t)i0 * Hp, zb + (size_t)i0 * Hp, \
                             xnb + (size_t)i0 * Hp, rh + (size_t)i0 * Hp)
#define N256(M_) tile256_n(m, M_, c, hA + (size_t)i0 * Hp, hB + (size_t)i0 * Hp, sum + (size_t)i0 * Hp, avg, \
                           zb + (size_t)i0 * Hp, xnb + (size_t)i0 * Hp, rh + (size_t)i0 * Hp)
#define ROWS_IN_THREES(CALL)                                             \
    do {                                                                 \
        int i0 = 0;                                                      \
        for (; i0 + 3 <= rows; i0 += 3) CALL(3);                         \
        if (rows - i0 == 2) CALL(2);                                     \
        else if (rows - i0 == 1) CALL(1);                                \
    } while (0)

I256 void step0_256(const gru_cell *m, const float *x, const int32_t *ids, long T, long t, int rows,
                    const float *hA, float *hB, float *sum, int avg, float *zb, float *xnb, float *rh) {
    const int Hp = m->Hp, F = m->F;
    for (int c = 0; c < Hp; c += 8) ROWS_IN_THREES(ZR256);
    for (int c = 0; c < Hp; c += 8) ROWS_IN_THREES(N256);
}

T256 void gru_step0_avx2(GRU_STEP0_ARGS) { step0_256(c, x, NULL, T, t, rows, hA, hB, sum, avg, zb, xnb, rh); }
T256 void gru_stepx0_avx2(GRU_STEPX0_ARGS) {
    gru_xw_prefetch(c, ids, T, t, rows);
    step0_256(c, NULL, ids, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
}
#endif /* GRU_X86 */
