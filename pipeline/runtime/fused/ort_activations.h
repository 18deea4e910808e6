/* onnxruntime's activation functions, scalar and on one vector, with the operations in onnxruntime's
 * order: the kernel's numbers are onnxruntime's bits only while this file matches it.
 *
 * Owns: the coefficients, the scalar forms (logistic1, tanh_pq1, reset1, tanh1: the generic C step
 * and every variant's head; mlas_tanh1: the Tanh op, a Dense layer's tanh in the head), MLAS' softmax of one row (mlas_softmax_row: every variant's k-way head)
 * and ORT_ACTIVATIONS, which defines the same four functions on a vector
 * type for the AVX2 and AVX-512 files (one operation order for every width). Header only: the
 * functions are inlined where they are used. Needs <math.h> (fmaf) and, for ORT_ACTIVATIONS, the
 * intrinsics of the width it is used with.
 *
 * The GRU op of onnxruntime's CPU provider (rnn/deep_cpu_gru.cc, rnn/rnn_helpers.cc; the same code
 * since onnxruntime 1.x) does not compute exp: for sigmoid/tanh it uses rational approximations
 * (Eigen's coefficients), and we use the same ones with the same operations in the same order, so
 * the kernel reproduces model.onnx bit for bit where onnxruntime's MLAS runs its FMA kernels:
 *   z  = Logistic(pre_z): MlasComputeLogistic (FMA3 kernel): v = clamp(x, +-18),
 *        p = v (((a9 v^2 + a7) v^2 + a5) v^2 + a3) v^2 + a1),  q = (...(b10 v^2 + b8) ...) v^2 + b0
 *        by fused multiply-adds, max(0, p / q + 1/2)
 *   r (.) lin: gru_reset_gate_sigmoid: v = clamp(pre_r, +-20) * 0.5, (lin * 0.5) * (1 + P(v) / Q(v))
 *   n  = gru_output_gate_tanh: P(v) / Q(v), v = clamp(pre_n, +-10)
 *   h' = (1 - z) * n + z * h
 * where P/Q is rnn_helpers' tanh with every product and sum rounded apart (that file is built
 * without FMA). The output head is onnxruntime's too: ReduceMean sums in time order and divides by
 * T, Gemm accumulates by fused multiply-adds in k order then adds the bias, Sigmoid is Logistic,
 * and Softmax is MLAS' MlasComputeSoftmax for one row of k values (mlas_softmax_row below). */
#ifndef GRU_ORT_ACTIVATIONS_H
#define GRU_ORT_ACTIVATIONS_H

#include <math.h>
#include <string.h>

#define LOGISTIC_BOUND 18.0f
#define LOGISTIC_A9 4.37031012579801e-11f
#define LOGISTIC_A7 1.15627324459942e-07f
#define LOGISTIC_A5 6.08574864600143e-05f
#define LOGISTIC_A3 8.51377133304701e-03f
#define LOGISTIC_A1 2.48287947061529e-01f
#define LOGISTIC_B10 6.10247389755681e-13f
#define LOGISTIC_B8 5.76102136993427e-09f
#define LOGISTIC_B6 6.29106785017040e-06f
#define LOGISTIC_B4 1.70198817374094e-03f
#define LOGISTIC_B2 1.16817656904453e-01f
#define LOGISTIC_B0 9.93151921023180e-01f
#define RESET_BOUND 20.0f     /* rnn_helpers' sigmoid_bound */
#define TANH_BOUND 10.0f      /* rnn_helpers' tanh_bound */
#define TANH_A13 -2.76076847742355e-16f
#define TANH_A11 2.00018790482477e-13f
#define TANH_A9 -8.60467152213735e-11f
#define TANH_A7 5.12229709037114e-08f
#define TANH_A5 1.48572235717979e-05f
#define TANH_A3 6.37261928875436e-04f
#define TANH_A1 4.89352455891786e-03f
#define TANH_B6 1.19825839466702e-06f
#define TANH_B4 1.18534705686654e-04f
#define TANH_B2 2.26843463243900e-03f
#define TANH_B0 4.89352518554385e-03f
#define MLAS_TANH_BOUND 9.0f  /* MlasTanhConstants.UpperRange (LowerRange: -9) */

static inline float clampf_(float x, float b) { return x < -b ? -b : (x > b ? b : x); }

static inline float logistic1(float x) {
    const float v = clampf_(x, LOGISTIC_BOUND), x2 = v * v;
    float p = fmaf(x2, LOGISTIC_A9, LOGISTIC_A7);
    p = fmaf(x2, p, LOGISTIC_A5); p = fmaf(x2, p, LOGISTIC_A3); p = fmaf(x2, p, LOGISTIC_A1);
    float q = fmaf(x2, LOGISTIC_B10, LOGISTIC_B8);
    q = fmaf(x2, q, LOGISTIC_B6); q = fmaf(x2, q, LOGISTIC_B4); q = fmaf(x2, q, LOGISTIC_B2); q = fmaf(x2, q, LOGISTIC_B0);
    const float r = (v * p) / q + 0.5f;
    return r < 0.0f ? 0.0f : r;
}

static inline float tanh_pq1(float x) {  /* P(x) / Q(x), no fused operations */
    const float x2 = x * x;
    float p = x2 * TANH_A13 + TANH_A11;
    p = x2 * p + TANH_A9; p = x2 * p + TANH_A7; p = x2 * p + TANH_A5; p = x2 * p + TANH_A3; p = x2 * p + TANH_A1;
    p = x * p;
    float q = x2 * TANH_B6 + TANH_B4;
    q = x2 * q + TANH_B2; q = x2 * q + TANH_B0;
    return p / q;
}

/* onnxruntime's Tanh op (float; a Dense layer's tanh): MlasComputeTanh, on x86-64 with FMA3 MLAS'
 * MlasComputeTanhF32KernelFma3 (mlas/lib/x86_64/TanhKernelFma3.S, constants MlasTanhConstants in
 * tanh.cpp; platform.cpp picks it on AVX2+FMA CPUs, AVX-512 ones included: MLAS has no AVX-512 tanh):
 *   v = min(9, max(-9, x))                     vmaxps / vminps (a NaN stays a NaN)
 *   p = fma(...fma(fma(x2, a13, a11), x2, a9)..., x2, a1) * v,   x2 = v * v
 *   q = fma(fma(fma(x2, b6, b4), x2, b2), x2, b0)
 *   y = p / q
 * The coefficients are rnn_helpers' (TANH_A*, TANH_B*), here with fused multiply-adds. */
static inline float mlas_tanh1(float x) {
    float v = -MLAS_TANH_BOUND > x ? -MLAS_TANH_BOUND : x;
    v = MLAS_TANH_BOUND < v ? MLAS_TANH_BOUND : v;
    const float x2 = v * v;
    float p = fmaf(x2, TANH_A13, TANH_A11);
    p = fmaf(p, x2, TANH_A9); p = fmaf(p, x2, TANH_A7); p = fmaf(p, x2, TANH_A5); p = fmaf(p, x2, TANH_A3);
    p = fmaf(p, x2, TANH_A1);
    p = p * v;
    float q = fmaf(x2, TANH_B6, TANH_B4);
    q = fmaf(q, x2, TANH_B2); q = fmaf(q, x2, TANH_B0);
    return p / q;
}

static inline float reset1(float pre, float lin) { return (lin * 0.5f) * (1.0f + tanh_pq1(clampf_(pre, RESET_BOUND) * 0.5f)); }
static inline float tanh1(float pre) { return tanh_pq1(clampf_(pre, TANH_BOUND)); }

/* onnxruntime's activations (logistic1, tanh_pq1, reset1, tanh1) on one vector of V: the same
 * operations in the same order for every width. ATTR: the target attributes; P: the intrinsics'
 * prefix (_mm512_ or _mm256_); S: the functions' suffix. */
#define ORT_ACTIVATIONS(ATTR, V, P, S)                                                                 \
ATTR V logistic##S(V x) {                                                                              \
    const V v = P##min_ps(P##max_ps(x, P##set1_ps(-LOGISTIC_BOUND)), P##set1_ps(LOGISTIC_BOUND));      \
    const V x2 = P##mul_ps(v, v);                                                                      \
    V p = P##fmadd_ps(x2, P##set1_ps(LOGISTIC_A9), P##set1_ps(LOGISTIC_A7));                           \
    p = P##fmadd_ps(x2, p, P##set1_ps(LOGISTIC_A5));                                                   \
    p = P##fmadd_ps(x2, p, P##set1_ps(LOGISTIC_A3));                                                   \
    p = P##fmadd_ps(x2, p, P##set1_ps(LOGISTIC_A1));                                                   \
    V q = P##fmadd_ps(x2, P##set1_ps(LOGISTIC_B10), P##set1_ps(LOGISTIC_B8));                          \
    q = P##fmadd_ps(x2, q, P##set1_ps(LOGISTIC_B6));                                                   \
    q = P##fmadd_ps(x2, q, P##set1_ps(LOGISTIC_B4));                                                   \
    q = P##fmadd_ps(x2, q, P##set1_ps(LOGISTIC_B2));                                                   \
    q = P##fmadd_ps(x2, q, P##set1_ps(LOGISTIC_B0));                                                   \
    return P##max_ps(P##setzero_ps(), P##add_ps(P##div_ps(P##mul_ps(v, p), q), P##set1_ps(0.5f)));    \
}                                                                                                      \
ATTR V tanh_pq##S(V x) { /* no fused operations */                                                     \
    const V x2 = P##mul_ps(x, x);                                                                      \
    V p = P##add_ps(P##mul_ps(x2, P##set1_ps(TANH_A13)), P##set1_ps(TANH_A11));                        \
    p = P##add_ps(P##mul_ps(x2, p), P##set1_ps(TANH_A9));                                              \
    p = P##add_ps(P##mul_ps(x2, p), P##set1_ps(TANH_A7));                                              \
    p = P##add_ps(P##mul_ps(x2, p), P##set1_ps(TANH_A5));                                              \
    p = P##add_ps(P##mul_ps(x2, p), P##set1_ps(TANH_A3));                                              \
    p = P##add_ps(P##mul_ps(x2, p), P##set1_ps(TANH_A1));                                              \
    p = P##mul_ps(x, p);                                                                               \
    V q = P##add_ps(P##mul_ps(x2, P##set1_ps(TANH_B6)), P##set1_ps(TANH_B4));                          \
    q = P##add_ps(P##mul_ps(x2, q), P##set1_ps(TANH_B2));                                              \
    q = P##add_ps(P##mul_ps(x2, q), P##set1_ps(TANH_B0));                                              \
    return P##div_ps(p, q);                                                                            \
}                                                                                                      \
ATTR V reset##S(V pre, V lin) {                                                                        \
    const V v = P##min_ps(P##max_ps(pre, P##set1_ps(-RESET_BOUND)), P##set1_ps(RESET_BOUND));          \
    const V t = tanh_pq##S(P##mul_ps(v, P##set1_ps(0.5f)));                                            \
    return P##mul_ps(P##mul_ps(lin, P##set1_ps(0.5f)), P##add_ps(P##set1_ps(1.0f), t));                \
}                                                                                                      \
ATTR V tanh##S(V pre) {                                                                                \
    return tanh_pq##S(P##min_ps(P##max_ps(pre, P##set1_ps(-TANH_BOUND)), P##set1_ps(TANH_BOUND)));     \
}

/* ---------------------------------------------------------------- Softmax (MlasComputeSoftmax)
 * onnxruntime's CPU Softmax (opset 13+, and the 2-D coerced older form) calls MlasComputeSoftmax on
 * (N, k): per row, on x86-64 (mlas/lib/compute.cpp MlasComputeSoftmaxThreaded, the kernels picked in
 * mlas/lib/platform.cpp):
 *   max  = ReduceMaximumF32Kernel(row)        the exact maximum (any order gives the same value)
 *   e_c  = exp(x_c + (-max)), sum = sum of e_c  ComputeSumExpF32Kernel, which also stores e_c
 *   y_c  = e_c * (1.0f / sum)                 ComputeSoftmaxOutputF32KernelAvx (one product)
 * The sum-exp kernel is MlasComputeSumExpF32KernelAvx512F (x86_64/TransKernelAvx512F.S) on CPUs with
 * AVX512F, else MlasComputeSumExpF32KernelFma3 (TransKernelFma3.S) on AVX2+FMA. Both reduce the
 * argument the same way (by fused multiply-adds):
 *   v = max(LOWER, x - max);  b = fma(v, 1/ln2, 1.5 * 2^23);  m = b - 1.5 * 2^23  (round(v / ln2))
 *   v = fma(m, -ln2_hi, v);  v = fma(m, -ln2_lo, v)
 *   p = fma(fma(fma(fma(fma(fma(P0, v, P1), v, P2), v, P3), v, P4), v, 1), v, 1)
 * and scale p by 2^m: AVX512F with vscalefps (one rounding, LOWER = -103.97), FMA3 by a product with
 * the float whose bits are (b << 23) + 0x3F800000 (LOWER = -88.38). Their sums differ in order: lane
 * l of a 16-lane (AVX512F) or 8-lane (FMA3) accumulator adds e_l, e_{l+16 or 8}, ... in turn; then
 * AVX512F folds the upper 8 lanes onto the lower 8 (a_l + a_{l+8}) and both reduce 8 lanes as
 * ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7)) (two vhaddps and one vaddss). */
#define MLAS_EXP_LOWER_RANGE -103.9720840454f       /* MlasExpConstants.LowerRange (AVX512F) */
#define MLAS_EXP_LOWER_RANGE_SUMEXP -88.3762626647949f  /* .LowerRangeSumExp (FMA3) */
#define MLAS_EXP_ROUNDING_BIAS 12582912.0f          /* MLAS_ROUNDING_BIAS_MAGIC: 1.5 * 2^23 */
#define MLAS_EXP_LOG2_RECIPROCAL 1.44269504088896341f
#define MLAS_EXP_LOG2_HIGH -6.93145752e-1f
#define MLAS_EXP_LOG2_LOW -1.42860677e-6f
#define MLAS_EXP_POLY_0 0x1.694000p-10f
#define MLAS_EXP_POLY_1 0x1.125edcp-7f
#define MLAS_EXP_POLY_2 0x1.555b5ap-5f
#define MLAS_EXP_POLY_3 0x1.555450p-3f
#define MLAS_EXP_POLY_4 0x1.fffff6p-2f
#define MLAS_EXP_POLY_56 1.0f

static inline float f32_from_bits_(unsigned int u) { float f; memcpy(&f, &u, sizeof f); return f; }
static inline unsigned int f32_bits_(float f) { unsigned int u; memcpy(&u, &f, sizeof u); return u; }

/* MLAS' sum-exp element: exp(v) for v = x - max <= 0, as the kernel of `kind` (MLAS_SOFTMAX_*) does */
static inline float mlas_sumexp1(float v, int avx512f) {
    const float lower = avx512f ? MLAS_EXP_LOWER_RANGE : MLAS_EXP_LOWER_RANGE_SUMEXP;
    v = lower > v ? lower : v;  /* vmaxps lower, v */
    const float b = fmaf(v, MLAS_EXP_LOG2_RECIPROCAL, MLAS_EXP_ROUNDING_BIAS);
    const float m = b - MLAS_EXP_ROUNDING_BIAS;
    v = fmaf(m, MLAS_EXP_LOG2_HIGH, v);
    v = fmaf(m, MLAS_EXP_LOG2_LOW, v);
    float p = fmaf(MLAS_EXP_POLY_0, v, MLAS_EXP_POLY_1);
    p = fmaf(p, v, MLAS_EXP_POLY_2); p = fmaf(p, v, MLAS_EXP_POLY_3); p = fmaf(p, v, MLAS_EXP_POLY_4);
    p = fmaf(p, v, MLAS_EXP_POLY_56); p = fmaf(p, v, MLAS_EXP_POLY_56);
    if (!avx512f)  /* vpslld b, 23; vpaddd 0x3F800000; vmulps */
        return p * f32_from_bits_((f32_bits_(b) << 23) + 0x3F800000u);
    /* vscalefps p, m: p * 2^m rounded once; m in [-150, 0] here. A product with a normal 2^m is that
     * one rounding; below 2^-126, p * 2^(m + 64) is exact (normal) and the product with 2^-64 rounds once */
    const int e = (int)m;
    if (e >= -126) return p * f32_from_bits_((unsigned int)(e + 127) << 23);
    return (p * f32_from_bits_((unsigned int)(e + 64 + 127) << 23)) * 0x1p-64f;
}

/* MlasComputeSoftmax on one row y (k values, in place), for the MLAS kernels of `kind`. */
static inline void mlas_softmax_row(float *y, int k, int kind) {
    const int avx512f = kind == MLAS_SOFTMAX_AVX512F, lanes = avx512f ? 16 : 8;
    float mx = -3.40282347e+38f;  /* MlasMinimumF32Value: numeric_limits<float>::lowest() */
    for (int c = 0; c < k; c++) mx = mx > y[c] ? mx : y[c];  /* vmaxss / vmaxps: the same value in any order */
    const float neg = -mx;
    float acc[16] = {0};
    for (int c = 0; c < k; c++) {
        const float e = mlas_sumexp1(y[c] + neg, avx512f);  /* vaddps neg, x */
        y[c] = e;
        acc[c % lanes] += e;
    }
    if (avx512f)
        for (int l = 0; l < 8; l++) acc[l] = acc[l + 8] + acc[l];  /* vextractf64x4; vaddps */
    const float sum = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    const float scale = 1.0f / sum;
    for (int c = 0; c < k; c++) y[c] = scale * y[c];
}

#endif /* GRU_ORT_ACTIVATIONS_H */
