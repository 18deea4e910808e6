/* Fused GRU inference kernel: a stack of L >= 1 GRU layers (ONNX GRU, linear_before_reset 1 or 0,
 * i.e. Keras reset_after True or False), each forward, reverse (Keras go_backwards) or bidirectional
 * (its two directions concatenated), every layer but the last handing its whole output sequence to
 * the next -> the last layer's last state, mean or max over time -> Dense(k) -> sigmoid (binary, k = 1,
 * or multi-label) or softmax (multi-class), for a whole batch in one call. Plain C, no Python C API:
 * the runtime loads the shared object with ctypes (pipeline/runtime/fused/__init__.py), which
 * releases the GIL during calls.
 *
 * This header owns what the kernel's source files share: the model's types, the job of one call,
 * and the functions one file calls in another (hidden: the library exports only the gru_* API).
 * The files, each including this header:
 *   model.c            CPU features, weight packing (gru_create / gru_destroy), the model input's
 *                      per-feature scaling with its NaN/infinity scan, Dense layers, Embedding table
 *   ort_activations.h  onnxruntime's activation functions: scalar, and ORT_ACTIVATIONS for vectors
 *   kernel_generic.c   one time step in plain C (every CPU)
 *   kernel_avx2.c      one time step with AVX2 + FMA      } per-function target attributes: one
 *   kernel_avx512.c    one time step with AVX-512         } build holds every variant
 *   gru_kernel.c       the entry points gru_run, gru_run_ids, gru_run_lens, gru_run_ids_lens, gru_stream: row blocks,
 *                      layers, directions, merges, the head
 *   pool.c / pool.h    the worker threads of a call (one struct, C11 atomics + mutex/condvar)
 * Built by setuptools (pyproject.toml, [[tool.setuptools.ext-modules]]) with -O3 -ffp-contract=off
 * -fno-math-errno: no fused multiply-add the source did not write.
 *
 * Numerics: float32, onnxruntime's GRU op operation for operation (ort_activations.h for the
 * functions), so on CPUs where onnxruntime's MLAS runs its FMA kernels the kernel reproduces
 * model.onnx bit for bit:
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
 *   head: per direction the mean (sum in the order the graph's ReduceMean adds, then / T), the max over
 *   time (ReduceMax: exact in any order) or the last state, the directions concatenated; per output unit c: logit_c = fma-sum of head . w[:, c], in
 *   order, + b_c (onnxruntime's Gemm with its B packed); p_c = Logistic(logit_c) (Sigmoid), or the
 *   row's softmax as MLAS computes it (MlasComputeSoftmax: ort_activations.h, mlas_softmax_row).
 *   Dense layers between the pooling and that Gemm (gru_set_dense) are the same Gemm arithmetic per
 *   unit, then Relu (max with 0: exact), Logistic, Tanh (the Tanh op: MLAS' TanhKernelFma3,
 *   ort_activations.h mlas_tanh1), or nothing (linear)
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
 * A bidirectional layer merged by sum, mul or ave (MERGE_*) hands on H values per step: its forward
 * direction writes a_t, the reverse one then b_t merged into it (in the next layer's input, or in
 * the time-ordered buffer hist that the last layer's mean or max then reads in time order, as the
 * graph's ReduceMean/ReduceMax read the merged sequence); a last-state head reads the merge of the
 * two last states.
 *
 * Variable length (gru_run_lens; every layer kind and head): row i is real for its first lens[i] steps
 * and padding after, never read; ONNX's GRU with sequence_lens runs a forward direction over t = 0 ..
 * lens[i]-1 and a reverse one over t = lens[i]-1 .. 0 from a zero state, and Y is zero past the length.
 * The rows run longest first (order), so the rows of a block running at step t (lens > t) are a prefix
 * of it for both directions: each step runs that prefix, a forward row that ends keeps its last state,
 * a reverse row joins from zeros, and a block stops at its longest row. The last state is each row's own
 * (forward: at step lens[i]-1; reverse: at step 0). The next layer and the pooling read positions
 * 0 .. lens[i]-1 of the sequence handed on; a go_backwards layer's output is the whole padded Y reversed
 * (the exporter's Slice), so position p holds the output of step T-1-p, or Y's zero when that step is
 * past the length: results then depend on the batch's T, as model.onnx's do. The mean sums those
 * positions in order (the graph's ReduceSum of the masked sequence, which adds zeros after them; Div by
 * the count); the max is over the real steps and, when the graph pools Y's zeros past the length
 * (pad_zero: not Keras' last output carried there), over a zero too when lens[i] < T.
 *
 * Token models (gru_set_embedding, gru_run_ids): ids (N, T) select rows of the Embedding table (vocab, F),
 * the first layer's input. Since x.W is a sum of its own, it is a function of the token alone: the model
 * folds (gru_embedding_fold) each direction's table of every token's x.Wz, x.Wr, x.Wn sums, cell xw
 * (vocab, Hp/16, 3, 16), summed as the steps sum (fused multiply-adds over k from 0, from 0.0f), once;
 * layer 0's steps then read the row of each row's id (the folded forms gru_stepx*, ids as int32 in the
 * block's input buffer) instead of summing x.W, with the same bits. Above FOLD_MAX_BYTES of tables
 * (vocab x D x 3 x Hp floats) the block gathers the Embedding rows and the steps sum x.W as for a float
 * input. Token models do not stream on the kernel (stream.onnx does).
 * Variable-length token models (gru_run_ids_lens): the rows run as gru_run_lens runs them, each block's real
 * steps folded or gathered as above (a folded row holds id 0 past its length). The graph (Embedding mask_zero)
 * runs each row over the count of its nonzero ids and pools over their positions, which are the row's first
 * lens[i] steps only when none of them holds id 0: a batch with id 0 in a real step is refused, not run.
 *
 * Stacked layers: a block of rows runs layer by layer. A layer that is not the last writes each
 * direction's state after each step into a sequence buffer (rows, T, D*H), direction d at columns
 * d*H .. d*H+H-1 (unpadded): the layout of x (rows, T, F), so the next layer's cell reads it as its
 * input with F = D*H. Two such buffers (ping-pong) in each thread's scratch (gru_scratch_floats).
 *
 * Streams (gru_stream; forward layers only, what stream.onnx covers): N streams advance by a chunk
 * of T steps each, from a state per stream, one row of st_w floats: [h of layer 0 (H_0), ..., h of
 * layer L-1 (H_{L-1}), and for the average head the running mean (H_{L-1}) and the step count (1)].
 * The arithmetic is stream.onnx's: each layer starts from its carried h; the chunk's outputs are
 * summed in time order from 0 (ReduceSum), mean' = (mean * count + chunk sum) / (count + T) (Mul,
 * Add, Add, Div), and the head reads mean' (or the last state). A chunk that is the whole sequence
 * from a zero state gives gru_run's bits. The new states go to a second buffer (state_out): the
 * caller commits them by swapping only when the call succeeded.
 */
#ifndef GRU_KERNEL_H
#define GRU_KERNEL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#if defined(__x86_64__) || defined(__i386__)
#define GRU_X86 1
#else
#define GRU_X86 0
#endif

#define GRU_HIDDEN __attribute__((visibility("hidden")))  /* shared between the files, not exported */

#define GRU_ABI_VERSION 9
#define TILE 16        /* hidden units per column tile (one zmm) */
#define BLOCK_ROWS 24  /* rows that run all time steps together, h and the mean resident in L1 */
#define MAX_SCALE_OPS 8
#define LAYER_INFO 8   /* ints per layer given to gru_create */
#define MAX_DENSE 8    /* Dense layers between the pooling and the classifier */
#define FOLD_MAX_BYTES ((size_t)64 << 20)  /* the largest folded token table (vocab x D x 3 x Hp floats): above it,
                                              gather then project */

enum { ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512 = 2 };
enum { HEAD_LAST = 0, HEAD_AVG = 1, HEAD_MAX = 2 };
/* how a bidirectional layer joins its directions (Keras merge_mode): concatenated, or one value per
 * unit: a + b, a * b, (a + b) * 0.5 (the graph's Add, Mul, Add then Mul by 0.5), a forward, b reverse */
enum { MERGE_CONCAT = 0, MERGE_SUM = 1, MERGE_MUL = 2, MERGE_AVE = 3 };  /* last state, mean or max over time */
enum { ACT_SIGMOID = 0, ACT_SOFTMAX = 1 };          /* the head's activation over its k outputs */
enum { MLAS_SOFTMAX_FMA3 = 0, MLAS_SOFTMAX_AVX512F = 1 };  /* which MLAS softmax kernels to reproduce */
enum { SCALE_SUB = 0, SCALE_DIV = 1, SCALE_MUL = 2, SCALE_ADD = 3 };
enum { DENSE_LINEAR = 0, DENSE_RELU = 1, DENSE_SIGMOID = 2, DENSE_TANH = 3 };  /* a hidden Dense layer's activation */

typedef struct {                  /* one direction of one layer: what the tiles read */
    int F, H, Hp;                 /* inputs, hidden units, hidden units padded to a multiple of TILE */
    float *wpack;                 /* (Hp/16, F + H, 3, 16) */
    float *bz, *br, *bxn, *bhn;   /* (Hp,) each: Wbz+Rbz, Wbr+Rbr, Wbn (Wbn+Rbn when linear_before_reset=0), Rbn */
    float *xw;                    /* a folded token model's layer 0 (gru_embedding_fold): (vocab, Hp/16, 3, 16) the
                                     x.Wz, x.Wr, x.Wn sums of each token's Embedding row, or NULL */
} gru_cell;

typedef struct {
    int D, H;                     /* directions (1 or 2), hidden units per direction */
    int lbr;                      /* linear_before_reset: 1 (one phase per step) or 0 (two phases) */
    int reverse[2];               /* direction d runs t = T-1 .. 0 */
    int flip[2];                  /* direction d's output of time t goes to time T-1-t of the next layer */
    int merge;                    /* MERGE_*: D=2 only; not concat: the layer hands on H values, not 2H */
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
    int n_out, act;               /* the head's k outputs (1 for binary) and its activation ACT_* */
    int softmax_kind;             /* MLAS_SOFTMAX_*: the kernels onnxruntime's MLAS picks on this CPU */
    float *head_w;                /* (D*H, k): the last layer's features (directions concatenated) x outputs */
    float *head_b;                /* (k,) */
    int n_scale;                  /* the graph's per-feature input scaling, applied first, in order */
    int scale_op[MAX_SCALE_OPS];  /* SCALE_* */
    float *scale_c;               /* (n_scale, F) */
    long vocab;                   /* > 0: a token model, its input ids (N, T) int64 read from embed (vocab, F) */
    float *embed;                 /* the Embedding table (gru_set_embedding); the ids' rows are the GRU input */
    int n_dense;                  /* Dense layers between the pooling and the head's Gemm, input side first */
    int dense_out[MAX_DENSE], dense_act[MAX_DENSE];  /* units, DENSE_* */
    float *dense_w[MAX_DENSE];    /* (inputs, units): the Gemm's B, not transposed */
    float *dense_b[MAX_DENSE];    /* (units,) */
    int head_in_w;                /* the widest vector the head reads: D*H of the last layer, or a Dense's units */
    int pad_zero;                 /* variable length, max head: zeros past each row's length are pooled (gru_set_padding) */
} gru_model;

/* One gru_run call: N rows cut into n_blocks blocks that the caller and its helpers take in turn. */
typedef struct {
    const gru_model *m;
    const float *x;               /* (N, T, F) the model input, unscaled, never written */
    const int64_t *ids;           /* or (N, T) token ids (gru_run_ids): their Embedding rows are the input */
    const int64_t *lens, *order;  /* gru_run_lens, gru_run_ids_lens: row lengths (N,), and the rows longest first (N,): sorted
                                     position p runs row order[p] (blocks of similar lengths) */
    long T, N;
    float *out;                   /* (N, k) each block writes its own rows */
    int block_rows;               /* the largest block's rows */
    long n_blocks;
    atomic_long next;             /* next block to take */
    atomic_int nonfinite;         /* set when a scaled input value is NaN or infinite (2: an id outside [0, vocab)) */
    const float *st_in;           /* streams (gru_stream): (N, st_w) each row one stream's state, read; */
    float *st_out;                /*   (N, st_w) its state after the chunk, written; NULL: a gru_run call */
    int st_w;                     /* floats per stream state: gru_stream_width */
} gru_job;

/* model.c */
GRU_HIDDEN void *gru_aligned(size_t bytes);  /* zeroed, 64-byte aligned; NULL when out of memory */
GRU_HIDDEN int gru_scale_rows(const gru_model *m, const float *src, float *dst, size_t steps);
GRU_HIDDEN int gru_embed_rows(const gru_model *m, const int64_t *ids, float *dst, size_t steps);
GRU_HIDDEN int gru_fold_ids(const gru_model *m, const int64_t *ids, int32_t *dst, size_t steps);

/* gru_kernel.c: take the job's blocks until none is left; scratch: gru_scratch_floats floats */
GRU_HIDDEN void gru_run_blocks(gru_job *job, float *scratch);
GRU_HIDDEN size_t gru_scratch_floats(const gru_model *m, int block_rows, long T);

/* One time step t of one direction, all Hp hidden units of `rows` rows: hA (rows, Hp) -> hB, and
 * sum += hB when avg. x (rows, T, F). The step0_ forms (linear_before_reset=0) run in two phases
 * through zb, xnb, rh: (rows, Hp) each. */
#define GRU_STEP_ARGS const gru_cell *c, const float *x, long T, long t, int rows, const float *hA, float *hB, \
                      float *sum, int avg
#define GRU_STEP0_ARGS GRU_STEP_ARGS, float *zb, float *xnb, float *rh
GRU_HIDDEN void gru_step_generic(GRU_STEP_ARGS);
GRU_HIDDEN void gru_step0_generic(GRU_STEP0_ARGS);
/* The folded forms (layer 0 of a folded token model): each row's x.W read from the cell's table xw at
 * its token, ids (rows, T) int32 (gru_fold_ids), instead of summed from x. */
#define GRU_STEPX_ARGS const gru_cell *c, const int32_t *ids, long T, long t, int rows, const float *hA, float *hB, \
                       float *sum, int avg
#define GRU_STEPX0_ARGS GRU_STEPX_ARGS, float *zb, float *xnb, float *rh
/* A folded step's prefetch of the table rows of each row's tokens at t - 1 and t + 1: the next step's, for a
 * forward or a reverse direction (the other was just read, a cache hit). On a 15 MB table (20,000 tokens,
 * GRU(64)) it gained 4-9 %; a distance of two steps, or 2 MB pages for the table, gained nothing more. */
static inline void gru_xw_prefetch(const gru_cell *c, const int32_t *ids, long T, long t, int rows) {
    const size_t w = (size_t)3 * c->Hp;  /* floats per token */
    for (int i = 0; i < rows; i++)
        for (long s = t - 1; s <= t + 1; s += 2) {
            if (s < 0 || s >= T) continue;
            const float *p = c->xw + (size_t)ids[(size_t)i * T + s] * w;
            for (size_t o = 0; o < w; o += 16) {
#if GRU_X86  /* asm: gcc 12 dropped this loop of __builtin_prefetch as dead code */
                __asm__ volatile("prefetcht0 %0" : : "m"(p[o]));
#else
                __builtin_prefetch(p + o, 0, 3);
#endif
            }
        }
}
GRU_HIDDEN void gru_stepx_generic(GRU_STEPX_ARGS);
GRU_HIDDEN void gru_stepx0_generic(GRU_STEPX0_ARGS);
#if GRU_X86
GRU_HIDDEN void gru_step_avx2(GRU_STEP_ARGS);
GRU_HIDDEN void gru_step0_avx2(GRU_STEP0_ARGS);
GRU_HIDDEN void gru_step_avx512(GRU_STEP_ARGS);
GRU_HIDDEN void gru_step0_avx512(GRU_STEP0_ARGS);
GRU_HIDDEN void gru_stepx_avx2(GRU_STEPX_ARGS);
GRU_HIDDEN void gru_stepx0_avx2(GRU_STEPX0_ARGS);
GRU_HIDDEN void gru_stepx_avx512(GRU_STEPX_ARGS);
GRU_HIDDEN void gru_stepx0_avx512(GRU_STEPX0_ARGS);
#endif

/* The library's API (ctypes, pipeline/runtime/fused/__init__.py) */
int gru_abi_version(void);
int gru_isa_supported(int isa);
void *gru_create(int F, int L, const int *info, const float *params, int head, const float *head_w,
                 const float *head_b, int n_out, int act, int isa);
int gru_softmax_kind(void *handle, int kind);
void gru_destroy(void *handle);
int gru_set_input_scaling(void *handle, int n, const int *ops, const float *consts);
int gru_set_dense(void *handle, int n, const int *units_act, const float *params);
int gru_set_embedding(void *handle, long vocab, const float *table);
int gru_embedding_fold(void *handle, int on);
long gru_fold_max_bytes(void);
void gru_test_tanh(const float *x, float *y, long n);
int gru_run_ids(void *handle, const int64_t *ids, long N, long T, float *out, int nthreads);
int gru_run_lens(void *handle, const float *x, const int64_t *lens, const int64_t *order, long N, long T, float *out,
                 int nthreads);
int gru_run_ids_lens(void *handle, const int64_t *ids, const int64_t *lens, const int64_t *order, long N, long T,
                     float *out, int nthreads);
int gru_set_padding(void *handle, int zeros);
int gru_run(void *handle, const float *x, long N, long T, float *out, int nthreads);
int gru_stream_width(void *handle);
/* gru_stream's arguments, one struct so that a push is a one-argument call (ctypes converts each
 * argument: about 0.15 us apiece). Every field 8 bytes: Python keeps it as an int64 array (stream.py). */
typedef struct {
    void *model;                  /* gru_create's handle */
    const float *x;               /* (N, T, F) the model input, unscaled */
    long N, T;
    float *state[2];              /* (N, gru_stream_width) each: state[cur] is read, state[1 - cur] written */
    float *out;                   /* (N, k) */
    long threads;
    long cur;                     /* 0 or 1; flipped by a successful call (the new state is committed) */
} gru_stream_args;
int gru_stream(gru_stream_args *a);

#endif /* GRU_KERNEL_H */
