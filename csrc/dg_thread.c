/*
 * dg_thread.c -- the core's one thread pool: a small persistent pthreads pool
 * with a parallel-for whose partition is fixed by the thread count.
 *
 * Why a pool of our own: OpenBLAS (pthreads build) busy-waits its worker
 * threads, and a second pool (OpenMP, or OpenBLAS's own) fighting over the same
 * cores made a training step three times slower on a 2-core machine. So the core
 * keeps OpenBLAS at ONE thread and runs everything, GEMMs included (dg_gemm.c
 * splits a product into per-thread blocks, each one single-threaded sgemm), on
 * this pool.
 *
 * Determinism: dg_parallel(fn, ctx, nt) calls fn(ctx, t, nt) once for every
 * task t in [0, nt). What task t computes may depend on (t, nt) only, never on
 * timing or on which OS thread runs it, and tasks write disjoint memory. (One
 * exception, in dg_conv_direct.c: its tasks, one per thread since each owns a
 * scratch slot, take images from a counter of their own, so WHICH images a task
 * computes depends on timing; every image is still computed the same way and
 * written to its own memory, so the values do not. Its tasks may also wait for
 * the task packing the weights of a part to finish (dg_relax); only a task that
 * is running packs, and tasks run one after the other pack as they come, so the
 * wait always ends.) The
 * threads of the pool CLAIM tasks one at a time from a shared counter, so a
 * thread that the OS delays (a loaded machine) leaves its share to the others
 * instead of stalling the region; which thread runs a task changes nothing in
 * the result. When the pool cannot run the region (busy with a call from
 * another thread, nested inside a task, a worker could not be started) the
 * calling thread runs all nt tasks itself: the same bits again. Callers choose
 * nt from the size of the work (dg_threads_for): 1 for small ops (no
 * synchronisation at all), else a multiple of the pool size, so results
 * depend on the thread count only.
 *
 * Waiting: a worker spins (with a pause) for 5 ms after a region (200 us when
 * the pool has more threads than the process has CPUs), since the next one
 * usually follows within microseconds, then sleeps on a
 * condition variable; the caller, once no task is left to claim, spins
 * (yielding after a while) until the claimed ones are finished.
 *
 * Life cycle: workers start lazily at the first parallel region after
 * dg_set_num_threads(n > 1); they are joined by dg_set_num_threads (when the
 * pool shrinks) and at process exit (atexit). After fork() the child starts
 * with no workers (pthread_atfork) and restarts them lazily. No allocation
 * happens here besides pthread_create's own stacks.
 */
#define _GNU_SOURCE
#include "distgan.h"
#include "dg_internal.h"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <stdatomic.h>
#include <time.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define DG_PAUSE() _mm_pause()
#else
#define DG_PAUSE() ((void)0)
#endif

/* Most threads of the pool (the caller plus DG_MAX_THREADS - 1 workers). */
#define DG_MAX_THREADS 64
/* How long an idle worker spins before it sleeps (ns): longer than the serial
 * stretches of a training step (one-thread ops and the Python between calls, up to
 * ~1 ms), so that the next region does not wait for a sleeping worker's wake-up, a
 * futex and a vCPU the hypervisor must wake (the 2-thread step 0-4 % faster than
 * with 200 us in five paired runs on Ice Lake, PERFORMANCE.md log 86); libgomp's
 * default spin is of the same order. */
#define DG_SPIN_NS 5000000L
/* ... unless the pool has more threads than the process has CPUs: a spinning
 * worker then takes a CPU from a thread with work (the caller's Python between
 * regions, another worker), so it sleeps soon, as libgomp's workers do when
 * oversubscribed (the C and Python tests run 3 threads on 2 CPUs). */
#define DG_SPIN_SHORT_NS 200000L

typedef struct {
    pthread_mutex_t lock;          /* guards sleepers, quit and the wake-up */
    pthread_cond_t wake;
    pthread_mutex_t busy;          /* held by the thread dispatching a region */
    atomic_uint gen;               /* odd while a region is being set up, even once published */
    atomic_int active;             /* workers inside the current region */
    atomic_int next;               /* next task to claim */
    atomic_int finished;           /* tasks finished */
    int sleepers;
    int quit;
    int started;                   /* workers running: ids 1..started */
    int size;                      /* threads of the pool, caller included */
    atomic_long spin_ns;           /* how long an idle worker spins (dg_threads_set) */
    dg_task_fn fn;                 /* the current region */
    void *ctx;
    int nt;
    pthread_t tid[DG_MAX_THREADS];
} dg_pool;

static dg_pool pool = {
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
    .busy = PTHREAD_MUTEX_INITIALIZER,
    .size = 1,
    .spin_ns = DG_SPIN_SHORT_NS,
};

/* Set in worker threads: a region started from inside a task runs serially. */
static _Thread_local int in_worker = 0;
/* Set while this thread runs a task of a region of more than one task: the
 * regions a task starts then get one task (dg_threads_for), as they would run
 * serially anyway. */
static _Thread_local int in_task = 0;
static pthread_once_t hooks_once = PTHREAD_ONCE_INIT;

static long now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

/* Claims and runs tasks of the published region until none is left. */
static void run_tasks(dg_task_fn fn, void *ctx, int nt) {
    for (;;) {
        int t = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed);
        if (t >= nt) break;
        in_task++;
        fn(ctx, t, nt);
        in_task--;
        atomic_fetch_add_explicit(&pool.finished, 1, memory_order_release);
    }
}

/* A worker: waits for a published region it has not seen, enters it (active),
 * helps with its tasks, leaves. Entering follows the Dekker pattern with the
 * dispatcher (both sides seq_cst): the worker increments active THEN reads gen,
 * the dispatcher makes gen odd THEN reads active, so either the worker sees
 * the region being rewritten and backs off, or the dispatcher waits for it to
 * leave before it rewrites the region's fields. */
static void *worker_main(void *arg) {
    (void)arg;
    unsigned seen = 0;
    in_worker = 1;
    for (;;) {
        unsigned g = atomic_load(&pool.gen);
        if (g == seen || (g & 1u)) {
            long t0 = now_ns();
            for (int spins = 0; g == seen || (g & 1u); spins++) {
                DG_PAUSE();
                g = atomic_load(&pool.gen);
                if ((spins & 255) == 255 &&
                    now_ns() - t0 > atomic_load_explicit(&pool.spin_ns, memory_order_relaxed))
                    break;
            }
        }
        if (g == seen || (g & 1u)) {
            pthread_mutex_lock(&pool.lock);
            pool.sleepers++;
            while (((g = atomic_load(&pool.gen)) == seen || (g & 1u)) && !pool.quit) {
                pthread_cond_wait(&pool.wake, &pool.lock);
            }
            pool.sleepers--;
            int quit = pool.quit;
            pthread_mutex_unlock(&pool.lock);
            if (quit) break;
        }
        atomic_fetch_add(&pool.active, 1);
        if (atomic_load(&pool.gen) == g) {
            /* region g is published and cannot be rewritten while we are active */
            run_tasks(pool.fn, pool.ctx, pool.nt);
            seen = g;
        }
        atomic_fetch_sub(&pool.active, 1);
    }
    return NULL;
}

/* Joins every worker; the caller holds pool.busy. */
static void stop_workers(void) {
    if (pool.started == 0) return;
    pthread_mutex_lock(&pool.lock);
    pool.quit = 1;
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    for (int i = 1; i <= pool.started; i++) pthread_join(pool.tid[i], NULL);
    pool.started = 0;
    pool.quit = 0;
}

/* Starts workers 1..size-1; returns 0 if any could not be started (the pool
 * then runs regions serially). The caller holds pool.busy. */
static int start_workers(void) {
    while (pool.started < pool.size - 1) {
        int id = pool.started + 1;
        if (pthread_create(&pool.tid[id], NULL, worker_main, (void *)(intptr_t)id) != 0) {
            return 0;
        }
        pool.started = id;
    }
    return 1;
}

static void at_exit(void) {
    pthread_mutex_lock(&pool.busy);
    stop_workers();
    pthread_mutex_unlock(&pool.busy);
}

/* The child of a fork has only the forking thread: forget the workers. */
static void after_fork_child(void) {
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_mutex_init(&pool.busy, NULL);
    pool.started = 0;
    pool.sleepers = 0;
    pool.quit = 0;
    atomic_store(&pool.active, 0);   /* workers that were inside a region are gone */
}

static void before_fork(void) { pthread_mutex_lock(&pool.busy); }
static void after_fork_parent(void) { pthread_mutex_unlock(&pool.busy); }

static void install_hooks(void) {
    atexit(at_exit);
    pthread_atfork(before_fork, after_fork_parent, after_fork_child);
}

/* CPUs this process may run on (its affinity mask; the online CPUs if that fails). */
static int process_cpus(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n >= 1 ? (int)n : 1;
}

void dg_threads_set(int n) {
    if (n < 1) return;
    if (n > DG_MAX_THREADS) n = DG_MAX_THREADS;
    pthread_once(&hooks_once, install_hooks);
    pthread_mutex_lock(&pool.busy);
    if (n < pool.size) stop_workers();
    pool.size = n;
    atomic_store_explicit(&pool.spin_ns, n <= process_cpus() ? DG_SPIN_NS : DG_SPIN_SHORT_NS,
                          memory_order_relaxed);
    pthread_mutex_unlock(&pool.busy);
}

int dg_threads_get(void) {
    dg_threads_init();
    return pool.size;
}

/* Most tasks per thread in one region (finer tasks balance a loaded machine). */
#define DG_TASKS_PER_THREAD 4

int dg_threads_for(double work, double grain) {
    int size = dg_threads_get();
    if (size <= 1 || in_task || !(work >= 2.0 * grain)) return 1;
    double per = work / (grain * size);   /* tasks per thread the work is worth */
    if (per < 1.0) return (int)(work / grain) >= size ? size : (int)(work / grain);
    return size * (per >= DG_TASKS_PER_THREAD ? DG_TASKS_PER_THREAD : (int)per);
}

static void run_serial(dg_task_fn fn, void *ctx, int nt) {
    in_task++;
    for (int t = 0; t < nt; t++) fn(ctx, t, nt);
    in_task--;
}

void dg_relax(int spins) {
    if (spins < 4096) {
        DG_PAUSE();
    } else {
        sched_yield();
    }
}

void dg_parallel(dg_task_fn fn, void *ctx, int nt) {
    if (nt <= 1) {
        fn(ctx, 0, 1);
        return;
    }
    if (in_worker || pool.size <= 1 || pthread_mutex_trylock(&pool.busy) != 0) {
        run_serial(fn, ctx, nt);
        return;
    }
    if (!start_workers()) {
        pthread_mutex_unlock(&pool.busy);
        run_serial(fn, ctx, nt);
        return;
    }
    /* set the region up: gen odd, wait for the workers still inside the last one */
    unsigned g = atomic_load(&pool.gen);
    atomic_store(&pool.gen, g + 1);
    for (int spins = 0; atomic_load(&pool.active) != 0; spins++) dg_relax(spins);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.nt = nt;
    atomic_store(&pool.next, 0);
    atomic_store(&pool.finished, 0);
    /* publish (gen even) and wake the sleepers */
    pthread_mutex_lock(&pool.lock);
    atomic_store(&pool.gen, g + 2);
    if (pool.sleepers > 0) pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);
    run_tasks(fn, ctx, nt);
    /* the tasks other threads claimed */
    for (int spins = 0;
         atomic_load_explicit(&pool.finished, memory_order_acquire) < nt; spins++)
        dg_relax(spins);
    pthread_mutex_unlock(&pool.busy);
}

void dg_split(size_t n, size_t align, int t, int nt, size_t *lo, size_t *hi) {
    if (align < 1) align = 1;
    size_t blocks = (n + align - 1) / align;
    size_t b0 = blocks * (size_t)t / (size_t)nt, b1 = blocks * (size_t)(t + 1) / (size_t)nt;
    size_t l = b0 * align, h = b1 * align;
    *lo = l < n ? l : n;
    *hi = h < n ? h : n;
}
