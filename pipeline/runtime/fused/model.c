/* The model: CPU features, weight packing, the model input's scaling, Dense layers and Embedding table.
 *
 * Owns: gru_abi_version, gru_isa_supported (the CPU features each variant needs), gru_create /
 * gru_destroy (the ONNX weights packed into column tiles, see gru_kernel.h "Layout"; the head's
 * Gemm weights and activation), gru_softmax_kind (which MLAS softmax kernels the head reproduces),
 * gru_set_input_scaling and gru_scale_rows (the graph's Sub/Div/Mul/Add by per-feature constants,
 * the same float32 operations, with a NaN/infinity scan of the scaled values), gru_set_dense (Dense
 * layers between the pooling and the head), gru_set_embedding and gru_embed_rows (token models: the
 * ids' table rows), gru_embedding_fold, gru_fold_max_bytes and gru_fold_ids (token models folded into
 * layer 0: each token's x.W precomputed), gru_test_tanh (the tests' entry to the head's tanh, MLAS'
 * TanhKernelFma3). Includes gru_kernel.h, ort_activations.h. Reads: the arrays the caller passes.
 * Writes: the model it allocates.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "gru_kernel.h"
#include "ort_activations.h"

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
void *gru_aligned(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 64) != 0) return NULL;
    memset(p, 0, bytes ? bytes : 64);
    return p;
}

static void free_cell(gru_cell *c) {
    free(c->wpack); free(c->bz); free(c->br); free(c->bxn); free(c->bhn); free(c->xw);
}

void gru_destroy(void *handle) {
    gru_model *m = (gru_model *)handle;
    if (!m) return;
    if (m->layer)
        for (int l = 0; l < m->L; l++)
            for (int d = 0; d < 2; d++) free_cell(&m->layer[l].cell[d]);
    free(m->layer); free(m->head_w); free(m->head_b); free(m->scale_c); free(m->embed);
    for (int i = 0; i < m->n_dense; i++) { free(m->dense_w[i]); free(m->dense_b[i]); }
    free(m);
}

/* Pack one direction: W (3H, F), R (3H, H), B (6H,) in ONNX order (gates z, r, n; B = [Wb, Rb]). */
static int pack_cell(gru_cell *c, int F, int H, const float *W, const float *R, const float *B, int lbr) {
    c->F = F; c->H = H; c->Hp = (H + TILE - 1) / TILE * TILE;
    int Hp = c->Hp, K = F + H;
    c->wpack = (float *)gru_aligned(sizeof(float) * (size_t)(Hp / TILE) * K * 3 * TILE);
    c->bz = (float *)gru_aligned(sizeof(float) * Hp); c->br = (float *)gru_aligned(sizeof(float) * Hp);
    c->bxn = (float *)gru_aligned(sizeof(float) * Hp); c->bhn = (float *)gru_aligned(sizeof(float) * Hp);
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
 *   {H, D, linear_before_reset (1 or 0), reverse0, flip0, reverse1, flip1, merge (MERGE_*)}
 * (reverse_d: direction d runs backwards in time; flip_d: its output sequence is handed on reversed
 * in time). params: per layer, the ONNX initializers one after the other: W (D, 3H, F_l),
 * R (D, 3H, H), B (D, 6H), where F_0 = F and F_l = the values layer l-1 hands on (D*H, or H when
 * merged). head_w: (the last layer's values, n_out) (the Gemm's B, not transposed), head_b: (n_out,); act: ACT_SIGMOID (each output) or
 * ACT_SOFTMAX (over the n_out outputs of a row). Returns NULL on bad arguments, an unsupported ISA
 * or no memory. */
void *gru_create(int F, int L, const int *info, const float *params, int head, const float *head_w,
                 const float *head_b, int n_out, int act, int isa) {
    if (F < 1 || L < 1 || !info || !params || !head_w || !head_b || (head != HEAD_LAST && head != HEAD_AVG && head != HEAD_MAX) ||
        n_out < 1 || (act != ACT_SIGMOID && act != ACT_SOFTMAX) || !gru_isa_supported(isa))
        return NULL;
    for (int l = 0; l < L; l++) {
        const int *in = info + (size_t)l * LAYER_INFO;
        if (in[0] < 1 || (in[1] != 1 && in[1] != 2) || (in[2] != 0 && in[2] != 1) || in[7] < MERGE_CONCAT ||
            in[7] > MERGE_AVE || (in[7] != MERGE_CONCAT && in[1] != 2))
            return NULL;
    }
    gru_model *m = (gru_model *)calloc(1, sizeof(gru_model));
    if (!m) return NULL;
    m->F = F; m->L = L; m->head = head; m->isa = isa; m->n_out = n_out; m->act = act;
    m->softmax_kind = gru_softmax_kind(NULL, -1);
    m->layer = (gru_layer *)calloc((size_t)L, sizeof(gru_layer));
    if (!m->layer) { gru_destroy(m); return NULL; }
    const float *p = params;
    int Fl = F;
    for (int l = 0; l < L; l++) {
        const int *in = info + (size_t)l * LAYER_INFO;
        gru_layer *ly = &m->layer[l];
        ly->H = in[0]; ly->D = in[1]; ly->lbr = in[2]; ly->merge = in[7];
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
        const int out_w = ly->merge == MERGE_CONCAT ? D * H : H;  /* values per step handed on */
        if (l < L - 1 && out_w > m->seq_w) m->seq_w = out_w;
        Fl = out_w;
    }
    const gru_layer *last = &m->layer[L - 1];
    for (int d = 0; d < last->D; d++)
        if ((head == HEAD_AVG && last->reverse[d] && !last->flip[d]) ||
            (head != HEAD_LAST && last->merge != MERGE_CONCAT))
            m->hist_w = last->cell[0].Hp;
    m->head_w = (float *)gru_aligned(sizeof(float) * (size_t)Fl * n_out);
    m->head_b = (float *)gru_aligned(sizeof(float) * (size_t)n_out);
    if (!m->head_w || !m->head_b) { gru_destroy(m); return NULL; }
    memcpy(m->head_w, head_w, sizeof(float) * (size_t)Fl * n_out);
    m->head_in_w = Fl;
    memcpy(m->head_b, head_b, sizeof(float) * (size_t)n_out);
    return m;
}

/* The MLAS softmax kernels the head reproduces (MLAS_SOFTMAX_*). kind < 0: only return them; else
 * set them (tests: the other CPU's kernels). handle NULL: what onnxruntime's MLAS picks on this CPU
 * (platform.cpp: the AVX512F sum-exp kernel where the CPU and OS have AVX512F, else FMA3). Returns
 * the kind, or -1 on a bad kind. */
int gru_softmax_kind(void *handle, int kind) {
    gru_model *m = (gru_model *)handle;
    if (kind > MLAS_SOFTMAX_AVX512F) return -1;
    if (!m) {
#if GRU_X86
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") ? MLAS_SOFTMAX_AVX512F : MLAS_SOFTMAX_FMA3;
#else
        return MLAS_SOFTMAX_FMA3;
#endif
    }
    if (kind >= 0) m->softmax_kind = kind;
    return m->softmax_kind;
}

/* The model input's per-feature scaling (x op c, in order, float32: the same operations as the
 * graph's Sub/Div/Mul/Add nodes; the library is built with -ffp-contract=off, so a Mul then an Add
 * is never fused into one rounding). ops (n,) SCALE_*, consts (n, F). Returns 0, or -1 (bad arguments,
 * no memory) with the model's scaling unchanged. */
int gru_set_input_scaling(void *handle, int n, const int *ops, const float *consts) {
    gru_model *m = (gru_model *)handle;
    if (!m || n < 0 || n > MAX_SCALE_OPS || (n && (!ops || !consts))) return -1;
    for (int i = 0; i < n; i++)
        if (ops[i] < SCALE_SUB || ops[i] > SCALE_ADD) return -1;
    float *c = NULL;
    if (n) {
        c = (float *)gru_aligned(sizeof(float) * (size_t)n * m->F);
        if (!c) return -1;
        memcpy(c, consts, sizeof(float) * (size_t)n * m->F);
    }
    for (int i = 0; i < n; i++) m->scale_op[i] = ops[i];
    free(m->scale_c);
    m->scale_c = c;
    m->n_scale = n;
    return 0;
}

/* Dense layers between the pooling and the head's Gemm, input side first: units_act (n, 2) {units,
 * DENSE_*}; params: each layer's W (inputs, units) then b (units,), one layer after the other, a
 * layer's inputs being the previous one's units (the first's: the last GRU layer's D*H), then the
 * head's Gemm weights (units of the last Dense, k), which replace the ones gru_create took. Returns
 * 0, or -1 (bad arguments, no memory) with the model unchanged. Call once, before the first run. */
int gru_set_dense(void *handle, int n, const int *units_act, const float *params) {
    gru_model *m = (gru_model *)handle;
    if (!m || m->n_dense || n < 0 || n > MAX_DENSE || (n && (!units_act || !params))) return -1;
    const gru_layer *last = &m->layer[m->L - 1];
    int in = last->merge == MERGE_CONCAT ? last->D * last->H : last->H, widest = in;
    const float *p = params;
    float *w[MAX_DENSE] = {0}, *b[MAX_DENSE] = {0};
    int ok = 1;
    for (int i = 0; i < n && ok; i++) {
        const int units = units_act[2 * i], act = units_act[2 * i + 1];
        if (units < 1 || act < DENSE_LINEAR || act > DENSE_TANH) { ok = 0; break; }
        w[i] = (float *)gru_aligned(sizeof(float) * (size_t)in * units);
        b[i] = (float *)gru_aligned(sizeof(float) * (size_t)units);
        if (!w[i] || !b[i]) { ok = 0; break; }
        memcpy(w[i], p, sizeof(float) * (size_t)in * units);
        memcpy(b[i], p + (size_t)in * units, sizeof(float) * (size_t)units);
        p += (size_t)(in + 1) * units;
        in = units;
        if (units > widest) widest = units;
    }
    float *hw = ok && n ? (float *)gru_aligned(sizeof(float) * (size_t)in * m->n_out) : NULL;
    if (!ok || (n && !hw)) {
        for (int i = 0; i < n; i++) { free(w[i]); free(b[i]); }
        free(hw);
        return -1;
    }
    if (n) {
        memcpy(hw, p, sizeof(float) * (size_t)in * m->n_out);
        free(m->head_w);
        m->head_w = hw;
    }
    for (int i = 0; i < n; i++) {
        m->dense_w[i] = w[i]; m->dense_b[i] = b[i];
        m->dense_out[i] = units_act[2 * i]; m->dense_act[i] = units_act[2 * i + 1];
    }
    m->n_dense = n;
    m->head_in_w = widest;
    return 0;
}

/* A token model: its input is ids (N, T) int64 and each id's row of table (vocab, F) float32 (the
 * graph's Gather of the Embedding table, exact) is the first GRU layer's input. Returns 0, or -1 (bad
 * arguments, no memory, already set). */
int gru_set_embedding(void *handle, long vocab, const float *table) {
    gru_model *m = (gru_model *)handle;
    if (!m || m->embed || vocab < 1 || !table || m->n_scale) return -1;
    float *e = (float *)gru_aligned(sizeof(float) * (size_t)vocab * m->F);
    if (!e) return -1;
    memcpy(e, table, sizeof(float) * (size_t)vocab * m->F);
    m->embed = e;
    m->vocab = vocab;
    (void)gru_embedding_fold(m, 1);  /* within FOLD_MAX_BYTES: fold; else (or out of memory) gather */
    return 0;
}

/* xw (vocab, Hp/16, 3, 16) = each token's Embedding row . W of cell c: per unit and gate the sum over
 * k in order from 0 of fused multiply-adds, from 0.0f, as every step variant sums x.W (fmaf is one
 * rounding however it is emitted, so any ISA builds the same table). */
static inline __attribute__((always_inline)) void fold_body(const gru_cell *c, const float *embed, long vocab,
                                                            float *xw) {
    const int F = c->F, K = F + c->H, NJ = c->Hp / TILE;
    for (long v = 0; v < vocab; v++) {
        const float *e = embed + (size_t)v * F;
        for (int jt = 0; jt < NJ; jt++) {
            float acc[3 * TILE] = {0};  /* (3, 16): z, r, n */
            const float *w = c->wpack + (size_t)jt * K * 3 * TILE;  /* (F + H, 3, 16): the first F rows */
            for (int k = 0; k < F; k++)
                for (int l = 0; l < 3 * TILE; l++) acc[l] = fmaf(e[k], w[(size_t)k * 3 * TILE + l], acc[l]);
            memcpy(xw + ((size_t)v * NJ + jt) * 3 * TILE, acc, sizeof acc);
        }
    }
}

static void fold_generic(const gru_cell *c, const float *embed, long vocab, float *xw) { fold_body(c, embed, vocab, xw); }
#if GRU_X86
__attribute__((target("avx2,fma"))) static void fold_fma(const gru_cell *c, const float *embed, long vocab, float *xw) {
    fold_body(c, embed, vocab, xw);
}
#endif

/* A token model's path: on 1 fold the Embedding into layer 0 (each direction's table of every token's
 * x.W, which its steps then read instead of summing x.W: the same bits) when the tables take at most
 * FOLD_MAX_BYTES; on 0 drop the tables (gather the rows, then project them each step); on < 0 only
 * ask. Returns 1 when folded, 0 when not, -1 on bad arguments. Not while the model runs. */
int gru_embedding_fold(void *handle, int on) {
    gru_model *m = (gru_model *)handle;
    if (!m || !m->embed) return -1;
    gru_layer *ly = &m->layer[0];
    if (on == 0)
        for (int d = 0; d < ly->D; d++) { free(ly->cell[d].xw); ly->cell[d].xw = NULL; }
    if (on <= 0 || ly->cell[0].xw) return ly->cell[0].xw != NULL;
    const size_t floats = (size_t)m->vocab * 3 * ly->cell[0].Hp;  /* one direction's (vocab, Hp/16, 3, 16) */
    if (floats * ly->D * sizeof(float) > FOLD_MAX_BYTES) return 0;
    for (int d = 0; d < ly->D; d++) {
        float *xw = (float *)gru_aligned(sizeof(float) * floats);
        if (!xw) { (void)gru_embedding_fold(m, 0); return 0; }
#if GRU_X86
        if (gru_isa_supported(ISA_AVX2)) fold_fma(&ly->cell[d], m->embed, m->vocab, xw);
        else
#endif
            fold_generic(&ly->cell[d], m->embed, m->vocab, xw);
        ly->cell[d].xw = xw;
    }
    return 1;
}

/* FOLD_MAX_BYTES, for the tests and benches */
long gru_fold_max_bytes(void) { return (long)FOLD_MAX_BYTES; }

/* A folded token model's block input: dst (steps,) the ids as int32 (< vocab <= FOLD_MAX_BYTES / 4 / 48),
 * which the folded steps read; returns 1 if an id lies outside [0, vocab) (it is then 0). */
int gru_fold_ids(const gru_model *m, const int64_t *ids, int32_t *dst, size_t steps) {
    int bad = 0;
    for (size_t s = 0; s < steps; s++) {
        const int64_t id = ids[s];
        const int ok = id >= 0 && id < m->vocab;
        bad |= !ok;
        dst[s] = ok ? (int32_t)id : 0;
    }
    return bad;
}

/* y (n,) = the head's tanh of x (n,) (mlas_tanh1: onnxruntime's Tanh op); the tests' entry. */
void gru_test_tanh(const float *x, float *y, long n) {
    for (long i = 0; i < n; i++) y[i] = mlas_tanh1(x[i]);
}

/* dst (n steps, F) = the Embedding rows of ids; returns 1 if an id lies outside [0, vocab) (its row is
 * then zeros). */
int gru_embed_rows(const gru_model *m, const int64_t *ids, float *dst, size_t steps) {
    int bad = 0;
    for (size_t s = 0; s < steps; s++) {
        const int64_t id = ids[s];
        if (id < 0 || id >= m->vocab) { bad = 1; memset(dst + s * m->F, 0, sizeof(float) * m->F); continue; }
        memcpy(dst + s * m->F, m->embed + (size_t)id * m->F, sizeof(float) * m->F);
    }
    return bad;
}

/* dst (n steps, F) = the scaled src; returns 1 if any scaled value is NaN or infinite (a NaN or
 * infinity in src always makes its scaled value one too). */
int gru_scale_rows(const gru_model *m, const float *src, float *dst, size_t steps) {
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
