/* The entry point gru_run: one call scores a batch; its rows are cut into blocks that the caller's
 * thread and the pool's workers take in turn, and each block runs every layer, direction and time
 * step, then the head. The kernel's design, numerics and layouts: gru_kernel.h.
 *
 * Owns: gru_run, the blocks of one call (gru_run_blocks, gru_scratch_floats), one block through all
 * layers (run_block, run_direction), the ISA dispatch of a time step (step) and the head (head_row:
 * Gemm to k outputs, then Sigmoid or MLAS' softmax; the same arithmetic for every variant). Includes gru_kernel.h, ort_activations.h, pool.h. Reads the
 * model and x; writes out and its own scratch.
 */
#include <stdlib.h>
#include <string.h>

#include "gru_kernel.h"
#include "ort_activations.h"
#include "pool.h"

/* ------------------------------------------------------------------ the head */
/* The head of one row: o (k,) = act(hv . W + b), hv = mean (sum / T) or last state of each direction
 * d of the last layer (hv[d], H values), concatenated; W (D*H, k). Each output's logit is its own
 * chain of fused multiply-adds over the D*H features in order from 0.0f, then + b (onnxruntime's
 * Gemm with B packed: the sgemm kernel's in-order FMA accumulator, then the bias held in C), so
 * running the outputs side by side (the c loop, which the compiler may vectorise: lanes never mix)
 * gives each the same bits. Then Sigmoid (Logistic, per output) or MLAS' softmax over the row.
 * The same arithmetic for every ISA variant: only how fmaf is emitted differs (head_fma: an
 * instruction; the generic build: libm's correctly rounded fmaf). */
static inline __attribute__((always_inline)) void head_row_body(const gru_model *m, const float *const *hv,
                                                                float steps, int avg, float *o) {
    const gru_layer *ly = &m->layer[m->L - 1];
    const int k = m->n_out;
    for (int c = 0; c < k; c++) o[c] = 0.0f;
    for (int d = 0; d < ly->D; d++)
        for (int j = 0; j < ly->H; j++) {
            const float v = avg ? hv[d][j] / steps : hv[d][j];
            const float *w = m->head_w + (size_t)(d * ly->H + j) * k;
            for (int c = 0; c < k; c++) o[c] = fmaf(v, w[c], o[c]);
        }
    for (int c = 0; c < k; c++) o[c] = o[c] + m->head_b[c];
    if (m->act == ACT_SOFTMAX) mlas_softmax_row(o, k, m->softmax_kind);
    else for (int c = 0; c < k; c++) o[c] = logistic1(o[c]);
}

static void head_row(const gru_model *m, const float *const *hv, float steps, int avg, float *o) {
    head_row_body(m, hv, steps, avg, o);
}

#if GRU_X86
__attribute__((target("avx2,fma"))) static void head_row_fma(const gru_model *m, const float *const *hv, float steps,
                                                              int avg, float *o) {
    head_row_body(m, hv, steps, avg, o);
}
#endif

/* out (rows, k) from fin[d] (rows, Hp): each direction's last state, or its sum when avg. */
static void head_rows(const gru_model *m, const float *const fin[2], int rows, long T, float *out) {
    const int avg = m->head == HEAD_AVG, Hp = m->layer[m->L - 1].cell[0].Hp;
    for (int i = 0; i < rows; i++) {
        const float *hv[2] = {fin[0] + (size_t)i * Hp, fin[1] ? fin[1] + (size_t)i * Hp : NULL};
        float *o = out + (size_t)i * m->n_out;
#if GRU_X86
        if (m->isa != ISA_GENERIC) { head_row_fma(m, hv, (float)T, avg, o); continue; }
#endif
        head_row(m, hv, (float)T, avg, o);
    }
}

/* ------------------------------------------------------------------ one block of rows, all layers */
/* One time step of one direction, all hidden units, in the model's ISA. tmp: 3 planes (rows, Hp)
 * for lbr=0. */
static void step(int isa, int lbr, const gru_cell *c, const float *x, long T, long t, int rows,
                 const float *hA, float *hB, float *sum, int avg, float *tmp) {
    const size_t plane = (size_t)rows * c->Hp;
    float *zb = tmp, *xnb = tmp + plane, *rh = tmp + 2 * plane;
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

/* x (rows, T, F) -> out (rows, k). scratch: (rows, scratch_w) floats; seq: the sequence buffers
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
/* Take blocks until none is left. scratch (gru_scratch_floats): the state planes, the block's scaled
 * input (rows, T, F), then the sequence buffers between stacked layers. */
void gru_run_blocks(gru_job *job, float *scratch) {
    const gru_model *m = job->m;
    float *xs = scratch + (size_t)job->block_rows * m->scratch_w;
    float *seq = xs + (size_t)job->block_rows * job->T * m->F;
    float *hist = seq + (size_t)(m->L > 2 ? 2 : m->L - 1) * job->block_rows * job->T * m->seq_w;
    for (;;) {
        const long b = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (b >= job->n_blocks) break;
        long r0 = b * job->N / job->n_blocks;  /* block b: rows [b N / n, (b + 1) N / n), sizes within 1 */
        int rows = (int)((b + 1) * job->N / job->n_blocks - r0);
        if (gru_scale_rows(m, job->x + (size_t)r0 * job->T * m->F, xs, (size_t)rows * job->T))
            atomic_store_explicit(&job->nonfinite, 1, memory_order_relaxed);  /* the caller discards the output */
        run_block(m, xs, job->T, rows, job->out + (size_t)r0 * m->n_out, scratch, seq, hist);  /* xs: (rows, T, F) scaled, next to h */
    }
}

/* floats of scratch one thread needs: the state planes (rows, scratch_w), the scaled input
 * (rows, T, F), for stacked layers one or two sequences (rows, T, seq_w), and when hist_w the
 * last layer's states (T, rows, hist_w) */
size_t gru_scratch_floats(const gru_model *m, int block_rows, long T) {
    const size_t seqs = m->L > 2 ? 2 : (size_t)(m->L - 1);
    return (size_t)block_rows * ((size_t)m->scratch_w + (size_t)T * m->F + seqs * (size_t)T * m->seq_w +
                                 (size_t)T * m->hist_w);
}

/* ------------------------------------------------------------------ entry point */
/* x (N, T, F) float32 C-contiguous -> out (N, k) probabilities (k = the head's outputs). nthreads: threads in this call
 * (the caller's thread included); when the pool is busy with another caller's job, this call runs
 * on the caller's thread alone (same numbers). x is the model input: the kernel scales it as the
 * graph does (gru_set_input_scaling) into its own buffer and never writes to x. Returns 0; 1 when a
 * scaled input value is NaN or infinite (out is then meaningless); -1 on bad arguments / no memory. */
int gru_run(void *handle, const float *x, long N, long T, float *out, int nthreads) {
    const gru_model *m = (const gru_model *)handle;
    if (!m || !x || !out || N < 0 || T < 1) return -1;
    if (N == 0) return 0;
    gru_job job;
    job.m = m; job.x = x; job.T = T; job.N = N; job.out = out;
    atomic_init(&job.next, 0);
    atomic_init(&job.nonfinite, 0);
    if (nthreads < 1) nthreads = 1;
    /* blocks: at most BLOCK_ROWS rows, a multiple of nthreads in number, sizes within one row of
     * each other (1024 rows on 2 threads: 44 blocks of 23-24 rows, 22 per thread) */
    long n_blocks = (N + BLOCK_ROWS - 1) / BLOCK_ROWS;
    if (nthreads > 1 && N >= 2L * nthreads) n_blocks = (n_blocks + nthreads - 1) / nthreads * nthreads;
    if (n_blocks > N) n_blocks = N;
    const int rows = (int)((N + n_blocks - 1) / n_blocks);
    job.block_rows = rows;
    job.n_blocks = n_blocks;
    int helpers = nthreads - 1;
    if (helpers > n_blocks - 1) helpers = (int)(n_blocks - 1);
    float *scratch = (float *)gru_aligned(sizeof(float) * gru_scratch_floats(m, rows, T));
    if (!scratch) return -1;
    gru_pool_run(&job, helpers, scratch);  /* (helpers 0: the caller's thread alone) */
    free(scratch);
    return atomic_load_explicit(&job.nonfinite, memory_order_relaxed) ? 1 : 0;
}
