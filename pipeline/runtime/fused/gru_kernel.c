/* The entry points: one call scores a batch; its rows are cut into blocks that the caller's thread and
 * the pool's workers take in turn, and each block runs every layer, direction and time step, then the
 * head. The kernel's design, numerics and layouts: gru_kernel.h.
 *
 * Owns: gru_run (fixed length), gru_run_ids (token ids), gru_run_lens and gru_run_ids_lens (variable length,
 * float features or token ids: run_block_lens, run_direction_lens; gru_set_padding), gru_stream /
 * gru_stream_width (one chunk for each of N streams from their carried states: run_stream_block); the blocks
 * of one call (launch, gru_run_blocks, gru_scratch_floats, the calling thread's cached scratch, lens_ok); one
 * block through all layers (run_block,
 * run_direction, the Bidirectional merges merge1, max pooling); the ISA dispatch of a time step (step);
 * the head (head_rows: Dense layers, then the Gemm to k outputs and Sigmoid or MLAS' softmax, rows as
 * vector lanes; the same arithmetic for every variant). Includes gru_kernel.h, ort_activations.h,
 * pool.h. Reads the model, x / ids / lengths and stream states; writes out, the new stream states and
 * its own scratch.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gru_kernel.h"
#include "ort_activations.h"
#include "pool.h"

/* ------------------------------------------------------------------ the head */
/* The head of a block of rows: out (rows, k) = act(hv . W + b), hv = mean (sum / T) or last state of
 * each direction d of the last layer (fin[d]: (rows, Hp)), concatenated; W (D*H, k). Each output's
 * logit is its own chain of fused multiply-adds over the D*H features in order from 0.0f, then + b
 * (onnxruntime's Gemm with B packed: the sgemm kernel's in-order FMA accumulator, then the bias
 * held in C). The rows run side by side as vector lanes (tv: the inputs transposed to (D*H, rows))
 * and lanes never mix, so each row gets the bits it would get alone. Then Sigmoid (Logistic, per
 * output) or MLAS' softmax over each row. The same arithmetic for every ISA variant: only the vector
 * width and how fmaf is emitted differ (an instruction; the generic build: libm's correctly rounded
 * fmaf). Rows are lanes since streams call it for every step: one row's 64-long FMA chain at a
 * time took 0.3 us a row, more than the step itself. */
static inline __attribute__((always_inline)) void head_block_body(const gru_model *m, const float *const fin[2],
                                                                  int rows, float steps, int avg, float *out,
                                                                  float *tv, const int64_t *rl) {
    const gru_layer *ly = &m->layer[m->L - 1];
    const int k = m->n_out, Hp = ly->cell[0].Hp, H = ly->H, D = ly->merge == MERGE_CONCAT ? ly->D : 1;
    int DH = D * ly->H;
    for (int d = 0; d < D; d++)
        for (int i = 0; i < rows; i++) {
            const float *src = fin[d] + (size_t)i * Hp;
            const float si = rl ? (float)rl[i] : steps;  /* a row's own length (variable length) */
            for (int j = 0; j < H; j++) tv[(size_t)(d * H + j) * rows + i] = avg ? src[j] / si : src[j];
        }
    float acc[BLOCK_ROWS];
    float *tv2 = tv + (size_t)m->head_in_w * rows;  /* Dense layers: (units, rows), then swapped with tv */
    for (int l = 0; l < m->n_dense; l++) {
        const int U = m->dense_out[l], act = m->dense_act[l];
        const float *W = m->dense_w[l];
        for (int u = 0; u < U; u++) {
            for (int i = 0; i < rows; i++) acc[i] = 0.0f;
            for (int f = 0; f < DH; f++) {
                const float w = W[(size_t)f * U + u], *v = tv + (size_t)f * rows;
                for (int i = 0; i < rows; i++) acc[i] = fmaf(v[i], w, acc[i]);
            }
            float *o = tv2 + (size_t)u * rows;
            for (int i = 0; i < rows; i++) {
                const float y = acc[i] + m->dense_b[l][u];
                o[i] = act == DENSE_RELU ? (y > 0.0f ? y : 0.0f) : act == DENSE_SIGMOID ? logistic1(y)
                       : act == DENSE_TANH ? mlas_tanh1(y) : y;
            }
        }
        float *t = tv; tv = tv2; tv2 = t;
        DH = U;
    }
    for (int c = 0; c < k && rows == 1; c++) {  /* one row (a single stream's push): the chain in a register */
        float a = 0.0f;
        for (int f = 0; f < DH; f++) a = fmaf(tv[f], m->head_w[(size_t)f * k + c], a);
        out[c] = a + m->head_b[c];
    }
    for (int c = 0; c < k && rows > 1; c++) {
        for (int i = 0; i < rows; i++) acc[i] = 0.0f;
        for (int f = 0; f < DH; f++) {
            const float w = m->head_w[(size_t)f * k + c], *v = tv + (size_t)f * rows;
            for (int i = 0; i < rows; i++) acc[i] = fmaf(v[i], w, acc[i]);
        }
        for (int i = 0; i < rows; i++) out[(size_t)i * k + c] = acc[i] + m->head_b[c];
    }
    if (m->act == ACT_SOFTMAX)
        for (int i = 0; i < rows; i++) mlas_softmax_row(out + (size_t)i * k, k, m->softmax_kind);
    else
        for (size_t e = 0; e < (size_t)rows * k; e++) out[e] = logistic1(out[e]);
}

static void head_block_generic(const gru_model *m, const float *const fin[2], int rows, float steps, int avg,
                               float *out, float *tv, const int64_t *rl) {
    head_block_body(m, fin, rows, steps, avg, out, tv, rl);
}

#if GRU_X86
__attribute__((target("avx2,fma"))) static void head_block_avx2(const gru_model *m, const float *const fin[2],
                                                                 int rows, float steps, int avg, float *out,
                                                                 float *tv, const int64_t *rl) {
    head_block_body(m, fin, rows, steps, avg, out, tv, rl);
}

__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma"))) static void head_block_avx512(
    const gru_model *m, const float *const fin[2], int rows, float steps, int avg, float *out, float *tv,
    const int64_t *rl) {
    head_block_body(m, fin, rows, steps, avg, out, tv, rl);
}
#endif

/* out (rows, k) from fin[d] (rows, Hp): each direction's last state (or a stream's mean, or the max),
 * or its sum when avg (divided by T here). tv: 2 x (rows, head_in_w) floats of scratch. */
static void head_rows(const gru_model *m, const float *const fin[2], int rows, long T, int avg, float *out,
                      float *tv, const int64_t *rl) {
#if GRU_X86
    if (m->isa == ISA_AVX512) { head_block_avx512(m, fin, rows, (float)T, avg, out, tv, rl); return; }
    if (m->isa == ISA_AVX2) { head_block_avx2(m, fin, rows, (float)T, avg, out, tv, rl); return; }
#endif
    head_block_generic(m, fin, rows, (float)T, avg, out, tv, rl);
}

/* ------------------------------------------------------------------ one block of rows, all layers */
/* A bidirectional layer's merge of forward a and reverse b (MERGE_SUM, _MUL, _AVE), as the graph's
 * Add, Mul, or Add then Mul by 0.5 compute it. */
static inline float merge1(int op, float a, float b) {
    return op == MERGE_SUM ? a + b : op == MERGE_MUL ? a * b : (a + b) * 0.5f;
}

/* One time step of one direction, all hidden units, in the model's ISA. tmp: 3 planes (rows, Hp)
 * for lbr=0. */
static void step(int isa, int lbr, const gru_cell *c, const float *x, long T, long t, int rows,
                 const float *hA, float *hB, float *sum, int avg, float *tmp) {
    const size_t plane = (size_t)rows * c->Hp;
    float *zb = tmp, *xnb = tmp + plane, *rh = tmp + 2 * plane;
    if (c->xw) {  /* a folded token model's layer 0: x holds the block's ids (rows, T) int32 (gru_fold_ids) */
        const int32_t *ids = (const int32_t *)(const void *)x;
#if GRU_X86
        if (isa == ISA_AVX512 && lbr) gru_stepx_avx512(c, ids, T, t, rows, hA, hB, sum, avg);
        else if (isa == ISA_AVX512) gru_stepx0_avx512(c, ids, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
        else if (isa == ISA_AVX2 && lbr) gru_stepx_avx2(c, ids, T, t, rows, hA, hB, sum, avg);
        else if (isa == ISA_AVX2) gru_stepx0_avx2(c, ids, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
        else
#endif
        if (lbr) gru_stepx_generic(c, ids, T, t, rows, hA, hB, sum, avg);
        else gru_stepx0_generic(c, ids, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
        return;
    }
#if GRU_X86
    if (isa == ISA_AVX512) {
        if (lbr) gru_step_avx512(c, x, T, t, rows, hA, hB, sum, avg);
        else gru_step0_avx512(c, x, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
        return;
    }
    if (isa == ISA_AVX2) {
        if (lbr) gru_step_avx2(c, x, T, t, rows, hA, hB, sum, avg);
        else gru_step0_avx2(c, x, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
        return;
    }
#endif
    (void)isa;
    if (lbr) gru_step_generic(c, x, T, t, rows, hA, hB, sum, avg);
    else gru_step0_generic(c, x, T, t, rows, hA, hB, sum, avg, zb, xnb, rh);
}

/* Direction d of layer ly over all T steps for a block of rows. in: (rows, T, cell F). planes: 3
 * planes of (rows, Hp): the state ping-pong and the running sum, then (lbr=0) 3 for step's two
 * phases. dst: the next layer's input
 * (rows, T, out_w) this direction writes its columns d*H.. of, or NULL (last layer). h0: the initial
 * states (rows, H) at a stride of h0_stride floats (a stream's), or NULL for zeros. Returns the
 * plane holding the last state, or the sum when avg; *last (when not NULL): the last state's plane. */
static float *run_direction(const gru_model *m, const gru_layer *ly, int d, const float *in, long T, int rows,
                            float *planes, float *dst, int out_w, int avg, float *hist, const float *h0,
                            size_t h0_stride, float **last, int mx, int to_hist) {
    const gru_cell *c = &ly->cell[d];
    const int Hp = c->Hp, H = c->H;
    const size_t plane = (size_t)rows * Hp;
    float *hA = planes, *hB = planes + plane, *sum = planes + 2 * plane;
    const int in_time_order = avg && ly->reverse[d] && !ly->flip[d];  /* hist: (T, rows, Hp) */
    memset(hA, 0, sizeof(float) * plane);  /* the padded units stay 0 */
    if (h0)
        for (int i = 0; i < rows; i++) memcpy(hA + (size_t)i * Hp, h0 + (size_t)i * h0_stride, sizeof(float) * H);
    memset(sum, 0, sizeof(float) * plane);
    if (mx)  /* the running max over time (its padded units stay 0, as their states do) */
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < H; j++) sum[(size_t)i * Hp + j] = -INFINITY;
    for (long s = 0; s < T; s++) {
        const long t = ly->reverse[d] ? T - 1 - s : s;
        step(m->isa, ly->lbr, c, in, T, t, rows, hA, hB, sum, avg && !in_time_order, planes + 3 * plane);
        if (dst) {
            const long pos = ly->flip[d] ? T - 1 - t : t;
            for (int i = 0; i < rows; i++) {
                float *o = dst + ((size_t)i * T + pos) * out_w;
                const float *h = hB + (size_t)i * Hp;
                if (ly->merge != MERGE_CONCAT && d == 1)  /* the forward direction's value is there already */
                    for (int j = 0; j < H; j++) o[j] = merge1(ly->merge, o[j], h[j]);
                else
                    memcpy(o + (size_t)d * H, h, sizeof(float) * H);
            }
        }
        if (in_time_order || (to_hist && d == 0)) memcpy(hist + (size_t)t * plane, hB, sizeof(float) * plane);
        if (to_hist && d == 1)  /* the merged sequence, in time order */
            for (size_t k = 0; k < plane; k++) hist[(size_t)t * plane + k] = merge1(ly->merge, hist[(size_t)t * plane + k], hB[k]);
        if (mx)
            for (size_t k = 0; k < plane; k++) sum[k] = hB[k] > sum[k] ? hB[k] : sum[k];
        float *tmp = hA; hA = hB; hB = tmp;
    }
    if (in_time_order)
        for (long t = 0; t < T; t++)
            for (size_t k = 0; k < plane; k++) sum[k] += hist[(size_t)t * plane + k];
    if (last) *last = hA;
    return avg || mx ? sum : hA;
}

/* x (rows, T, F) -> out (rows, k). scratch: (rows, scratch_w) floats; seq: the sequence buffers
 * between layers, (L > 2 ? 2 : 1) x (rows, T, seq_w) (unused for one layer). */
static void run_block(const gru_model *m, const float *x, long T, int rows, float *out, float *scratch,
                      float *seq, float *hist, float *tv) {
    const float *in = x;
    const float *fin[2] = {NULL, NULL};
    for (int l = 0; l < m->L; l++) {
        const gru_layer *ly = &m->layer[l];
        const int last = l == m->L - 1, avg = last && m->head == HEAD_AVG;
        float *dst = last ? NULL : seq + (size_t)(l & 1) * rows * T * m->seq_w;
        const size_t dir_planes = (ly->lbr ? 3 : 6) * (size_t)rows * ly->cell[0].Hp;
        const int merged = ly->merge != MERGE_CONCAT, pooled_merge = last && merged && m->head != HEAD_LAST;
        for (int d = 0; d < ly->D; d++)
            fin[d] = run_direction(m, ly, d, in, T, rows, scratch + d * dir_planes, dst, merged ? ly->H : ly->D * ly->H,
                                   avg && !merged, hist, NULL, 0, NULL, last && !merged && m->head == HEAD_MAX,
                                   pooled_merge);
        if (last && merged) {  /* fin[0] (the forward direction's plane) becomes the merged head input */
            const size_t plane = (size_t)rows * ly->cell[0].Hp;
            float *p = (float *)fin[0];  /* this block's scratch */
            if (!pooled_merge)
                for (size_t k = 0; k < plane; k++) p[k] = merge1(ly->merge, p[k], fin[1][k]);
            else if (m->head == HEAD_AVG) {  /* ReduceMean of the merged sequence: its sum in time order */
                memset(p, 0, sizeof(float) * plane);
                for (long t = 0; t < T; t++)
                    for (size_t k = 0; k < plane; k++) p[k] += hist[(size_t)t * plane + k];
            } else {
                memcpy(p, hist, sizeof(float) * plane);
                for (long t = 1; t < T; t++)
                    for (size_t k = 0; k < plane; k++) {
                        const float v = hist[(size_t)t * plane + k];
                        p[k] = v > p[k] ? v : p[k];
                    }
            }
            fin[1] = NULL;
        }
        in = dst;
    }
    head_rows(m, fin, rows, T, m->head == HEAD_AVG, out, tv, NULL);
}

/* Variable length: direction d of layer ly over a block whose rows (longest first) are real for their
 * first rl[i] steps, as ONNX's GRU with sequence_lens runs them: a forward direction t = 0 .. rl[i]-1, a
 * reverse one t = rl[i]-1 .. 0 from a zero state; with the rows longest first, the rows running at step t
 * (rl[i] > t) are a prefix of the block for both, so each step runs that prefix (a forward row that ends
 * keeps its last state in both planes; a reverse row joins with the zeros its planes hold). in (rows, T,
 * F) at a stride of T steps; planes as run_direction. dst: the next layer's input (rows, T, out_w), or
 * NULL: each row's positions < rl[i] (all the next layer reads) are written: its output of step t at t,
 * or at T-1-t when flipped (go_backwards: the exporter's Slice reverses the whole padded Y, so the
 * positions whose step lies past the row's length hold Y's zeros). pool (the last layer): HEAD_AVG sums
 * each row's positions 0 .. rl[i]-1 in position order (the graph's ReduceSum of the masked sequence: the
 * zeros it adds change nothing), running when the steps come in position order (forward, or reverse and
 * flipped: only the steps whose position is < rl[i]), else through hist (T, rows, Hp) after the loop;
 * HEAD_MAX keeps the max over the row's steps, then over a zero when pad_zero and rl[i] < T (the graph's
 * ReduceMax over the whole padded sequence: Y's zeros, unless Keras' last output is carried there).
 * to_hist: a merged last layer's pooled sequence, in time order: direction 0 writes hist, direction 1
 * merges into it (run_block_lens pools it). Returns the plane of the last states, or of the sums or maxima. */
static float *run_direction_lens(const gru_model *m, const gru_layer *ly, int d, const float *in, long T, int rows,
                                 const int64_t *rl, float *planes, float *dst, int out_w, int pool, float *hist,
                                 int to_hist) {
    const gru_cell *c = &ly->cell[d];
    const int Hp = c->Hp, H = c->H, rev = ly->reverse[d], flip = ly->flip[d];
    const size_t plane = (size_t)rows * Hp;
    float *hA = planes, *hB = planes + plane, *sum = planes + 2 * plane;
    const int avg = pool == HEAD_AVG && !to_hist, mx = pool == HEAD_MAX && !to_hist;
    const int running = avg && rev == flip;     /* the steps come in position order */
    const int in_hist = (avg && !running) || to_hist;  /* (a forward flipped direction: gru_run_lens refuses) */
    memset(hA, 0, sizeof(float) * plane);
    memset(hB, 0, sizeof(float) * plane);      /* a reverse row starts from zeros when it joins */
    memset(sum, 0, sizeof(float) * plane);
    if (mx)
        for (int i = 0; i < rows; i++)
            for (int j = 0; j < H; j++) sum[(size_t)i * Hp + j] = -INFINITY;
    if (dst && flip)  /* positions p < rl[i] whose step T-1-p is past the row's length: Y's zeros */
        for (int i = 0; i < rows; i++) {
            const long n = rl[i] < T - rl[i] ? rl[i] : T - rl[i];
            const size_t col = ly->merge == MERGE_CONCAT ? (size_t)d * H : 0;
            for (long p = 0; p < n; p++) memset(dst + ((size_t)i * T + p) * out_w + col, 0, sizeof(float) * H);
        }
    const long n_steps = rl[0];
    int active = rev ? 0 : rows;
    for (long s = 0; s < n_steps; s++) {
        const long t = rev ? n_steps - 1 - s : s;
        if (rev) {
            while (active < rows && rl[active] > t) active++;  /* rows joining at their own last step */
        } else {
            int a = active;
            while (a > 0 && rl[a - 1] <= t) a--;
            if (a < active) {  /* rows a .. active-1 ended: their last state stays in both planes */
                memcpy(hB + (size_t)a * Hp, hA + (size_t)a * Hp, sizeof(float) * (size_t)(active - a) * Hp);
                active = a;
            }
        }
        step(m->isa, ly->lbr, c, in, T, t, active, hA, hB, sum, running && !rev, planes + 3 * plane);
        const long pos = flip ? T - 1 - t : t;
        if (running && rev) {  /* reverse and flipped: position pos counts for the rows with pos < rl[i] (a prefix) */
            int k = 0;
            while (k < active && rl[k] > pos) k++;
            for (size_t e = 0; e < (size_t)k * Hp; e++) sum[e] += hB[e];
        }
        if (dst)
            for (int i = 0; i < active; i++) {
                float *o = dst + ((size_t)i * T + pos) * out_w;
                const float *h = hB + (size_t)i * Hp;
                if (ly->merge != MERGE_CONCAT && d == 1)  /* the forward direction's value is there already */
                    for (int j = 0; j < H; j++) o[j] = merge1(ly->merge, o[j], h[j]);
                else
                    memcpy(o + (ly->merge == MERGE_CONCAT ? (size_t)d * H : 0), h, sizeof(float) * H);
            }
        if (in_hist) {
            float *hp = hist + (size_t)pos * plane;
            if (to_hist && d == 1)  /* the merged sequence */
                for (size_t e = 0; e < (size_t)active * Hp; e++) hp[e] = merge1(ly->merge, hp[e], hB[e]);
            else
                memcpy(hp, hB, sizeof(float) * (size_t)active * Hp);
        }
        if (mx)
            for (size_t e = 0; e < (size_t)active * Hp; e++) sum[e] = hB[e] > sum[e] ? hB[e] : sum[e];
        float *tmp = hA; hA = hB; hB = tmp;
    }
    if (in_hist && !to_hist)  /* positions 0 .. rl[i]-1 in order */
        for (int i = 0; i < rows; i++)
            for (long p = 0; p < rl[i]; p++) {
                const float *v = hist + (size_t)p * plane + (size_t)i * Hp;
                float *si = sum + (size_t)i * Hp;
                for (int j = 0; j < Hp; j++) si[j] += v[j];
            }
    if (mx && m->pad_zero)
        for (int i = 0; i < rows; i++)
            if (rl[i] < T)
                for (int j = 0; j < H; j++) {
                    float *v = sum + (size_t)i * Hp + j;
                    *v = 0.0f > *v ? 0.0f : *v;
                }
    return avg || mx ? sum : hA;
}

/* Variable length: x (rows, T, F) scaled, rows longest first with lengths rl -> out (rows, k): every layer
 * and direction through run_direction_lens, a merged last layer's last states or pooled sequence as
 * run_block merges them (the pooled one over each row's positions < rl[i], and a zero when pad_zero and
 * rl[i] < T for the max), then the head (the mean: / rl[i]). */
static void run_block_lens(const gru_model *m, const float *x, long T, int rows, const int64_t *rl, float *out,
                           float *scratch, float *seq, float *hist, float *tv) {
    const float *in = x;
    const float *fin[2] = {NULL, NULL};
    for (int l = 0; l < m->L; l++) {
        const gru_layer *ly = &m->layer[l];
        const int last = l == m->L - 1;
        float *dst = last ? NULL : seq + (size_t)(l & 1) * rows * T * m->seq_w;
        const size_t dir_planes = (ly->lbr ? 3 : 6) * (size_t)rows * ly->cell[0].Hp;
        const int merged = ly->merge != MERGE_CONCAT, pooled_merge = last && merged && m->head != HEAD_LAST;
        for (int d = 0; d < ly->D; d++)
            fin[d] = run_direction_lens(m, ly, d, in, T, rows, rl, scratch + d * dir_planes, dst,
                                        merged ? ly->H : ly->D * ly->H, last ? m->head : HEAD_LAST, hist, pooled_merge);
        if (last && merged) {  /* fin[0] (the forward direction's plane) becomes the merged head input */
            const int Hp = ly->cell[0].Hp;
            const size_t plane = (size_t)rows * Hp;
            float *p = (float *)fin[0];  /* this block's scratch */
            if (!pooled_merge)
                for (size_t k = 0; k < plane; k++) p[k] = merge1(ly->merge, p[k], fin[1][k]);
            else
                for (int i = 0; i < rows; i++) {
                    float *pi = p + (size_t)i * Hp;
                    const float *h0 = hist + (size_t)i * Hp;
                    if (m->head == HEAD_AVG) {  /* ReduceSum of the merged sequence, in time order */
                        memset(pi, 0, sizeof(float) * Hp);
                        for (long t = 0; t < rl[i]; t++)
                            for (int j = 0; j < Hp; j++) pi[j] += h0[(size_t)t * plane + j];
                    } else {
                        memcpy(pi, h0, sizeof(float) * Hp);
                        for (long t = 1; t < rl[i]; t++)
                            for (int j = 0; j < Hp; j++) {
                                const float v = h0[(size_t)t * plane + j];
                                pi[j] = v > pi[j] ? v : pi[j];
                            }
                        if (m->pad_zero && rl[i] < T)
                            for (int j = 0; j < Hp; j++) pi[j] = 0.0f > pi[j] ? 0.0f : pi[j];
                    }
                }
            fin[1] = NULL;
        }
        in = dst;
    }
    head_rows(m, fin, rows, T, m->head == HEAD_AVG, out, tv, rl);
}

/* Streams: x (rows, T, F) scaled, sin (rows, st_w) -> sout (rows, st_w), out (rows, k); the state
 * layout and arithmetic: gru_kernel.h, "Streams". Forward layers only (gru_stream checks). */
static void run_stream_block(const gru_model *m, const float *x, long T, int rows, const float *sin, float *sout,
                             int st_w, float *out, float *scratch, float *seq, float *tv) {
    const float *in = x;
    const float *fin[2] = {NULL, NULL};
    size_t off = 0;  /* this layer's h in a state row */
    for (int l = 0; l < m->L; l++) {
        const gru_layer *ly = &m->layer[l];
        const int last = l == m->L - 1, avg = last && m->head == HEAD_AVG, H = ly->H, Hp = ly->cell[0].Hp;
        float *dst = last ? NULL : seq + (size_t)(l & 1) * rows * T * m->seq_w;
        float *h;
        float *r = run_direction(m, ly, 0, in, T, rows, scratch, dst, H, avg, NULL, sin + off, (size_t)st_w, &h, 0, 0);
        for (int i = 0; i < rows; i++) memcpy(sout + (size_t)i * st_w + off, h + (size_t)i * Hp, sizeof(float) * H);
        off += (size_t)H;
        if (avg) {  /* r: the chunk's sum; stream.onnx: mean' = (mean * count + sum) / (count + T) */
            for (int i = 0; i < rows; i++) {
                const float *mi = sin + (size_t)i * st_w + off;
                float *mo = sout + (size_t)i * st_w + off, *ri = r + (size_t)i * Hp;
                const float count = mi[H], count2 = count + (float)T;
                for (int j = 0; j < H; j++) {
                    const float total = mi[j] * count + ri[j];
                    ri[j] = mo[j] = total / count2;
                }
                mo[H] = count2;
            }
        }
        fin[0] = r;
        in = dst;
    }
    head_rows(m, fin, rows, T, 0, out, tv, NULL);
}

/* ------------------------------------------------------------------ the blocks of one call */
/* Take blocks until none is left. scratch (gru_scratch_floats): the state planes, the block's scaled
 * input (rows, T, F), then the sequence buffers between stacked layers. */
void gru_run_blocks(gru_job *job, float *scratch) {
    const gru_model *m = job->m;
    float *xs = scratch + (size_t)job->block_rows * m->scratch_w;
    float *seq = xs + (size_t)job->block_rows * job->T * m->F;
    float *hist = seq + (size_t)(m->L > 2 ? 2 : m->L - 1) * job->block_rows * job->T * m->seq_w;
    float *tv = hist + (size_t)job->block_rows * job->T * m->hist_w;
    float *ob = tv + 2 * (size_t)m->head_in_w * job->block_rows;  /* variable length: (rows, k) before the scatter */
    int64_t rl[BLOCK_ROWS];
    for (;;) {
        const long b = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (b >= job->n_blocks) break;
        long r0 = b * job->N / job->n_blocks;  /* block b: rows [b N / n, (b + 1) N / n), sizes within 1 */
        int rows = (int)((b + 1) * job->N / job->n_blocks - r0);
        if (job->lens) {  /* variable length: rows order[r0 ..], longest first; only their real steps are read */
            int bad = 0;  /* 1: a NaN or an infinity once scaled; 2: an id outside [0, vocab) */
            for (int i = 0; i < rows; i++) {
                const int64_t row = job->order[r0 + i];
                rl[i] = job->lens[row];
                if (!job->ids) {
                    bad |= gru_scale_rows(m, job->x + (size_t)row * job->T * m->F, xs + (size_t)i * job->T * m->F,
                                          (size_t)rl[i]);
                } else if (m->layer[0].cell[0].xw) {  /* folded: (rows, T) int32 ids; past the length id 0, a
                                                         valid row for the steps' prefetch of t + 1 */
                    int32_t *dst = (int32_t *)(void *)xs + (size_t)i * job->T;
                    bad |= 2 * gru_fold_ids(m, job->ids + (size_t)row * job->T, dst, (size_t)rl[i]);
                    memset(dst + rl[i], 0, sizeof(int32_t) * (size_t)(job->T - rl[i]));
                } else {  /* gathered: (rows, T, F) Embedding rows */
                    bad |= 2 * gru_embed_rows(m, job->ids + (size_t)row * job->T, xs + (size_t)i * job->T * m->F,
                                              (size_t)rl[i]);
                }
            }
            if (bad) atomic_store_explicit(&job->nonfinite, bad, memory_order_relaxed);
            run_block_lens(m, xs, job->T, rows, rl, ob, scratch, seq, hist, tv);
            for (int i = 0; i < rows; i++)
                memcpy(job->out + (size_t)job->order[r0 + i] * m->n_out, ob + (size_t)i * m->n_out,
                       sizeof(float) * m->n_out);
            continue;
        }
        if (job->ids) {  /* token ids: their Embedding rows, or folded their int32 ids (a bad id: the caller discards
                            the output) */
            if (m->layer[0].cell[0].xw ? gru_fold_ids(m, job->ids + (size_t)r0 * job->T, (int32_t *)(void *)xs,
                                                      (size_t)rows * job->T)
                                       : gru_embed_rows(m, job->ids + (size_t)r0 * job->T, xs, (size_t)rows * job->T))
                atomic_store_explicit(&job->nonfinite, 2, memory_order_relaxed);
        } else if (gru_scale_rows(m, job->x + (size_t)r0 * job->T * m->F, xs, (size_t)rows * job->T))
            atomic_store_explicit(&job->nonfinite, 1, memory_order_relaxed);  /* the caller discards the output */
        if (job->st_out)
            run_stream_block(m, xs, job->T, rows, job->st_in + (size_t)r0 * job->st_w,
                             job->st_out + (size_t)r0 * job->st_w, job->st_w, job->out + (size_t)r0 * m->n_out,
                             scratch, seq, tv);
        else
            run_block(m, xs, job->T, rows, job->out + (size_t)r0 * m->n_out, scratch, seq, hist, tv);  /* xs: (rows, T, F) scaled, next to h */
    }
}

/* floats of scratch one thread needs: the state planes (rows, scratch_w), the scaled input
 * (rows, T, F), for stacked layers one or two sequences (rows, T, seq_w), when hist_w the
 * last layer's states (T, rows, hist_w), and the head's input and its Dense layers' (2 x (head_in_w, rows)) */
size_t gru_scratch_floats(const gru_model *m, int block_rows, long T) {
    const size_t seqs = m->L > 2 ? 2 : (size_t)(m->L - 1);
    return (size_t)block_rows * ((size_t)m->scratch_w + (size_t)T * m->F + seqs * (size_t)T * m->seq_w +
                                 (size_t)T * m->hist_w + 2 * (size_t)m->head_in_w + (size_t)m->n_out);
}

/* ------------------------------------------------------------------ entry point */
/* x (N, T, F) float32 C-contiguous -> out (N, k) probabilities (k = the head's outputs). nthreads: threads in this call
 * (the caller's thread included); when the pool is busy with another caller's job, this call runs
 * on the caller's thread alone (same numbers). x is the model input: the kernel scales it as the
 * graph does (gru_set_input_scaling) into its own buffer and never writes to x. Returns 0; 1 when a
 * scaled input value is NaN or infinite (out is then meaningless); -1 on bad arguments / no memory. */
/* The calling thread's scratch for small calls (a stream push: allocating and zeroing it took about
 * a third of a one-row, one-step call), kept per thread and freed when the thread ends (like the
 * pool workers' scratch, it is zeroed once, then reused as the last call left it). */
#define CACHED_SCRATCH_FLOATS 16384
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void scratch_key_init(void) { (void)pthread_key_create(&scratch_key, free); }

static float *cached_scratch(void) {
    (void)pthread_once(&scratch_once, scratch_key_init);
    float *p = (float *)pthread_getspecific(scratch_key);
    if (!p) {
        p = (float *)gru_aligned(sizeof(float) * CACHED_SCRATCH_FLOATS);
        if (p && pthread_setspecific(scratch_key, p) != 0) { free(p); p = NULL; }
    }
    return p;
}

/* Cut job's N rows into blocks and run them on up to nthreads threads (the caller's included). */
static int launch(gru_job *job, int nthreads) {
    const long N = job->N;
    atomic_init(&job->next, 0);
    atomic_init(&job->nonfinite, 0);
    if (nthreads < 1) nthreads = 1;
    /* blocks: at most BLOCK_ROWS rows, a multiple of nthreads in number, sizes within one row of
     * each other (1024 rows on 2 threads: 44 blocks of 23-24 rows, 22 per thread) */
    long n_blocks = (N + BLOCK_ROWS - 1) / BLOCK_ROWS;
    if (nthreads > 1 && N >= 2L * nthreads) n_blocks = (n_blocks + nthreads - 1) / nthreads * nthreads;
    if (n_blocks > N) n_blocks = N;
    const int rows = (int)((N + n_blocks - 1) / n_blocks);
    job->block_rows = rows;
    job->n_blocks = n_blocks;
    int helpers = nthreads - 1;
    if (helpers > n_blocks - 1) helpers = (int)(n_blocks - 1);
    const size_t need = gru_scratch_floats(job->m, rows, job->T);
    float *cached = need <= CACHED_SCRATCH_FLOATS ? cached_scratch() : NULL;
    float *scratch = cached ? cached : (float *)gru_aligned(sizeof(float) * need);
    if (!scratch) return -1;
    gru_pool_run(job, helpers, scratch);  /* (helpers 0: the caller's thread alone) */
    if (!cached) free(scratch);
    return atomic_load_explicit(&job->nonfinite, memory_order_relaxed);
}

/* x (N, T, F) float32 C-contiguous -> out (N, k) probabilities (k = the head's outputs). nthreads: threads in this call
 * (the caller's thread included); when the pool is busy with another caller's job, this call runs
 * on the caller's thread alone (same numbers). x is the model input: the kernel scales it as the
 * graph does (gru_set_input_scaling) into its own buffer and never writes to x. Returns 0; 1 when a
 * scaled input value is NaN or infinite (out is then meaningless); -1 on bad arguments / no memory. */
int gru_run(void *handle, const float *x, long N, long T, float *out, int nthreads) {
    const gru_model *m = (const gru_model *)handle;
    if (!m || m->embed || !x || !out || N < 0 || T < 1) return -1;
    if (N == 0) return 0;
    gru_job job;
    memset(&job, 0, sizeof(job));
    job.m = m; job.x = x; job.T = T; job.N = N; job.out = out;
    return launch(&job, nthreads);
}

/* A token model (gru_set_embedding): ids (N, T) int64 -> out (N, k), as gru_run. Returns 0; 2 when an id
 * lies outside [0, vocab) (out is then meaningless); -1 on bad arguments / no memory. */
int gru_run_ids(void *handle, const int64_t *ids, long N, long T, float *out, int nthreads) {
    const gru_model *m = (const gru_model *)handle;
    if (!m || !m->embed || !ids || !out || N < 0 || T < 1) return -1;
    if (N == 0) return 0;
    gru_job job;
    memset(&job, 0, sizeof(job));
    job.m = m; job.ids = ids; job.T = T; job.N = N; job.out = out;
    return launch(&job, nthreads);
}

/* The variable-length arguments: no forward direction's output reversed in time (no export writes one), and
 * order (N,) a permutation of the rows, longest first, every length in 1 .. T. */
static int lens_ok(const gru_model *m, const int64_t *lens, const int64_t *order, long N, long T) {
    for (int l = 0; l < m->L; l++)
        for (int d = 0; d < m->layer[l].D; d++)
            if (m->layer[l].flip[d] && !m->layer[l].reverse[d]) return 0;
    for (long p = 0; p < N; p++) {
        const int64_t r = order[p];
        if (r < 0 || r >= N || lens[r] < 1 || lens[r] > T || (p && lens[order[p - 1]] < lens[r])) return 0;
    }
    return 1;
}

/* Variable length: x (N, T, F) right-padded, row i real for its first lens[i] steps (1 .. T; what follows
 * is never read, whatever it holds), order (N,) the rows sorted longest first (any order of equal
 * lengths) -> out (N, k) in row order. Every layer kind and head (gru_kernel.h, "Variable length"); a
 * max head reads zeros past each row's length when gru_set_padding said so. Returns as gru_run (1: a NaN
 * or an infinity in a real step). */
int gru_run_lens(void *handle, const float *x, const int64_t *lens, const int64_t *order, long N, long T, float *out,
                 int nthreads) {
    const gru_model *m = (const gru_model *)handle;
    if (!m || m->embed || !x || !lens || !order || !out || N < 0 || T < 1 || !lens_ok(m, lens, order, N, T)) return -1;
    if (N == 0) return 0;
    gru_job job;
    memset(&job, 0, sizeof(job));
    job.m = m; job.x = x; job.T = T; job.N = N; job.out = out; job.lens = lens; job.order = order;
    return launch(&job, nthreads);
}

/* Variable-length token ids (gru_kernel.h, "Token models"): ids (N, T) right-padded, row i real for its first
 * lens[i] steps (what follows is never read), order as gru_run_lens -> out (N, k) in row order, folded or
 * gathered as gru_run_ids, every layer kind and head as gru_run_lens. The graph's lengths are the count of
 * each row's nonzero ids (Embedding mask_zero) and its mask their positions, which are lens[i] and the row's
 * first lens[i] steps only while no real step holds id 0: such a row is refused (3), nothing run. Returns 0;
 * 2 when a real step's id lies outside [0, vocab) (out is then meaningless); 3 when a real step holds id 0;
 * -1 on bad arguments / no memory. */
int gru_run_ids_lens(void *handle, const int64_t *ids, const int64_t *lens, const int64_t *order, long N, long T,
                     float *out, int nthreads) {
    const gru_model *m = (const gru_model *)handle;
    if (!m || !m->embed || !ids || !lens || !order || !out || N < 0 || T < 1 || !lens_ok(m, lens, order, N, T))
        return -1;
    for (long r = 0; r < N; r++)  /* (N, T): id 0 before the row's length */
        for (long t = 0; t < lens[r]; t++)
            if (ids[(size_t)r * T + t] == 0) return 3;
    if (N == 0) return 0;
    gru_job job;
    memset(&job, 0, sizeof(job));
    job.m = m; job.ids = ids; job.T = T; job.N = N; job.out = out; job.lens = lens; job.order = order;
    return launch(&job, nthreads);
}

/* Variable length, max head: whether the graph's ReduceMax reads zeros past each row's length (1: ONNX GRU's
 * Y there, as go_backwards, Bidirectional and zero_output_for_mask leave it) or Keras' last real output
 * carried there by a Where (0, the default: never above the max of the real steps). Returns 0; -1 without
 * a model. */
int gru_set_padding(void *handle, int zeros) {
    gru_model *m = (gru_model *)handle;
    if (!m) return -1;
    m->pad_zero = zeros ? 1 : 0;
    return 0;
}

/* Floats in one stream's state (gru_kernel.h, "Streams"), or -1 when the model cannot stream here (a
 * reverse or bidirectional layer). */
int gru_stream_width(void *handle) {
    const gru_model *m = (const gru_model *)handle;
    if (!m || m->embed) return -1;  /* token models stream on stream.onnx */
    int w = 0;
    for (int l = 0; l < m->L; l++) {
        if (m->layer[l].D != 1 || m->layer[l].reverse[0] || m->head == HEAD_MAX) return -1;
        w += m->layer[l].H;
    }
    return m->head == HEAD_AVG ? w + m->layer[m->L - 1].H + 1 : w;
}

/* N streams, each one row of a->state[cur] (N, gru_stream_width), advance by x (N, T, F) (the model
 * input, unscaled): their new states go to state[1 - cur], out (N, k) the probabilities after the
 * chunk's last step, and cur flips. Threads, scaling and return codes as gru_run: on 1 (a NaN or an
 * infinity) or -1, cur stays, state[cur] is untouched and out is meaningless. */
int gru_stream(gru_stream_args *a) {
    if (!a) return -1;
    const gru_model *m = (const gru_model *)a->model;
    const int w = gru_stream_width(a->model);
    if (!m || w < 1 || !a->x || (a->cur != 0 && a->cur != 1) || !a->state[0] || !a->state[1] ||
        a->state[0] == a->state[1] || !a->out || a->N < 0 || a->T < 1 || a->threads > 1024)
        return -1;
    if (a->N == 0) return 0;
    gru_job job;
    memset(&job, 0, sizeof(job));
    job.m = m; job.x = a->x; job.T = a->T; job.N = a->N; job.out = a->out;
    job.st_in = a->state[a->cur]; job.st_out = a->state[1 - a->cur]; job.st_w = w;
    const int rc = launch(&job, (int)a->threads);
    if (rc == 0) a->cur = 1 - a->cur;
    return rc;
}
