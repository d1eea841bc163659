/* kernels_tensor_impl.h: the general tensor kernels declared in kernels_tensor.h, written once
 * and compiled twice (included from kernels_f32.c and kernels_f64.c after kernels_seq_impl.h,
 * with REAL, KN, GEMM and EXP defined there).
 *
 * Strided tensors are walked a row at a time: the offset of a row's first element is found
 * from its index (one division per axis), the row's elements step by the last axis's stride. */
#include <math.h>
#include <string.h>

/* offsets into up to three strided operands of row r of an nd-axis walk (the last axis is the
 * row): s[k] the strides of operand k, o[k] its offset */
static inline void KN(row_offsets)(size_t r, int nd, const int *dims, const int *const s[3], int nops, size_t o[3]) {
    for (int k = 0; k < nops; k++) o[k] = 0;
    for (int d = nd - 2; d >= 0; d--) {
        const size_t i = r % (size_t)dims[d];
        r /= (size_t)dims[d];
        for (int k = 0; k < nops; k++) o[k] += i * (size_t)s[k][d];
    }
}

void KN(unary_fwd)(REAL *out, const REAL *in, size_t n, int op, REAL alpha) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t j = 0; j < n; j++) {
        const double x = in[j];
        double y;
        switch (op) {
        case DP__UN_ERF: y = erf(x); break;
        case DP__UN_SQRT: y = sqrt(x); break;
        case DP__UN_EXP: y = exp(x); break;
        case DP__UN_NEG: y = -x; break;
        case DP__UN_LEAKY: y = x > 0 ? x : alpha * x; break;
        case DP__UN_RECIP: y = 1 / x; break;
        case DP__UN_LOG: y = log(x); break;
        default: y = fabs(x); break;
        }
        out[j] = (REAL)y;
    }
}

void KN(unary_bwd)(REAL *din, const REAL *g, const REAL *in, size_t n, int op, REAL alpha) {
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t j = 0; j < n; j++) {
        const double x = in[j];
        double d;
        switch (op) {
        case DP__UN_ERF: d = 1.1283791670955126 * exp(-x * x); break; /* 2 / sqrt(pi) */
        case DP__UN_SQRT: d = 0.5 / sqrt(x); break;
        case DP__UN_EXP: d = exp(x); break;
        case DP__UN_NEG: d = -1; break;
        case DP__UN_LEAKY: d = x > 0 ? 1 : alpha; break;
        case DP__UN_RECIP: d = -1 / (x * x); break;
        case DP__UN_LOG: d = 1 / x; break;
        default: d = x > 0 ? 1 : x < 0 ? -1 : 0; break;
        }
        din[j] = (REAL)(g[j] * d);
    }
}

static inline double KN(bin)(double a, double b, int op) {
    switch (op) {
    case DP__BIN_ADD: return a + b;
    case DP__BIN_SUB: return a - b;
    case DP__BIN_MUL: return a * b;
    case DP__BIN_DIV: return a / b;
    default: return pow(a, b);
    }
}

void KN(binary_fwd)(REAL *out, const REAL *a, const REAL *b, int nd, const int *dims, const int *sa, const int *sb,
                    int op) {
    size_t rows = 1;
    for (int d = 0; d + 1 < nd; d++) rows *= (size_t)dims[d];
    const int last = nd ? dims[nd - 1] : 1, la = nd ? sa[nd - 1] : 0, lb = nd ? sb[nd - 1] : 0;
    const int *const s[3] = {sa, sb, NULL};
#pragma omp parallel for schedule(static) if (rows * (size_t)last > 65536)
    for (size_t r = 0; r < rows; r++) {
        size_t o[3];
        KN(row_offsets)(r, nd, dims, s, 2, o);
        REAL *y = out + r * (size_t)last;
        for (int i = 0; i < last; i++) y[i] = (REAL)KN(bin)(a[o[0] + (size_t)i * la], b[o[1] + (size_t)i * lb], op);
    }
}

/* does an operand written with strides s cover dims one to one (no broadcast axis)? */
static int KN(no_broadcast)(int nd, const int *dims, const int *s) {
    for (int d = 0; d < nd; d++)
        if (dims[d] > 1 && s[d] == 0) return 0;
    return 1;
}

void KN(binary_bwd)(REAL *da, REAL *db, const REAL *g, const REAL *a, const REAL *b, const REAL *out, int nd,
                    const int *dims, const int *sa, const int *sb, int op) {
    size_t rows = 1;
    for (int d = 0; d + 1 < nd; d++) rows *= (size_t)dims[d];
    const int last = nd ? dims[nd - 1] : 1, la = nd ? sa[nd - 1] : 0, lb = nd ? sb[nd - 1] : 0;
    const int *const s[3] = {sa, sb, NULL};
    /* rows write disjoint elements unless an operand written to is broadcast: then in order */
    const int par = (!da || KN(no_broadcast)(nd, dims, sa)) && (!db || KN(no_broadcast)(nd, dims, sb));
#pragma omp parallel for schedule(static) if (par && rows * (size_t)last > 65536)
    for (size_t r = 0; r < rows; r++) {
        size_t o[3];
        KN(row_offsets)(r, nd, dims, s, 2, o);
        const REAL *gr = g + r * (size_t)last, *yr = out ? out + r * (size_t)last : NULL;
        for (int i = 0; i < last; i++) {
            const size_t ia = o[0] + (size_t)i * la, ib = o[1] + (size_t)i * lb;
            const double x = a[ia], w = b[ib], gi = gr[i];
            double ga, gb;
            switch (op) {
            case DP__BIN_ADD: ga = gi, gb = gi; break;
            case DP__BIN_SUB: ga = gi, gb = -gi; break;
            case DP__BIN_MUL: ga = gi * w, gb = gi * x; break;
            case DP__BIN_DIV: ga = gi / w, gb = -gi * x / (w * w); break;
            default:
                ga = gi * w * pow(x, w - 1);
                gb = db ? gi * (yr ? (double)yr[i] : pow(x, w)) * log(x) : 0;
                break;
            }
            if (da) da[ia] += (REAL)ga;
            if (db) db[ib] += (REAL)gb;
        }
    }
}

void KN(softmax_fwd)(REAL *out, const REAL *in, size_t rows, int n, int lg) {
#pragma omp parallel for schedule(static) if (rows * (size_t)n > 16384)
    for (size_t r = 0; r < rows; r++) {
        const REAL *x = in + r * (size_t)n;
        REAL *y = out + r * (size_t)n;
        double mx = -INFINITY, sum = 0;
        for (int i = 0; i < n; i++)
            if (x[i] > mx) mx = x[i];
        for (int i = 0; i < n; i++) {
            const REAL e = EXP((REAL)(x[i] - mx));
            sum += e;
            if (!lg) y[i] = e;
        }
        if (lg) {
            const double ls = mx + log(sum);
            for (int i = 0; i < n; i++) y[i] = (REAL)(x[i] - ls);
        } else {
            const REAL inv = (REAL)(1 / sum);
            for (int i = 0; i < n; i++) y[i] *= inv;
        }
    }
}

void KN(softmax_bwd)(REAL *din, const REAL *g, const REAL *out, size_t rows, int n, int lg) {
#pragma omp parallel for schedule(static) if (rows * (size_t)n > 16384)
    for (size_t r = 0; r < rows; r++) {
        const REAL *gr = g + r * (size_t)n, *y = out + r * (size_t)n;
        REAL *d = din + r * (size_t)n;
        double s = 0;
        if (lg) {
            for (int i = 0; i < n; i++) s += gr[i];
            for (int i = 0; i < n; i++) d[i] = (REAL)(gr[i] - EXP(y[i]) * s);
        } else {
            for (int i = 0; i < n; i++) s += (double)gr[i] * y[i];
            for (int i = 0; i < n; i++) d[i] = (REAL)(y[i] * (gr[i] - s));
        }
    }
}

void KN(permute)(REAL *dst, const REAL *src, int B, int nd, const int *dims, const int *perm, int scatter) {
    size_t n = 1, istr[DP__TMAXD];
    for (int d = nd - 1; d >= 0; d--) {
        istr[d] = n;
        n *= (size_t)dims[d];
    }
    int od[DP__TMAXD], os[DP__TMAXD];
    for (int j = 0; j < nd; j++) {
        od[j] = dims[perm[j]];
        os[j] = (int)istr[perm[j]];
    }
    size_t rows = 1;
    for (int d = 0; d + 1 < nd; d++) rows *= (size_t)od[d];
    const int last = nd ? od[nd - 1] : 1, ls = nd ? os[nd - 1] : 0;
    const int *const s[3] = {os, NULL, NULL};
#pragma omp parallel for schedule(static) if ((size_t)B * n > 65536)
    for (int b = 0; b < B; b++) {
        const REAL *x = src + (size_t)b * n;
        REAL *y = dst + (size_t)b * n;
        for (size_t r = 0; r < rows; r++) {
            size_t o[3];
            KN(row_offsets)(r, nd, od, s, 1, o);
            const size_t q = r * (size_t)last;
            if (scatter)
                for (int i = 0; i < last; i++) y[o[0] + (size_t)i * ls] = x[q + i];
            else
                for (int i = 0; i < last; i++) y[q + i] = x[o[0] + (size_t)i * ls];
        }
    }
}

void KN(slice)(REAL *dst, const REAL *src, int B, size_t outer, int n, size_t inner, int start, int count, int step,
               int mode) {
    const size_t big = outer * (size_t)n * inner, small = outer * (size_t)count * inner;
#pragma omp parallel for schedule(static) if ((size_t)B * small > 65536)
    for (int b = 0; b < B; b++) {
        if (mode == 1) memset(dst + (size_t)b * big, 0, sizeof(REAL) * big);
        for (size_t o = 0; o < outer; o++)
            for (int i = 0; i < count; i++) {
                const size_t pb = (size_t)b * big + (o * (size_t)n + (size_t)(start + (ptrdiff_t)i * step)) * inner;
                const size_t ps = (size_t)b * small + (o * (size_t)count + (size_t)i) * inner;
                if (mode == 0)
                    memcpy(dst + ps, src + pb, sizeof(REAL) * inner);
                else
                    memcpy(dst + pb, src + ps, sizeof(REAL) * inner);
            }
    }
}

void KN(bmm_fwd)(REAL *C, const REAL *A, const REAL *Bm, int B, int G, int M, int K, int N, int ga, int gb) {
    const size_t sa = (size_t)(ga ? G : 1) * M * K, sb = (size_t)(gb ? G : 1) * K * N, sc = (size_t)G * M * N;
#pragma omp parallel for schedule(static) if (B > 1)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++)
            GEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1, A + b * sa + (size_t)(ga ? g : 0) * M * K, K,
                 Bm + b * sb + (size_t)(gb ? g : 0) * K * N, N, 0, C + b * sc + (size_t)g * M * N, N);
}

void KN(bmm_bwd)(REAL *dA, REAL *dB, int acc_a, int acc_b, const REAL *dC, const REAL *A, const REAL *Bm, int B, int G,
                 int M, int K, int N, int ga, int gb) {
    const size_t sa = (size_t)(ga ? G : 1) * M * K, sb = (size_t)(gb ? G : 1) * K * N, sc = (size_t)G * M * N;
#pragma omp parallel for schedule(static) if (B > 1)
    for (int b = 0; b < B; b++)
        for (int g = 0; g < G; g++) {
            const REAL *dc = dC + b * sc + (size_t)g * M * N;
            const size_t oa = b * sa + (size_t)(ga ? g : 0) * M * K, ob = b * sb + (size_t)(gb ? g : 0) * K * N;
            if (dA)
                GEMM(CblasRowMajor, CblasNoTrans, CblasTrans, M, K, N, 1, dc, N, Bm + ob, N,
                     acc_a || (!ga && g > 0) ? 1 : 0, dA + oa, K);
            if (dB)
                GEMM(CblasRowMajor, CblasTrans, CblasNoTrans, K, N, M, 1, A + oa, K, dc, N,
                     acc_b || (!gb && g > 0) ? 1 : 0, dB + ob, N);
        }
}

/* A reduction's walk of one sample's input [dims], a row (its last axis) at a time: the
 * reduced tensor's strides seen along the input's axes (0 on reduced ones), its size, the
 * input's size, rows and row length, and the scale (1 / values per output for a mean). */
typedef struct {
    int os[DP__TMAXD], last, ls;
    size_t nout, n, rows;
    double scale;
} KN(reduce_walk);

static KN(reduce_walk) KN(reduce_map)(int nd, const int *dims, unsigned axes, int mean) {
    KN(reduce_walk) w;
    size_t s = 1, c = 1;
    for (int d = nd - 1; d >= 0; d--) {
        if (axes >> d & 1u) {
            w.os[d] = 0;
            c *= (size_t)dims[d];
        } else {
            w.os[d] = (int)s;
            s *= (size_t)dims[d];
        }
    }
    w.nout = s;
    w.n = s * c;
    w.rows = 1;
    for (int d = 0; d + 1 < nd; d++) w.rows *= (size_t)dims[d];
    w.last = nd ? dims[nd - 1] : 1;
    w.ls = nd ? w.os[nd - 1] : 0;
    w.scale = mean ? 1.0 / (double)c : 1.0;
    return w;
}

void KN(reduce_fwd)(REAL *out, const REAL *in, int B, int nd, const int *dims, unsigned axes, int mean) {
    const KN(reduce_walk) w = KN(reduce_map)(nd, dims, axes, mean);
    const int *const s[3] = {w.os, NULL, NULL};
#pragma omp parallel for schedule(static) if ((size_t)B * w.n > 65536)
    for (int b = 0; b < B; b++) {
        REAL *y = out + (size_t)b * w.nout;
        const REAL *x = in + (size_t)b * w.n;
        memset(y, 0, sizeof(REAL) * w.nout);
        for (size_t r = 0; r < w.rows; r++) {
            size_t o[3];
            KN(row_offsets)(r, nd, dims, s, 1, o);
            for (int i = 0; i < w.last; i++) y[o[0] + (size_t)i * w.ls] += x[r * (size_t)w.last + i];
        }
        for (size_t j = 0; j < w.nout; j++) y[j] = (REAL)(y[j] * w.scale);
    }
}

void KN(reduce_bwd)(REAL *din, const REAL *g, int B, int nd, const int *dims, unsigned axes, int mean) {
    const KN(reduce_walk) w = KN(reduce_map)(nd, dims, axes, mean);
    const int *const s[3] = {w.os, NULL, NULL};
    const REAL sc = (REAL)w.scale;
#pragma omp parallel for schedule(static) if ((size_t)B * w.n > 65536)
    for (int b = 0; b < B; b++) {
        const REAL *gy = g + (size_t)b * w.nout;
        REAL *dx = din + (size_t)b * w.n;
        for (size_t r = 0; r < w.rows; r++) {
            size_t o[3];
            KN(row_offsets)(r, nd, dims, s, 1, o);
            for (int i = 0; i < w.last; i++) dx[r * (size_t)w.last + i] = gy[o[0] + (size_t)i * w.ls] * sc;
        }
    }
}
