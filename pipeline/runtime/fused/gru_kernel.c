/* Fused GRU inference kernel: a stack of L >= 1 GRU layers (ONNX GRU, linear_before_reset 1 or 0,
 * i.e. Keras reset_after True or False), each forward, reverse (Keras go_backwards) or bidirectional
 * (its two directions concatenated), every layer but the last handing its whole output sequence to
 * the next -> the last layer's last state or mean over time -> Dense(1) -> sigmoid, for a whole
 * batch in one call.
 *
 * Owns: weight packing, the model input's per-feature scaling (the graph's Sub/Div/Mul/Add, same
 * float32 operations) with a NaN/infinity scan of the scaled values, onnxruntime's activation
 * functions, the per-ISA kernels (AVX-512, AVX2+FMA, generic C), the CPU feature check, and a small persistent thread pool (pthreads; bounded spinning, then a condition
 * variable, so idle workers never burn CPU for long). Plain C, no Python C API: the runtime loads
 * it with ctypes (pipeline/runtime/fused/__init__.py), which releases the GIL during calls.
 *
 * Numerics: float32, onnxruntime's GRU op operation for operation (see "onnxruntime's
 * activations" below for the functions), so on CPUs where onnxruntime's MLAS runs its FMA kernels
 * the kernel reproduces model.onnx bit for bit:
 *   z     = Logistic((h.Rz + x.Wz) + (Wbz + Rbz))
 *   r.lin = Reset((h.Rr + x.Wr) + (Wbr + Rbr), lin),  lin = h.Rn + Rbn      linear_before_reset=1
 *   n     = Tanh((x.Wn + r.lin) + Wbn)                                     linear_before_reset=1
 *   r.h   = Reset((h.Rr + x.Wr) + (Wbr + Rbr), h)                          linear_before_reset=0
 *   n     = Tanh(((r.h).Rn + x.Wn) + (Wbn + Rbn))                          linear_before_reset=0
 *   h'    = (1 - z) * n + z * h
 * with the additions grouped as written and each product summed over k in order from 0 with fused
 * multiply-adds, x.W and h.R as separate sums (onnxruntime: one sgemm for x.W, one per step for h.R
 * added onto it). linear_before_reset=0 needs r of every unit before the (r.h).Rn product: each
 * step runs in two phases (z, r, x.Wn and r.h of every unit; then n and h'), through three more
 * (rows, Hp) planes.
 *   head: per direction the mean (sum in the order the graph's ReduceMean adds, then / T) or the last
 *   state, the directions concatenated; p = Logistic(fma-sum of head . w, in order, + b)
 * A reverse direction runs t = T-1 .. 0 and its state after step t is its output at time t (ONNX Y);
 * a layer direction marked "flip" hands that output to the next layer at time T-1-t instead (Keras
 * go_backwards with return_sequences: the exporter reverses Y along time with a Slice).
 * Each output row depends only on its own input row, with the same operation order whatever the
 * batch size, tile or thread it lands in, so results are bit-identical across batch splits.
 *
 * Layout of the packed weights, per layer and direction (gru_cell): the hidden units are padded to
 * Hp (a multiple of 16) with zero weights and biases (a padded unit stays exactly 0) and cut into
 * column tiles of 16 units; tile j holds, for k over the F inputs then the H hidden units, the 16 z,
 * 16 r and 16 n weights:
 *   wpack[j][k][gate][16]   (Hp/16, F + H, 3, 16)
 * The AVX2 kernel reads each 16-wide tile as two 8-wide halves.
 *
 * Stacked layers: a block of rows runs layer by layer. A layer that is not the last writes each
 * direction's state after each step into a sequence buffer (rows, T, D*H), direction d at columns
 * d*H .. d*H+H-1 (unpadded): the layout of x (rows, T, F), so the next layer's cell reads it as its
 * input with F = D*H. Two such buffers (ping-pong) in each thread's scratch (scratch_floats).
 */
#define _GNU_SOURCE  /* sched_getcpu */
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define GRU_X86 1
#else
#define GRU_X86 0
#endif

#define GRU_ABI_VERSION 3
#define TILE 16        /* hidden units per column tile (one zmm) */
#define BLOCK_ROWS 24  /* rows that run all time steps together, h and the mean resident in L1 */

enum { ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
enum { HEAD_LAST = 0, HEAD_AVG = 1 };
enum { SCALE_SUB = 0, SCALE_DIV = 1, SCALE_MUL = 2, SCALE_ADD = 3 };
#define MAX_SCALE_OPS 8

#define LAYER_INFO 7    /* ints per layer given to gru_create */

typedef struct {                  /* one direction of one layer: what the tiles read */
    int F, H, Hp;                 /* inputs, hidden units, hidden units padded to a multiple of TILE */
    float *wpack;                 /* (Hp/16, F + H, 3, 16) */
    float *bz, *br, *bxn, *bhn;   /* (Hp,) each: Wbz+Rbz, Wbr+Rbr, Wbn (Wbn+Rbn when linear_before_reset=0), Rbn */
} gru_cell;

typedef struct {
    int D, H;                     /* directions (1 or 2), hidden units per direction */
    int lbr;                      /* linear_before_reset: 1 (one phase per step) or 0 (two phases) */
    int reverse[2];               /* direction d runs t = T-1 .. 0 */
    int flip[2];                  /* direction d's output of time t goes to time T-1-t of the next layer */
    gru_cell cell[2];
} gru_layer;

typedef struct {
    int F, L, head, isa;
    int scratch_w;                /* state planes' floats per row: max over layers of D x cell Hp x 3 planes
                                     (6 for linear_before_reset=0) */
    int seq_w;                    /* widest sequence handed between layers: max D*H over all but the last layer */
    int hist_w;                   /* > 0 (the last layer's Hp): its states are kept and summed in time order
                                     (average head over a reverse direction whose output keeps time order,
                                     as ReduceMean sums it; a running sum would add them backwards) */
    gru_layer *layer;             /* (L,) */
    float *head_w;                /* (D*H,) of the last layer, directions concatenated */
    float head_b;
    int n_scale;                  /* the graph's per-feature input scaling, applied first, in order */
    int scale_op[MAX_SCALE_OPS];  /* SCALE_* */
    float *scale_c;               /* (n_scale, F) */
} gru_model;

/* ------------------------------------------------------------------ CPU features */
int gru_abi_version(void) { return GRU_ABI_VERSION; }

int gru_isa_supported(int isa) {
    if (isa == ISA_GENERIC) return 1;
#if GRU_X86
    __builtin_cpu_init();
    if (isa == ISA_AVX2) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (isa == ISA_AVX512)
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
               __builtin_cpu_supports("fma");
#endif
    return 0;
}

/* ------------------------------------------------------------------ model */
static void *aligned(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    memset(p, 0, bytes ? bytes : 64);
    return p;
}

static void free_cell(gru_cell *c) {
    free(c->wpack); free(c->bz); free(c->br); free(c->bxn); free(c->bhn);
}

void gru_destroy(void *handle) {
    gru_model *m = (gru_model *)handle;
    if (!m) return;
    if (m->layer)
        for (int l = 0; l < m->L; l++)
            for (int d = 0; d < 2; d++) free_cell(&m->layer[l].cell[d]);
    free(m->layer); free(m->head_w); free(m->scale_c);
    free(m);
}

/* Pack one direction: W (3H, F), R (3H, H), B (6H,) in ONNX order (gates z, r, n; B = [Wb, Rb]). */
static int pack_cell(gru_cell *c, int F, int H, const float *W, const float *R, const float *B, int lbr) {
    c->F = F; c->H = H; c->Hp = (H + TILE - 1) / TILE * TILE;
    int Hp = c->Hp, K = F + H;
    c->wpack = (float *)aligned(sizeof(float) * (size_t)(Hp / TILE) * K * 3 * TILE);
    c->bz = (float *)aligned(sizeof(float) * Hp); c->br = (float *)aligned(sizeof(float) * Hp);
    c->bxn = (float *)aligned(sizeof(float) * Hp); c->bhn = (float *)aligned(sizeof(float) * Hp);
    if (!c->wpack || !c->bz || !c->br || !c->bxn || !c->bhn) return 0;
    for (int j = 0; j < H; j++) {
        int jt = j / TILE, jl = j % TILE;
        for (int g = 0; g < 3; g++) {
            const float *wrow = W + (size_t)(g * H + j) * F;   /* gate g, unit j: (F,) */
            const float *rrow = R + (size_t)(g * H + j) * H;   /* (H,) */
            for (int k = 0; k < F; k++) c->wpack[(((size_t)jt * K + k) * 3 + g) * TILE + jl] = wrow[k];
            for (int k = 0; k < H; k++) c->wpack[(((size_t)jt * K + F + k) * 3 + g) * TILE + jl] = rrow[k];
        }
        c->bz[j] = B[j] + B[3 * H + j];
        c->br[j] = B[H + j] + B[4 * H + j];
        c->bxn[j] = lbr ? B[2 * H + j] : B[2 * H + j] + B[5 * H + j];  /* onnxruntime adds Wbn + Rbn first */
        c->bhn[j] = B[5 * H + j];
    }
    return 1;
}

/* F: the model's input features; L layers. info: LAYER_INFO ints per layer,
 *   {H, D, linear_before_reset (1 or 0), reverse0, flip0, reverse1, flip1}
 * (reverse_d: direction d runs backwards in time; flip_d: its output sequence is handed on reversed
 * in time). params: per layer, the ONNX initializers one after the other: W (D, 3H, F_l),
 * R (D, 3H, H), B (D, 6H), where F_0 = F and F_l = D_{l-1} * H_{l-1}. head_w: (D * H,) of the last
 * layer. Returns NULL on bad arguments, an unsupported ISA or no memory. */
void *gru_create(int F, int L, const int *info, const float *params, int head, const float *head_w,
                 float head_b, int isa) {
    if (F < 1 || L < 1 || !info || !params || !head_w || (head != HEAD_LAST && head != HEAD_AVG) ||
        !gru_isa_supported(isa))
        return NULL;
    for (int l = 0; l < L; l++) {
        const int *in = info + (size_t)l * LAYER_INFO;
        if (in[0] < 1 || (in[1] != 1 && in[1] != 2) || (in[2] != 0 && in[2] != 1)) return NULL;
    }
    gru_model *m = (gru_model *)calloc(1, sizeof(gru_model));
    if (!m) return NULL;
    m->F = F; m->L = L; m->head = head; m->isa = isa; m->head_b = head_b;
    m->layer = (gru_layer *)calloc((size_t)L, sizeof(gru_layer));
    if (!m->layer) { gru_destroy(m); return NULL; }
    const float *p = params;
    int Fl = F;
    for (int l = 0; l < L; l++) {
        const int *in = info + (size_t)l * LAYER_INFO;
        gru_layer *ly = &m->layer[l];
        ly->H = in[0]; ly->D = in[1]; ly->lbr = in[2];
        const int H = ly->H, D = ly->D;
        const float *W = p, *R = W + (size_t)D * 3 * H * Fl, *B = R + (size_t)D * 3 * H * H;
        p = B + (size_t)D * 6 * H;
        for (int d = 0; d < D; d++) {
            ly->reverse[d] = in[3 + 2 * d] != 0;
            ly->flip[d] = in[4 + 2 * d] != 0;
            if (!pack_cell(&ly->cell[d], Fl, H, W + (size_t)d * 3 * H * Fl, R + (size_t)d * 3 * H * H,
                           B + (size_t)d * 6 * H, ly->lbr)) { gru_destroy(m); return NULL; }
        }
        int width = D * ly->cell[0].Hp * (ly->lbr ? 3 : 6);
        if (width > m->scratch_w) m->scratch_w = width;
        if (l < L - 1 && D * H > m->seq_w) m->seq_w = D * H;
        Fl = D * H;
    }
    const gru_layer *last = &m->layer[L - 1];
    for (int d = 0; d < last->D; d++)
        if (head == HEAD_AVG && last->reverse[d] && !last->flip[d]) m->hist_w = last->cell[0].Hp;
    m->head_w = (float *)aligned(sizeof(float) * (size_t)Fl);
    if (!m->head_w) { gru_destroy(m); return NULL; }
    memcpy(m->head_w, head_w, sizeof(float) * (size_t)Fl);
    return m;
}

/* The model input's per-feature scaling (x op c, in order, float32: the same operations as the
 * graph's Sub/Div/Mul/Add nodes; the library is built with -ffp-contract=off, so a Mul then an Add
 * is never fused into one rounding). ops (n,) SCALE_*, consts (n, F). Returns 0, or -1. */
int gru_set_input_scaling(void *handle, int n, const int *ops, const float *consts) {
    gru_model *m = (gru_model *)handle;
    if (!m || n < 0 || n > MAX_SCALE_OPS) return -1;
    float *c = NULL;
    if (n) {
        c = (float *)aligned(sizeof(float) * (size_t)n * m->F);
        if (!c) return -1;
        for (int i = 0; i < n; i++) {
            if (ops[i] < SCALE_SUB || ops[i] > SCALE_ADD) { free(c); return -1; }
            m->scale_op[i] = ops[i];
        }
        memcpy(c, consts, sizeof(float) * (size_t)n * m->F);
    }
    free(m->scale_c);
    m->scale_c = c;
    m->n_scale = n;
    return 0;
}

/* dst (n steps, F) = the scaled src; returns 1 if any scaled value is NaN or infinite (a NaN or
 * infinity in src always makes its scaled value one too). */
static int scale_rows(const gru_model *m, const float *src, float *dst, size_t steps) {
    const int F = m->F;
    int bad = 0;
    for (size_t s = 0; s < steps; s++) {
        const float *a = src + s * F;
        float *b = dst + s * F;
        for (int f = 0; f < F; f++) {
            float v = a[f];
            for (int i = 0; i < m->n_scale; i++) {
                const float c = m->scale_c[(size_t)i * F + f];
                switch (m->scale_op[i]) {
                    case SCALE_SUB: v = v - c; break;
                    case SCALE_DIV: v = v / c; break;
                    case SCALE_MUL: v = v * c; break;
                    default: v = v + c; break;
                }
            }
            bad |= !isfinite(v);
            b[f] = v;
        }
    }
    return bad;
}

/* ------------------------------------------------------------------ onnxruntime's activations
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
 * T, Gemm accumulates by fused multiply-adds in k order then adds the bias, Sigmoid is Logistic. */
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

static inline float clampf_(float x, float b) { return x < -b ? -b : (x > b ? b : x); }

static float logistic1(float x) {
    const float v = clampf_(x, LOGISTIC_BOUND), x2 = v * v;
    float p = fmaf(x2, LOGISTIC_A9, LOGISTIC_A7);
    p = fmaf(x2, p, LOGISTIC_A5); p = fmaf(x2, p, LOGISTIC_A3); p = fmaf(x2, p, LOGISTIC_A1);
    float q = fmaf(x2, LOGISTIC_B10, LOGISTIC_B8);
    q = fmaf(x2, q, LOGISTIC_B6); q = fmaf(x2, q, LOGISTIC_B4); q = fmaf(x2, q, LOGISTIC_B2); q = fmaf(x2, q, LOGISTIC_B0);
    const float r = (v * p) / q + 0.5f;
    return r < 0.0f ? 0.0f : r;
}

static float tanh_pq1(float x) {  /* P(x) / Q(x), no fused operations */
    const float x2 = x * x;
    float p = x2 * TANH_A13 + TANH_A11;
    p = x2 * p + TANH_A9; p = x2 * p + TANH_A7; p = x2 * p + TANH_A5; p = x2 * p + TANH_A3; p = x2 * p + TANH_A1;
    p = x * p;
    float q = x2 * TANH_B6 + TANH_B4;
    q = x2 * q + TANH_B2; q = x2 * q + TANH_B0;
    return p / q;
}

static inline float reset1(float pre, float lin) { return (lin * 0.5f) * (1.0f + tanh_pq1(clampf_(pre, RESET_BOUND) * 0.5f)); }
static inline float tanh1(float pre) { return tanh_pq1(clampf_(pre, TANH_BOUND)); }

/* The head of one row: p = sigmoid(hv . w + b), hv = mean (sum / T) or last state of each direction
 * d of the last layer (hv[d], H values), concatenated. Scalar, shared by every ISA so the head never
 * differs between variants. */
static float head_row(const gru_model *m, const float *const *hv, float steps, int avg) {
    const gru_layer *ly = &m->layer[m->L - 1];
    float acc = 0.0f;
    for (int d = 0; d < ly->D; d++)
        for (int j = 0; j < ly->H; j++) {
            float v = avg ? hv[d][j] / steps : hv[d][j];
            acc = fmaf(v, m->head_w[d * ly->H + j], acc);
        }
    return logistic1(acc + m->head_b);
}

/* out (rows,) from fin[d] (rows, Hp): each direction's last state, or its sum when avg. */
static void head_rows(const gru_model *m, const float *const fin[2], int rows, long T, float *out) {
    const int avg = m->head == HEAD_AVG, Hp = m->layer[m->L - 1].cell[0].Hp;
    for (int i = 0; i < rows; i++) {
        const float *hv[2] = {fin[0] + (size_t)i * Hp, fin[1] ? fin[1] + (size_t)i * Hp : NULL};
        out[i] = head_row(m, hv, (float)T, avg);
    }
}

/* ------------------------------------------------------------------ generic C */

/* One time step t of one direction, `rows` rows over the hidden units [c0, c1): hA (rows, Hp) -> hB,
 * sum += hB when avg. */
static void step_generic(const gru_cell *m, const float *x, long T, long t, int rows, int c0, int c1,
                         const float *hA, float *hB, float *sum, int avg) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    for (int i = 0; i < rows; i++) {
        const float *xt = x + ((size_t)i * T + t) * F;
        const float *hp = hA + (size_t)i * Hp;
        float *hn = hB + (size_t)i * Hp;
        for (int j = c0; j < c1; j++) {
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
static void step0_generic(const gru_cell *m, const float *x, long T, long t, int rows, const float *hA,
                          float *hB, float *sum, int avg, float *zb, float *xnb, float *rh) {
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

#if GRU_X86
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

/* ------------------------------------------------------------------ AVX-512 */
#define T512 __attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
#define I512 static inline __attribute__((always_inline, target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))

ORT_ACTIVATIONS(I512, __m512, _mm512_, 512)

/* M rows x J column tiles of one step: 4 accumulators (z, r, x_n, h_n) per row and tile. */
I512 void tile512(const gru_cell *m, int M, int J, int j0, const float *x, long T, long t,
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

#define TILE512(M_, J_) tile512(m, M_, J_, jt, x + (size_t)i0 * T * F, T, t, hA + (size_t)i0 * Hp, \
                                 hB + (size_t)i0 * Hp, sum + (size_t)i0 * Hp, avg)

/* One time step of rows <= 2 rows over the column tiles [jt0, jt1): several tiles at once, for
 * independent FMA chains. */
T512 static void step_small512(const gru_cell *m, const float *x, long T, long t, int rows, int jt0, int jt1,
                               const float *hA, float *hB, float *sum, int avg) {
    const int Hp = m->Hp, F = m->F;
    for (int jt = jt0; jt < jt1;) {
        int i0 = 0, left = jt1 - jt;
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

T512 static void step_avx512(const gru_cell *m, const float *x, long T, long t, int rows,
                             const float *hA, float *hB, float *sum, int avg) {
    const int Hp = m->Hp, F = m->F, NJ = Hp / TILE;
    if (rows <= 2) {
        step_small512(m, x, T, t, rows, 0, NJ, hA, hB, sum, avg);
    } else {
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
}

/* linear_before_reset=0, phase 1, M rows x the 16 units at column c: z, x.Wn and r * h. */
I512 void tile512_zr(const gru_cell *m, int M, int c, const float *x, long T, long t, const float *hA,
                     float *zb, float *xnb, float *rh) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    __m512 az[6], ar[6], axn[6], xz[6], xr[6];
#pragma GCC unroll 6
    for (int i = 0; i < M; i++) { az[i] = ar[i] = axn[i] = _mm512_setzero_ps(); }
    const float *w0 = m->wpack + (size_t)(c / TILE) * K * 3 * TILE;
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
#define ZR512(M_) tile512_zr(m, M_, c, x + (size_t)i0 * T * F, T, t, hA + (size_t)i0 * Hp, zb + (size_t)i0 * Hp, \
                             xnb + (size_t)i0 * Hp, rh + (size_t)i0 * Hp)
#define N512(M_) tile512_n(m, M_, c, hA + (size_t)i0 * Hp, hB + (size_t)i0 * Hp, sum + (size_t)i0 * Hp, avg, \
                           zb + (size_t)i0 * Hp, xnb + (size_t)i0 * Hp, rh + (size_t)i0 * Hp)

T512 static void step0_avx512(const gru_cell *m, const float *x, long T, long t, int rows, const float *hA,
                              float *hB, float *sum, int avg, float *zb, float *xnb, float *rh) {
    const int Hp = m->Hp, F = m->F;
    for (int c = 0; c < Hp; c += TILE) ROWS_IN_SIXES(ZR512);
    for (int c = 0; c < Hp; c += TILE) ROWS_IN_SIXES(N512);
}

/* ------------------------------------------------------------------ AVX2 + FMA */
#define T256 __attribute__((target("avx2,fma")))
#define I256 static inline __attribute__((always_inline, target("avx2,fma")))

ORT_ACTIVATIONS(I256, __m256, _mm256_, 256)

/* M rows (<= 3) x one 8-wide half-tile: 12 accumulators of the 16 ymm registers. */
I256 void tile256(const gru_cell *m, int M, int c, const float *x, long T, long t,
                  const float *hA, float *hB, float *sum, int avg) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    __m256 az[3], ar[3], axn[3], ahn[3], xz[3], xr[3];
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) { az[i] = ar[i] = axn[i] = _mm256_setzero_ps(); }
    const float *w0 = m->wpack + (size_t)(c / TILE) * K * 3 * TILE + (c % TILE);
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

/* One time step of rows <= 3 rows over the hidden units [c0, c1) (multiples of 8). */
T256 static void step_small256(const gru_cell *m, const float *x, long T, long t, int rows, int c0, int c1,
                               const float *hA, float *hB, float *sum, int avg) {
    for (int c = c0; c < c1; c += 8) tile256(m, rows, c, x, T, t, hA, hB, sum, avg);
}

T256 static void step_avx2(const gru_cell *m, const float *x, long T, long t, int rows,
                           const float *hA, float *hB, float *sum, int avg) {
    const int Hp = m->Hp, F = m->F;
    for (int c = 0; c < Hp; c += 8) {
        int i0 = 0;
        for (; i0 + 3 <= rows; i0 += 3)
            tile256(m, 3, c, x + (size_t)i0 * T * F, T, t, hA + (size_t)i0 * Hp, hB + (size_t)i0 * Hp,
                    sum + (size_t)i0 * Hp, avg);
        if (rows - i0 == 2)
            tile256(m, 2, c, x + (size_t)i0 * T * F, T, t, hA + (size_t)i0 * Hp, hB + (size_t)i0 * Hp,
                    sum + (size_t)i0 * Hp, avg);
        else if (rows - i0 == 1)
            tile256(m, 1, c, x + (size_t)i0 * T * F, T, t, hA + (size_t)i0 * Hp, hB + (size_t)i0 * Hp,
                    sum + (size_t)i0 * Hp, avg);
    }
}

/* linear_before_reset=0, phase 1, M rows (<= 3) x the 8 units at column c: z, x.Wn and r * h. */
I256 void tile256_zr(const gru_cell *m, int M, int c, const float *x, long T, long t, const float *hA,
                     float *zb, float *xnb, float *rh) {
    const int F = m->F, H = m->H, Hp = m->Hp, K = F + H;
    __m256 az[3], ar[3], axn[3], xz[3], xr[3];
#pragma GCC unroll 3
    for (int i = 0; i < M; i++) { az[i] = ar[i] = axn[i] = _mm256_setzero_ps(); }
    const float *w0 = m->wpack + (size_t)(c / TILE) * K * 3 * TILE + (c % TILE);
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

#define ZR256(M_) tile256_zr(m, M_, c, x + (size_t)i0 * T * F, T, t, hA + (size_t)i0 * Hp, zb + (size_t)i0 * Hp, \
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

T256 static void step0_avx2(const gru_cell *m, const float *x, long T, long t, int rows, const float *hA,
                            float *hB, float *sum, int avg, float *zb, float *xnb, float *rh) {
    const int Hp = m->Hp, F = m->F;
    for (int c = 0; c < Hp; c += 8) ROWS_IN_THREES(ZR256);
    for (int c = 0; c < Hp; c += 8) ROWS_IN_THREES(N256);
}
#endif /* GRU_X86 */

/* ------------------------------------------------------------------ one block of rows, all layers */
/* One time step of one direction, all hidden units, in the model's ISA. tmp: 3 planes (rows, Hp)
 * for lbr=0. */
static void step(int isa, int lbr, const gru_cell *c, const float *x, long T, long t, int rows,
                 const float *hA, float *hB, float *sum, int avg, float *tmp) {
    const size_t plane = (size_t)rows * c->Hp;
    float *zb = tmp, *xnb = tmp + plane, *rh = tmp + 2 * plane;
#if GRU_X86
    if (isa == ISA_AVX512) {
        if (lbr) step_avx512(c, x, T, t, rows, hA, hB, sum, avg);
        else step0_avx512(c, x, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
        return;
    }
    if (isa == ISA_AVX2) {
        if (lbr) step_avx2(c, x, T, t, rows, hA, hB, sum, avg);
        else step0_avx2(c, x, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
        return;
    }
#endif
    (void)isa;
    if (lbr) step_generic(c, x, T, t, rows, 0, c->Hp, hA, hB, sum, avg);
    else step0_generic(c, x, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
}

/* Direction d of layer ly over all T steps for a block of rows. in: (rows, T, cell F). planes: 3
 * planes of (rows, Hp): the state ping-pong and the running sum, then (lbr=0) 3 for step's two
 * phases. dst: the next layer's input
 * (rows, T, out_w) this direction writes its columns d*H.. of, or NULL (last layer). Returns the
 * plane holding the last state, or the sum when avg. */
static float *run_direction(const gru_model *m, const gru_layer *ly, int d, const float *in, long T, int rows,
                            float *planes, float *dst, int out_w, int avg, float *hist) {
    const gru_cell *c = &ly->cell[d];
    const int Hp = c->Hp, H = c->H;
    const size_t plane = (size_t)rows * Hp;
    float *hA = planes, *hB = planes + plane, *sum = planes + 2 * plane;
    const int in_time_order = avg && ly->reverse[d] && !ly->flip[d];  /* hist: (T, rows, Hp) */
    memset(hA, 0, sizeof(float) * plane);
    memset(sum, 0, sizeof(float) * plane);
    for (long s = 0; s < T; s++) {
        const long t = ly->reverse[d] ? T - 1 - s : s;
        step(m->isa, ly->lbr, c, in, T, t, rows, hA, hB, sum, avg && !in_time_order, planes + 3 * plane);
        if (dst) {
            const long pos = ly->flip[d] ? T - 1 - t : t;
            for (int i = 0; i < rows; i++)
                memcpy(dst + ((size_t)i * T + pos) * out_w + (size_t)d * H, hB + (size_t)i * Hp, sizeof(float) * H);
        }
        if (in_time_order) memcpy(hist + (size_t)t * plane, hB, sizeof(float) * plane);
        float *tmp = hA; hA = hB; hB = tmp;
    }
    if (in_time_order)
        for (long t = 0; t < T; t++)
            for (size_t k = 0; k < plane; k++) sum[k] += hist[(size_t)t * plane + k];
    return avg ? sum : hA;
}

/* x (rows, T, F) -> out (rows,). scratch: (rows, scratch_w) floats; seq: the sequence buffers
 * between layers, (L > 2 ? 2 : 1) x (rows, T, seq_w) (unused for one layer). */
static void run_block(const gru_model *m, const float *x, long T, int rows, float *out, float *scratch,
                      float *seq, float *hist) {
    const float *in = x;
    const float *fin[2] = {NULL, NULL};
    for (int l = 0; l < m->L; l++) {
        const gru_layer *ly = &m->layer[l];
        const int last = l == m->L - 1, avg = last && m->head == HEAD_AVG;
        float *dst = last ? NULL : seq + (size_t)(l & 1) * rows * T * m->seq_w;
        const size_t dir_planes = (ly->lbr ? 3 : 6) * (size_t)rows * ly->cell[0].Hp;
        for (int d = 0; d < ly->D; d++)
            fin[d] = run_direction(m, ly, d, in, T, rows, scratch + d * dir_planes, dst, ly->D * ly->H, avg, hist);
        in = dst;
    }
    head_rows(m, fin, rows, T, out);
}

/* ------------------------------------------------------------------ the blocks of one call */
typedef struct {
    const gru_model *m;
    const float *x;
    long T, N;
    float *out;
    int block_rows;       /* the largest block's rows */
    long n_blocks;
    volatile long next;   /* next block to take (atomic) */
    volatile int nonfinite; /* set when a scaled input value is NaN or infinite */
    struct gru_split *split; /* non-NULL: a one- or two-row job split by hidden units (run_split) */
} gru_job;

/* Take blocks until none is left. scratch (scratch_floats): the state planes, the block's scaled
 * input (rows, T, F), then the sequence buffers between stacked layers. */
static void run_blocks(gru_job *job, float *scratch) {
    const gru_model *m = job->m;
    float *xs = scratch + (size_t)job->block_rows * m->scratch_w;
    float *seq = xs + (size_t)job->block_rows * job->T * m->F;
    float *hist = seq + (size_t)(m->L > 2 ? 2 : m->L - 1) * job->block_rows * job->T * m->seq_w;
    for (;;) {
        long b = __atomic_fetch_add(&job->next, 1, __ATOMIC_RELAXED);
        if (b >= job->n_blocks) break;
        long r0 = b * job->N / job->n_blocks;  /* block b: rows [b N / n, (b + 1) N / n), sizes within 1 */
        int rows = (int)((b + 1) * job->N / job->n_blocks - r0);
        if (scale_rows(m, job->x + (size_t)r0 * job->T * m->F, xs, (size_t)rows * job->T))
            __atomic_store_n(&job->nonfinite, 1, __ATOMIC_RELAXED);  /* the caller discards the output */
        run_block(m, xs, job->T, rows, job->out + r0, scratch, seq, hist);  /* xs: (rows, T, F) scaled, next to h */
    }
}

/* floats of scratch one thread needs: the state planes (rows, scratch_w), the scaled input
 * (rows, T, F), for stacked layers one or two sequences (rows, T, seq_w), and when hist_w the
 * last layer's states (T, rows, hist_w) */
static size_t scratch_floats(const gru_model *m, int block_rows, long T) {
    const size_t seqs = m->L > 2 ? 2 : (size_t)(m->L - 1);
    return (size_t)block_rows * ((size_t)m->scratch_w + (size_t)T * m->F + seqs * (size_t)T * m->seq_w +
                                 (size_t)T * m->hist_w);
}

/* ------------------------------------------------------------------ one or two rows on two threads
 * A batch of one or two rows cannot be cut into row blocks, and its weights (3 (F + H) Hp floats,
 * 55 KB for F = 8, H = 64) do not fit one core's L1: every step streams them from L2. Two threads
 * that each own half of the hidden units keep their half in their own L1 and meet once per step
 * (each needs the other's half of h for the next step). The per-unit arithmetic is the same, so
 * the numbers are bit-identical to one thread. Used only when the pool's worker is awake
 * (spinning after an earlier call): waking a sleeping thread costs more than the step saves. */
typedef struct { volatile long step; char pad[64 - sizeof(long)]; } gru_step_flag;

typedef struct gru_split {
    const gru_model *m;
    const gru_cell *c;    /* the model's one layer and direction (split_ok) */
    int reverse, avg;
    const float *x;       /* (rows, T, F) scaled */
    long T;
    int rows, c_split;    /* units [0, c_split) on the caller's thread, [c_split, Hp) on the worker */
    float *hA, *hB, *sum; /* (rows, Hp) each, shared */
    gru_step_flag done[2] __attribute__((aligned(64)));  /* steps finished by each side */
} gru_split;

/* The models the split runs: one layer of one direction with linear_before_reset=1, >= 2 tiles. */
static int split_ok(const gru_model *m) {
    return m->L == 1 && m->layer[0].D == 1 && m->layer[0].lbr && m->layer[0].cell[0].Hp >= 2 * TILE && !m->hist_w;
}

static void step_cols(int isa, const gru_cell *m, const float *x, long T, long t, int rows, int c0, int c1,
                      const float *hA, float *hB, float *sum, int avg) {
#if GRU_X86
    if (isa == ISA_AVX512) { step_small512(m, x, T, t, rows, c0 / TILE, c1 / TILE, hA, hB, sum, avg); return; }
    if (isa == ISA_AVX2) { step_small256(m, x, T, t, rows, c0, c1, hA, hB, sum, avg); return; }
#endif
    (void)isa;
    step_generic(m, x, T, t, rows, c0, c1, hA, hB, sum, avg);
}

static inline void cpu_relax(void);

/* This side's half of every step; returns the plane the head reads: the sum when avg, else the
 * last state (its own swapped pointers say which buffer that is). */
static const float *run_split(gru_split *s, int me) {
    int c0 = me ? s->c_split : 0, c1 = me ? s->c->Hp : s->c_split;
    float *hA = s->hA, *hB = s->hB;
    for (long t = 0; t < s->T; t++) {
        step_cols(s->m->isa, s->c, s->x, s->T, s->reverse ? s->T - 1 - t : t, s->rows, c0, c1, hA, hB, s->sum, s->avg);
        __atomic_store_n(&s->done[me].step, t + 1, __ATOMIC_RELEASE);
        /* the other half of h_{t+1}; yield now and then in case the other thread lost its core */
        for (int i = 1; __atomic_load_n(&s->done[1 - me].step, __ATOMIC_ACQUIRE) <= t; i++) {
            cpu_relax();
            if ((i & 1023) == 0) sched_yield();
        }
        float *tmp = hA; hA = hB; hB = tmp;
    }
    return s->avg ? s->sum : hA;
}

/* ------------------------------------------------------------------ thread pool */
#define MAX_WORKERS 63
#define SPIN_NS 50000L      /* a worker spins at most 50 us for the next job, then sleeps on a condition variable */

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;   /* guards the fields below */
static pthread_cond_t pool_wake = PTHREAD_COND_INITIALIZER;
static pthread_cond_t pool_done = PTHREAD_COND_INITIALIZER;
static pthread_mutex_t pool_busy = PTHREAD_MUTEX_INITIALIZER; /* one job in the pool at a time */
static int pool_workers = 0;
static volatile long pool_generation = 0;
static volatile long pool_pending = 0;   /* workers still in the current job */
static gru_job *volatile pool_job = NULL;
static int pool_active = 0;              /* workers taking part in the current job */
static int pool_atfork_set = 0;

static volatile int worker_spinning[MAX_WORKERS];  /* 1 + its CPU while worker i spins for the next job, else 0 */

/* Whether the split pays is measured, not assumed: on a virtual machine the two CPUs may share one
 * physical core, for a while or for good, and there the split took 42-50 us per row against 33 us
 * on one thread (22 us where it pays). The first eligible call times both ways (calibrate_split);
 * after that every split call is timed, and once their running mean (ns per row-step, each sample
 * capped at 1.5x one thread's) is slower than one thread was, the process stops splitting: never
 * much slower than one thread.
 * split_choice 1: split, -1: do not, 0: not measured yet (all under pool_busy). */
static int split_choice = 0;
static double split_ns = 0.0, alone_ns = 0.0;

static void pool_after_fork_child(void) {
    /* the child has none of the parent's workers: start over */
    pthread_mutex_t mi = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t ci = PTHREAD_COND_INITIALIZER;
    pool_mu = mi; pool_busy = mi; pool_wake = ci; pool_done = ci;
    pool_workers = 0; pool_pending = 0; pool_job = NULL; pool_generation = 0;
    split_choice = 0; split_ns = alone_ns = 0.0;
    memset((void *)worker_spinning, 0, sizeof(worker_spinning));
}

static inline void cpu_relax(void) {
#if GRU_X86
    _mm_pause();
#endif
}

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* spin until *flag != value or SPIN_NS passed (the time is read every 64 pauses); meanwhile
 * *where holds 1 + the CPU this thread spins on, and 0 again on return */
static void spin_while_equal(volatile long *flag, long value, volatile int *where) {
    long deadline = now_ns() + SPIN_NS;
    __atomic_store_n(where, 1 + sched_getcpu(), __ATOMIC_RELEASE);
    for (int i = 1; __atomic_load_n(flag, __ATOMIC_ACQUIRE) == value; i++) {
        cpu_relax();
        if ((i & 63) == 0) {
            if (now_ns() > deadline) break;
            sched_yield();  /* a thread of ours sharing this core (an oversubscribed machine) runs first */
            __atomic_store_n(where, 1 + sched_getcpu(), __ATOMIC_RELEASE);
        }
    }
    __atomic_store_n(where, 0, __ATOMIC_RELEASE);
}

static long worker_start_gen[MAX_WORKERS];

static void *worker_main(void *arg) {
    int id = (int)(intptr_t)arg;
    long seen = worker_start_gen[id];  /* the generation when it was created: only later jobs are new */
    float *scratch = NULL;
    size_t scratch_size = 0;
    for (;;) {
        spin_while_equal(&pool_generation, seen, &worker_spinning[id]);
        pthread_mutex_lock(&pool_mu);
        while (pool_generation == seen) pthread_cond_wait(&pool_wake, &pool_mu);
        seen = pool_generation;
        gru_job *job = pool_job;
        int take_part = id < pool_active;
        pthread_mutex_unlock(&pool_mu);
        if (take_part && job && job->split) {
            (void)run_split(job->split, 1);
        } else if (take_part && job) {
            size_t need = scratch_floats(job->m, job->block_rows, job->T);
            if (!scratch || scratch_size < need) {
                free(scratch);
                scratch = (float *)aligned(sizeof(float) * need);
                scratch_size = scratch ? need : 0;
            }
            if (scratch) run_blocks(job, scratch);
        }
        pthread_mutex_lock(&pool_mu);
        if (--pool_pending == 0) pthread_cond_signal(&pool_done);
        pthread_mutex_unlock(&pool_mu);
    }
    return NULL;
}

/* grow the pool to n workers (caller holds pool_busy) */
static int pool_grow(int n) {
    if (!pool_atfork_set) { pthread_atfork(NULL, NULL, pool_after_fork_child); pool_atfork_set = 1; }
    while (pool_workers < n && pool_workers < MAX_WORKERS) {
        pthread_t th;
        pthread_attr_t attr;
        worker_start_gen[pool_workers] = pool_generation;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&th, &attr, worker_main, (void *)(intptr_t)pool_workers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pthread_mutex_lock(&pool_mu);
        pool_workers++;
        pthread_mutex_unlock(&pool_mu);
    }
    return pool_workers;
}

/* A new generation for every worker: `job` for the first `helpers`, none for the rest (or for all,
 * job NULL). Caller holds pool_mu, with no worker still on the previous generation. */
static void publish_locked(gru_job *job, int helpers) {
    pool_job = job;
    pool_active = job ? helpers : 0;
    pool_pending = pool_workers;
    __atomic_add_fetch(&pool_generation, 1, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&pool_wake);
}

/* Hand `job` to the first `helpers` workers (caller holds pool_busy). */
static void pool_post(gru_job *job, int helpers) {
    pthread_mutex_lock(&pool_mu);
    while (pool_pending > 0) pthread_cond_wait(&pool_done, &pool_mu);  /* workers still on a wake-up */
    publish_locked(job, helpers);
    pthread_mutex_unlock(&pool_mu);
}

/* Wake the workers without a job, unless they are still on an earlier one (never blocks). */
static void pool_nudge(void) {
    pthread_mutex_lock(&pool_mu);
    if (pool_pending == 0) publish_locked(NULL, 0);
    pthread_mutex_unlock(&pool_mu);
}

/* Wait until every worker is done with the posted job (caller holds pool_busy): spin briefly
 * while they finish their last block, then sleep. */
static void pool_wait(void) {
    long deadline = now_ns() + SPIN_NS;
    for (int i = 1; __atomic_load_n(&pool_pending, __ATOMIC_ACQUIRE) > 0; i++) {
        cpu_relax();
        if ((i & 63) == 0) {
            if (now_ns() > deadline) break;
            sched_yield();
        }
    }
    pthread_mutex_lock(&pool_mu);
    while (pool_pending > 0) pthread_cond_wait(&pool_done, &pool_mu);
    pool_job = NULL;
    pthread_mutex_unlock(&pool_mu);
}

static int split_policy = 0;      /* 0: as above; 1: always (tests); -1: never */
static long pool_last_small = 0;  /* when the last one- or two-row call ended (ns; under pool_busy) */
static volatile long split_jobs = 0;
#define CALIBRATION_CALLS 64      /* the first eligible call runs both ways this many times (~4 ms) */
void gru_set_split_policy(int policy) { split_policy = policy; }
long gru_split_jobs(void) { return split_jobs; }
int gru_split_choice(void) { return split_choice; }

/* One or two rows, hidden units split with the spinning worker (caller holds pool_busy). */
static void run_split_job(gru_job *job, float *scratch) {
    const gru_model *m = job->m;
    const int rows = (int)job->N, Hp = m->layer[0].cell[0].Hp, avg = m->head == HEAD_AVG;
    gru_split sp;
    memset(&sp, 0, sizeof(sp));
    sp.m = m; sp.c = &m->layer[0].cell[0]; sp.reverse = m->layer[0].reverse[0]; sp.avg = avg;
    sp.T = job->T; sp.rows = rows;
    sp.hA = scratch; sp.hB = scratch + (size_t)rows * Hp; sp.sum = scratch + 2 * (size_t)rows * Hp;
    float *xs = scratch + 3 * (size_t)rows * Hp;
    if (scale_rows(m, job->x, xs, (size_t)rows * job->T)) job->nonfinite = 1;
    sp.x = xs;
    sp.c_split = (Hp / TILE) / 2 * TILE;  /* the worker takes the larger half; the caller also does the head */
    memset(sp.hA, 0, sizeof(float) * rows * Hp);
    memset(sp.sum, 0, sizeof(float) * rows * Hp);
    job->split = &sp;
    pool_post(job, 1);
    const float *fin[2] = {run_split(&sp, 0), NULL};
    head_rows(m, fin, rows, job->T, job->out);
    pool_wait();
}

/* Run `job` (one or two rows) split and on this thread alone, alternately, CALIBRATION_CALLS times
 * each after a first round, and say which took less time in all (caller holds pool_busy; the worker
 * exists). Both ways write the same bits to job->out. */
static int calibrate_split(gru_job *job, float *scratch) {
    long split = 0, alone = 0;  /* total ns of each way, the first round (the worker's wake-up) left out */
    const double rowsteps = (double)CALIBRATION_CALLS * (double)job->N * (double)job->T;
    for (int i = 0; i <= CALIBRATION_CALLS; i++) {
        const long t0 = now_ns();
        run_split_job(job, scratch);
        const long t1 = now_ns();
        job->split = NULL;
        run_blocks(job, scratch);
        const long t2 = now_ns();
        job->next = 0;
        if (i > 0) { split += t1 - t0; alone += t2 - t1; }
    }
    split_ns = (double)split / rowsteps;
    alone_ns = (double)alone / rowsteps;
    return split < alone ? 1 : -1;
}

/* ------------------------------------------------------------------ entry point */
/* x (N, T, F) float32 C-contiguous -> out (N,) probabilities. nthreads: threads in this call
 * (the caller's thread included); when the pool is busy with another caller's job, this call runs
 * on the caller's thread alone (same numbers). x is the model input: the kernel scales it as the
 * graph does (gru_set_input_scaling) into its own buffer and never writes to x. Returns 0; 1 when a
 * scaled input value is NaN or infinite (out is then meaningless); -1 on bad arguments / no memory. */
int gru_run(void *handle, const float *x, long N, long T, float *out, int nthreads) {
    const gru_model *m = (const gru_model *)handle;
    if (!m || !x || !out || N < 0 || T < 1) return -1;
    if (N == 0) return 0;
    gru_job job;
    job.m = m; job.x = x; job.T = T; job.N = N; job.out = out; job.next = 0; job.nonfinite = 0; job.split = NULL;
    if (nthreads < 1) nthreads = 1;
    /* blocks: at most BLOCK_ROWS rows, a multiple of nthreads in number, sizes within one row of
     * each other (1024 rows on 2 threads: 44 blocks of 23-24 rows, 22 per thread) */
    long n_blocks = (N + BLOCK_ROWS - 1) / BLOCK_ROWS;
    if (nthreads > 1 && N >= 2L * nthreads) n_blocks = (n_blocks + nthreads - 1) / nthreads * nthreads;
    if (n_blocks > N) n_blocks = N;
    int rows = (int)((N + n_blocks - 1) / n_blocks);
    job.block_rows = rows;
    job.n_blocks = n_blocks;
    int helpers = nthreads - 1;
    if (helpers > job.n_blocks - 1) helpers = (int)job.n_blocks - 1;
    float *scratch = (float *)aligned(sizeof(float) * scratch_floats(m, rows, T));
    if (!scratch) return -1;
    int split = nthreads > 1 && N <= 2 && split_ok(m);
    if (split && pthread_mutex_trylock(&pool_busy) == 0) {
        /* only with the worker spinning on another CPU: a sleeping one costs a wake-up, one on
         * this CPU would take turns with us at every step */
        if (split_policy == 0 && split_choice == 0 && pool_grow(1) >= 1) {
            split_choice = calibrate_split(&job, scratch);
            pool_last_small = now_ns();
            pthread_mutex_unlock(&pool_busy);
            free(scratch);
            return job.nonfinite ? 1 : 0;
        }
        int cpu = sched_getcpu(), wcpu = __atomic_load_n(&worker_spinning[0], __ATOMIC_ACQUIRE) - 1;
        if (split_policy > 0) pool_grow(1);
        if (pool_workers >= 1 && (split_policy > 0 ||
                                  (split_policy == 0 && split_choice > 0 && wcpu >= 0 && cpu >= 0 && wcpu != cpu))) {
            __atomic_add_fetch(&split_jobs, 1, __ATOMIC_RELAXED);
            const long t0 = now_ns();
            run_split_job(&job, scratch);
            /* a slow phase, not one interrupted call: samples capped at 1.5x one thread's time, a
             * running mean over about 32 calls */
            const double v = (double)(now_ns() - t0) / ((double)N * (double)T);
            split_ns += (((v < 1.5 * alone_ns) ? v : 1.5 * alone_ns) - split_ns) / 32.0;
            if (split_policy == 0 && split_ns > alone_ns) split_choice = -1;  /* it stopped paying */
        } else {
            run_blocks(&job, scratch);
            /* calls coming back to back (the last one ended less than 200 us ago) and the worker
             * asleep: wake it, so that the next call finds it spinning */
            long now = now_ns();
            if (split_policy == 0 && split_choice > 0 && now - pool_last_small < 4 * SPIN_NS && pool_grow(1) >= 1 &&
                wcpu < 0)
                pool_nudge();
        }
        pool_last_small = now_ns();
        pthread_mutex_unlock(&pool_busy);
    } else if (!split && helpers > 0 && pthread_mutex_trylock(&pool_busy) == 0) {
        helpers = pool_grow(helpers) < helpers ? pool_workers : helpers;
        pool_post(&job, helpers);
        run_blocks(&job, scratch);
        pool_wait();
        pthread_mutex_unlock(&pool_busy);
    } else {
        run_blocks(&job, scratch);
    }
    free(scratch);
    return job.nonfinite ? 1 : 0;
}
