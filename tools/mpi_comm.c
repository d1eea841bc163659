/* mpi_comm.c: dp_train_comm over MPI (see mpi_comm.h, docs/distributed.md). */
#define _POSIX_C_SOURCE 200809L
#include <stdlib.h>

#include "mpi_comm.h"

static double watch_s = DP_CLI_MPI_TIMEOUT_DEFAULT; /* --mpi-timeout; 0: wait forever */

void dp_cli_mpi_set_timeout(double seconds) { watch_s = seconds; }

#ifdef DP_HAVE_MPI
#include <mpi.h>
#include <sched.h>
#include <signal.h>
#include <string.h>
#include <time.h>

static int mpi_started;
static void *recv_buf; /* rank 0: the chunks received from the other ranks */
static size_t recv_cap;

enum { TAG_PART = 0x7a11, TAG_SUM };

/* Completes the n requests r (a completed one becomes MPI_REQUEST_NULL) or gives up at
 * `deadline` (MPI_Wtime; 0 = never); returns the index of a request left incomplete, or -1
 * when all completed. Polls instead of blocking, so that a rank that never answers cannot
 * hold this one forever: it spins (yielding the core) for the first second, then sleeps 1 ms
 * between polls, so a stalled peer costs little CPU. */
static int wait_until(int n, MPI_Request *r, double deadline) {
    const double t0 = MPI_Wtime();
    for (;;) {
        int left = -1;
        for (int i = 0; i < n; i++) {
            int done = 0;
            if (r[i] == MPI_REQUEST_NULL) continue;
            if (MPI_Test(&r[i], &done, MPI_STATUS_IGNORE) != MPI_SUCCESS) return i;
            if (!done && left < 0) left = i;
        }
        if (left < 0) return -1;
        const double t = MPI_Wtime();
        if (deadline > 0 && t > deadline) return left;
        if (t - t0 < 1.0) sched_yield();
        else nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}

/* the error of a wait that ran out; on rank 0, `what` is what rank `who` did not do ("send its
 * part of", "take") the sum */
static dp_status watchdog_fail(int rank, int size, int who, double waited, const char *what) {
    if (rank == 0)
        return dp_fail(DP_ERR_IO, "MPI watchdog: rank %d of %d did not %s the sum over the ranks within %g s (stopped, "
                       "stalled or dead; --mpi-timeout sets the wait); ending the job", who, size, what, waited);
    return dp_fail(DP_ERR_IO, "MPI watchdog: rank 0 did not answer rank %d within %g s (rank 0 stopped, stalled or "
                   "dead; --mpi-timeout sets the wait); ending the job", rank, waited);
}

/* The sum over the ranks, by messages between rank 0 and each other rank: each sends its
 * values to rank 0, which adds them in rank order and sends the sum back. The result is
 * computed once, on rank 0, and copied bit for bit to the others, so every rank holds
 * identical values (MPI_Allreduce does not promise that: an implementation may reduce in a
 * different order on different ranks). Done by hand rather than MPI_Reduce and MPI_Bcast so
 * that every wait has a deadline (the watchdog); Open MPI's non-blocking collectives, which
 * would allow one, took twice as long here.
 *
 * The watchdog (--mpi-timeout T, docs/distributed.md): rank 0 waits at most T seconds for each
 * rank's part and names the rank that did not send it; the other ranks give rank 0 longer
 * (T + max(10 s, T/2)), so that when another rank is the one missing, rank 0 names it first,
 * and then name rank 0. Either way the error ends the job (the CLI calls MPI_Abort);
 * checkpoints are rank 0's atomic writes, so the last one stays whole. */
static dp_status sum_any(void *buf, size_t n, size_t elem) {
    int rank, size;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size < 2 || n == 0) return DP_OK;
    const double T = watch_s, grace = T / 2 > 10 ? T / 2 : 10, wait = rank == 0 ? T : T + grace;
    const MPI_Datatype type = elem == sizeof(float) ? MPI_FLOAT : MPI_DOUBLE;
    /* chunks, double-buffered: rank 0 receives chunk c + 1 from every other rank while it adds
     * chunk c (two chunks per rank held at once, at most 64 MiB together) */
    size_t chunk = ((size_t)32 << 20) / elem / (size_t)(size - 1);
    if (chunk > ((size_t)1 << 20)) chunk = (size_t)1 << 20;
    if (chunk < 1024) chunk = 1024;
    const size_t slot = chunk * elem, nch = (n + chunk - 1) / chunk;
    if (rank == 0 && recv_cap < 2 * slot * (size_t)(size - 1)) {
        free(recv_buf);
        recv_cap = 2 * slot * (size_t)(size - 1);
        if (!(recv_buf = malloc(recv_cap))) {
            recv_cap = 0;
            return dp_fail(DP_ERR_NOMEM, "MPI sum: no memory for a receive buffer of %zu bytes",
                           2 * slot * (size_t)(size - 1));
        }
    }
    MPI_Request *rq = malloc(sizeof(MPI_Request) * 2 * (size_t)size);
    if (!rq) return dp_fail(DP_ERR_NOMEM, "MPI sum: out of memory for %d ranks", size);
    for (int i = 0; i < 2 * size; i++) rq[i] = MPI_REQUEST_NULL;
    char *p = buf;
    /* chunk c's receive from rank i into slot (c % 2, i), request rq[(c % 2) * size + i] */
#define PART(c, i) ((char *)recv_buf + (((size_t)(c) % 2) * (size_t)(size - 1) + (size_t)(i) - 1) * slot)
#define COUNT(c) ((int)(n - (size_t)(c) * chunk < chunk ? n - (size_t)(c) * chunk : chunk))
    dp_status st = DP_OK;
    int late;
    if (rank == 0) {
        for (int i = 1; i < size; i++) MPI_Irecv(PART(0, i), COUNT(0), type, i, TAG_PART, MPI_COMM_WORLD, &rq[i]);
        for (size_t c = 0; c < nch; c++) {
            MPI_Request *r = rq + (c % 2) * (size_t)size;
            if ((late = wait_until(size, r, T > 0 ? MPI_Wtime() + T : 0)) >= 0) {
                st = watchdog_fail(rank, size, late, T, "send its part of");
                break;
            }
            if (c + 1 < nch)
                for (int i = 1; i < size; i++)
                    MPI_Irecv(PART(c + 1, i), COUNT(c + 1), type, i, TAG_PART, MPI_COMM_WORLD,
                              &rq[((c + 1) % 2) * (size_t)size + (size_t)i]);
            const int k = COUNT(c);
            char *dst = p + c * slot;
            for (int i = 1; i < size; i++) { /* in rank order: the same sum every time */
                if (elem == sizeof(float))
                    for (int j = 0; j < k; j++) ((float *)dst)[j] += ((const float *)PART(c, i))[j];
                else
                    for (int j = 0; j < k; j++) ((double *)dst)[j] += ((const double *)PART(c, i))[j];
            }
        }
    } else {
        for (size_t c = 0; c < nch && st == DP_OK; c++) { /* at most two chunks in flight */
            if ((late = wait_until(1, &rq[c % 2], T > 0 ? MPI_Wtime() + wait : 0)) >= 0)
                st = watchdog_fail(rank, size, 0, wait, "");
            else
                MPI_Isend(p + c * slot, COUNT(c), type, 0, TAG_PART, MPI_COMM_WORLD, &rq[c % 2]);
        }
        if (st == DP_OK && (late = wait_until(2, rq, T > 0 ? MPI_Wtime() + wait : 0)) >= 0)
            st = watchdog_fail(rank, size, 0, wait, "");
    }
#undef PART
#undef COUNT
    const size_t big = (size_t)1 << 28; /* the sum, back to every rank (counts are int) */
    for (size_t off = 0; off < n && st == DP_OK; off += big) {
        const int k = (int)(n - off < big ? n - off : big);
        if (rank == 0) {
            rq[0] = MPI_REQUEST_NULL;
            for (int i = 1; i < size; i++) MPI_Isend(p + off * elem, k, type, i, TAG_SUM, MPI_COMM_WORLD, &rq[i]);
            if ((late = wait_until(size, rq, T > 0 ? MPI_Wtime() + T : 0)) >= 0) st = watchdog_fail(rank, size, late, T, "take");
        } else {
            MPI_Irecv(p + off * elem, k, type, 0, TAG_SUM, MPI_COMM_WORLD, &rq[0]);
            if ((late = wait_until(1, rq, T > 0 ? MPI_Wtime() + wait : 0)) >= 0) st = watchdog_fail(rank, size, 0, wait, "");
        }
    }
    /* after a failure the job ends (the CLI calls MPI_Abort): pending requests are left */
    free(rq);
    return st;
}

static dp_status sum_f32(void *user, float *buf, size_t n) {
    (void)user;
    return sum_any(buf, n, sizeof(float));
}

static dp_status sum_f64(void *user, double *buf, size_t n) {
    (void)user;
    return sum_any(buf, n, sizeof(double));
}

int dp_cli_mpi_init(dp_train_comm *c) {
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMI_SIZE") && !getenv("PMIX_RANK")) return 0;
    if (MPI_Init(NULL, NULL) != MPI_SUCCESS) return 0;
    mpi_started = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &c->size);
    c->user = NULL;
    c->sum_f32 = sum_f32;
    c->sum_f64 = sum_f64;
    return 1;
}

void dp_cli_mpi_finalize(void) {
    if (mpi_started) MPI_Finalize();
    mpi_started = 0;
    free(recv_buf);
    recv_buf = NULL;
    recv_cap = 0;
}

void dp_cli_mpi_abort(int code) {
    if (!mpi_started) return;
    /* Open MPI ends the other processes with SIGTERM: not a request to stop at a step boundary */
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    MPI_Abort(MPI_COMM_WORLD, code);
}

#else /* built without MPI */

int dp_cli_mpi_init(dp_train_comm *c) {
    (void)c;
    return 0;
}

void dp_cli_mpi_finalize(void) {}

void dp_cli_mpi_abort(int code) { (void)code; }

#endif
