/* The worker threads of a gru_run call (pool.c). Includes gru_kernel.h. */
#ifndef GRU_POOL_H
#define GRU_POOL_H

#include "gru_kernel.h"

/* Take `job`'s blocks on the calling thread (scratch: gru_scratch_floats floats) together with up to
 * `helpers` pool workers, and return once every block is done. When another call is using the
 * workers, this one takes every block on the calling thread (same numbers: a row's result does
 * not depend on the thread that computes it). */
GRU_HIDDEN void gru_pool_run(gru_job *job, int helpers, float *scratch);

#endif /* GRU_POOL_H */
