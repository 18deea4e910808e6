/* The worker threads of gru_run: a small persistent pool, started on first use, grown as calls ask
 * for more threads, started over in a forked child.
 *
 * Owns: the pool's state, all of it in one struct (`pool`), and gru_pool_run. One synchronization
 * style: the mutex `mu` guards the pool's fields and the two condition variables; `generation` and
 * `pending` are C11 atomics, written under `mu`, that a waiting thread first reads without the
 * lock for up to SPIN_NS (a worker between back-to-back calls, the caller while the helpers finish
 * their last block) before it sleeps on its condition variable. Idle workers never spin longer.
 * The blocks of a job are handed out through the job's own atomic counter (gru_run_blocks).
 * Includes pool.h (gru_kernel.h). Reads and writes only the jobs it is given and its own state.
 */
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>

#include "pool.h"

#if GRU_X86
#include <immintrin.h>  /* _mm_pause */
#endif

#define MAX_WORKERS 63
#ifndef SPIN_NS
#define SPIN_NS 50000L  /* a waiting thread reads the atomic for at most 50 us, then sleeps */
#endif

typedef struct {
    pthread_mutex_t busy;          /* held by the one call using the workers; others run alone (trylock) */
    pthread_mutex_t mu;            /* guards every field below and the waits on wake and done */
    pthread_cond_t wake;           /* generation advanced */
    pthread_cond_t done;           /* pending reached 0 */
    atomic_long generation;        /* advanced once per posted job */
    atomic_long pending;           /* workers of the current job not done with it yet */
    gru_job *job;                  /* the current job; NULL between jobs */
    int active;                    /* workers 0 .. active-1 take part in the current job */
    int workers;                   /* threads started */
    long start_gen[MAX_WORKERS];   /* the generation when worker i was started: only later ones are new to it */
} gru_pool;

static gru_pool pool = {
    .busy = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER, .done = PTHREAD_COND_INITIALIZER,
};
static pthread_once_t pool_atfork_once = PTHREAD_ONCE_INIT;

/* In a forked child: none of the parent's workers exist there, and a lock may have been held by a
 * thread that is gone. Start over with an empty pool. */
static void pool_after_fork_child(void) {
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&pool.mu, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.done, NULL);
    atomic_store(&pool.generation, 0);
    atomic_store(&pool.pending, 0);
    pool.job = NULL;
    pool.active = pool.workers = 0;
}

static void pool_register_atfork(void) { pthread_atfork(NULL, NULL, pool_after_fork_child); }

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

/* Return once (*v == value) == until_equal, or when SPIN_NS have passed (the clock is read every 64
 * pauses, and then the thread yields: a thread of ours sharing this CPU on an oversubscribed
 * machine runs first). The caller then takes the lock and checks again. */
static void spin(atomic_long *v, long value, int until_equal) {
    if (SPIN_NS <= 0) return;
    const long deadline = now_ns() + SPIN_NS;
    for (int i = 1; (atomic_load_explicit(v, memory_order_acquire) == value) != until_equal; i++) {
        cpu_relax();
        if ((i & 63) == 0) {
            if (now_ns() > deadline) return;
            sched_yield();
        }
    }
}

static void *worker_main(void *arg) {
    const int id = (int)(intptr_t)arg;
    long seen = pool.start_gen[id];  /* written before pthread_create */
    float *scratch = NULL;           /* this worker's, grown as jobs need, kept for the next job */
    size_t scratch_size = 0;
    for (;;) {
        spin(&pool.generation, seen, 0);  /* until a new generation */
        pthread_mutex_lock(&pool.mu);
        while (atomic_load_explicit(&pool.generation, memory_order_relaxed) == seen)
            pthread_cond_wait(&pool.wake, &pool.mu);
        seen = atomic_load_explicit(&pool.generation, memory_order_relaxed);
        gru_job *job = id < pool.active ? pool.job : NULL;
        pthread_mutex_unlock(&pool.mu);
        if (!job) continue;  /* a job for fewer workers than there are */
        const size_t need = gru_scratch_floats(job->m, job->block_rows, job->T);
        if (scratch_size < need) {
            free(scratch);
            scratch = (float *)gru_aligned(sizeof(float) * need);
            scratch_size = scratch ? need : 0;
        }
        if (scratch) gru_run_blocks(job, scratch);  /* without memory, the caller takes every block */
        pthread_mutex_lock(&pool.mu);
        if (atomic_fetch_sub_explicit(&pool.pending, 1, memory_order_release) == 1) pthread_cond_signal(&pool.done);
        pthread_mutex_unlock(&pool.mu);
    }
    return NULL;
}

/* Start workers until there are n (at most MAX_WORKERS); returns how many there are. Caller holds busy. */
static int pool_grow(int n) {
    pthread_once(&pool_atfork_once, pool_register_atfork);
    while (pool.workers < n && pool.workers < MAX_WORKERS) {
        pthread_t th;
        pthread_attr_t attr;
        pool.start_gen[pool.workers] = atomic_load(&pool.generation);
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&th, &attr, worker_main, (void *)(intptr_t)pool.workers);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        pthread_mutex_lock(&pool.mu);
        pool.workers++;
        pthread_mutex_unlock(&pool.mu);
    }
    return pool.workers;
}

void gru_pool_run(gru_job *job, int helpers, float *scratch) {
    if (helpers < 1 || pthread_mutex_trylock(&pool.busy) != 0) {
        gru_run_blocks(job, scratch);
        return;
    }
    const int workers = pool_grow(helpers);
    if (helpers > workers) helpers = workers;
    if (helpers < 1) {  /* no thread could be started */
        pthread_mutex_unlock(&pool.busy);
        gru_run_blocks(job, scratch);
        return;
    }
    pthread_mutex_lock(&pool.mu);  /* pending is 0 here: the previous job was waited for */
    pool.job = job;
    pool.active = helpers;
    atomic_store_explicit(&pool.pending, helpers, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.mu);

    gru_run_blocks(job, scratch);

    spin(&pool.pending, 0, 1);  /* until every helper is done: their last blocks end about now */
    pthread_mutex_lock(&pool.mu);
    while (atomic_load_explicit(&pool.pending, memory_order_relaxed) > 0) pthread_cond_wait(&pool.done, &pool.mu);
    pool.job = NULL;
    pool.active = 0;
    pthread_mutex_unlock(&pool.mu);
    pthread_mutex_unlock(&pool.busy);
}
