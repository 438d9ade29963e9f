/* A float32 matrix product for the convolutions: packed panels and a register-
 * blocked micro-kernel, the classic layout of fast GEMMs.  See ev_gemm.h.
 *
 * Why here and not BLAS: the OpenBLAS that numpy wheels ship picks its 256-bit
 * kernels on CPUs it does not know by name, which on this machine's 512-bit cores
 * leaves half the multiply-add width unused; conv's three products per layer
 * (forward, input and weight gradients) are most of a convnet's step.
 *
 * Blocking (sizes in floats): C is computed in MR x NR tiles kept in 24 vector
 * registers (MR x 32 in 16 when the columns fit those better); K runs in blocks of
 * KC so that a B panel (KC x NR, 48 KB) and an A panel stay in L1 while the tile
 * accumulates; B is taken NC columns at a time (NC x KC in L2), A MC rows.
 *
 * An operand whose rows are contiguous along the product's inner loops (A along
 * k, B along n) is read in place, its rows anywhere (an offset table, ev_mat):
 * that is how a stride-1 convolution reads its taps straight from the padded
 * image.  Other operands (transposes, strided views) and the last, partial panels
 * are packed into the work buffer, edges padded with zeros, so the kernel only
 * ever sees full panels; partial tiles of C go through a local tile.
 *
 * Written with gcc's vector extensions, not intrinsics: a build without
 * -march=native still compiles it (to narrower vectors) and gives the same sums.
 */
#include <stdint.h>
#include <string.h>
#include "ev_gemm.h"

#define MR 8
#define NR 48           /* the widest panel; narrow ones are 32 (see ev__width) */
#define KC 256
#define MC 192
#define NC 480          /* a multiple of both panel widths */
#define VL 16           /* floats per vector */

typedef float v16 __attribute__((vector_size(64)));

int64_t ev_gemm_work_f32(void) {
    return (int64_t)MC * KC + (int64_t)NC * KC + 16;    /* + 16: room to align to 64 B */
}

int ev_gemm_wide(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}

static inline v16 ev__load(const float* p) {
    v16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void ev__store(float* p, v16 v) { memcpy(p, &v, sizeof v); }

/* NOTE: every lane spelled out, not 0 + x: that add is not an identity under IEEE
 * rules (-0), so gcc would keep it, one extra instruction per multiply-add row. */
static inline v16 ev__splat(float x) { return (v16){x, x, x, x, x, x, x, x, x, x, x, x, x, x, x, x}; }

/* Where row r of a matrix starts (ev_mat in ev_gemm.h). */
static inline const float* ev__row(const ev_mat* x, int64_t r) { return x->p + (x->off ? x->off[r] : r * x->rs); }

/* A rows [0, mc) x columns [0, kc) into panels of MR rows: panel r holds, for each p,
 * the MR values A(r*MR + i, p), zero past mc.  (A as seen from row r0, column p0.) */
static void ev__pack_a(const ev_mat* a, int64_t r0, int64_t p0, int64_t mc, int64_t kc, float* ap) {
    for (int64_t r = 0; r < mc; r += MR) {
        const int64_t rows = mc - r < MR ? mc - r : MR;
        if (a->off == NULL && a->rs == 1 && rows == MR) {
            /* A is a transpose (its columns contiguous, e.g. h^T in a weight gradient):
             * each p's MR values are next to each other */
            const float* src = a->p + (r0 + r) + p0 * a->cs;
            for (int64_t p = 0; p < kc; p++)
                for (int64_t i = 0; i < MR; i++) ap[p * MR + i] = src[p * a->cs + i];
            ap += kc * MR;
            continue;
        }
        for (int64_t i = 0; i < MR; i++) {
            if (i >= rows) {
                for (int64_t p = 0; p < kc; p++) ap[p * MR + i] = 0.0f;
                continue;
            }
            const float* src = ev__row(a, r0 + r + i) + p0 * a->cs;
            for (int64_t p = 0; p < kc; p++) ap[p * MR + i] = src[p * a->cs];
        }
        ap += kc * MR;
    }
}

/* B rows [0, kc) x columns [0, nc) into panels of nr columns, zero past nc. */
static void ev__pack_b(const ev_mat* b, int64_t p0, int64_t j0, int64_t kc, int64_t nc, int64_t nr, float* bp) {
    for (int64_t jp = 0; jp < nc; jp += nr, bp += kc * nr) {
        const int64_t cols = nc - jp < nr ? nc - jp : nr;
        if (b->off == NULL && b->rs == 1 && b->cs != 1) {
            /* B is a transpose (its columns contiguous): read down each column, write
             * across the panel (in cache), rather than gather nr columns far apart. */
            for (int64_t j = 0; j < cols; j++) {
                const float* col = b->p + p0 + (j0 + jp + j) * b->cs;
                for (int64_t p = 0; p < kc; p++) bp[p * nr + j] = col[p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++) {
                const float* src = ev__row(b, p0 + p) + (j0 + jp) * b->cs;
                for (int64_t j = 0; j < cols; j++) bp[p * nr + j] = src[j * b->cs];
            }
        }
        for (int64_t p = 0; p < kc; p++)
            for (int64_t j = cols; j < nr; j++) bp[p * nr + j] = 0.0f;
    }
}

/* The panel width for n columns: 48 (three vectors) unless 32-wide panels pad n
 * clearly less (n = 32 would waste a third of a 48-wide tile). */
static int64_t ev__width(int64_t n) {
    const int64_t pad48 = (n + 47) / 48 * 48, pad32 = (n + 31) / 32 * 32;
    return 10 * pad32 < 9 * pad48 ? 32 : 48;
}

/* B's rows for one panel: row p at base + off[p] (off not NULL) or base + p*rs. */
typedef struct {
    const float* base;
    const int64_t* off;
    int64_t rs;
} ev__rows;

/* The MR x (NVEC*16) tile at t (row stride t_rs) = the product of an A panel (row
 * i's element p at a[i][p*a_cs]) and a B panel over kc; added to what t holds when
 * acc, else written.  One function per panel width. */
#define EV__KERNEL(NVEC)                                                                              \
    static void ev__kernel_##NVEC(int64_t kc, const float* const* a, int64_t a_cs, ev__rows b,       \
                                  float* restrict t, int64_t t_rs, int acc) {                        \
        v16 c[MR][NVEC];                                                                              \
        const float* ar[MR];                                                                          \
        for (int i = 0; i < MR; i++) ar[i] = a[i];                                                    \
        for (int i = 0; i < MR; i++)                                                                  \
            for (int v = 0; v < NVEC; v++) c[i][v] = acc ? ev__load(t + i * t_rs + v * VL) : (v16){0}; \
        for (int64_t p = 0; p < kc; p++) {                                                            \
            const float* bp = b.off ? b.base + b.off[p] : b.base + p * b.rs;                          \
            v16 bv[NVEC];                                                                             \
            for (int v = 0; v < NVEC; v++) bv[v] = ev__load(bp + v * VL);                             \
            for (int i = 0; i < MR; i++) {                                                            \
                const v16 ai = ev__splat(ar[i][p * a_cs]);                                            \
                for (int v = 0; v < NVEC; v++) c[i][v] += ai * bv[v];                                 \
            }                                                                                         \
        }                                                                                             \
        for (int i = 0; i < MR; i++)                                                                  \
            for (int v = 0; v < NVEC; v++) ev__store(t + i * t_rs + v * VL, c[i][v]);                 \
    }
EV__KERNEL(3)
EV__KERNEL(2)

static void ev__kernel(int64_t nr, int64_t kc, const float* const* a, int64_t a_cs, ev__rows b, float* t,
                       int64_t t_rs, int acc) {
    if (nr == 48)
        ev__kernel_3(kc, a, a_cs, b, t, t_rs, acc);
    else
        ev__kernel_2(kc, a, a_cs, b, t, t_rs, acc);
}

/* One (jc, pc, ic) block: its A and B panels ready (packed or in place), the tiles
 * of C left to make.
 * NOTE: one thread.  Tiles could split over OpenMP threads, but on a 2-core machine
 * an OpenMP team and the BLAS's threads (which numpy's other products use), both
 * spinning after their work, took turns at 10-20x the time of a product; the
 * compiler leaves the products it would give several threads to the BLAS. */
typedef struct {
    const ev_mat *a, *b;
    const float *ap, *bp;
    float* c;
    int64_t c_rs, nr, jc, pc, ic, nc, kc, mc, nfull, mfull;
    int acc;
} ev__block;

/* Tile t of the block: column panel t / row-panels, row panel t % row-panels. */
static void ev__tile(const ev__block* k, int64_t t) {
    const int64_t npan_i = (k->mc + MR - 1) / MR;
    const int64_t j0 = (t / npan_i) * k->nr, i0 = (t % npan_i) * MR;
    const int64_t cols = k->nc - j0 < k->nr ? k->nc - j0 : k->nr, rows = k->mc - i0 < MR ? k->mc - i0 : MR;
    const ev_mat *a = k->a, *b = k->b;
    ev__rows brows = {k->bp + (j0 / k->nr) * k->kc * k->nr, NULL, k->nr};
    if (j0 < k->nfull) {
        brows.base = b->off ? b->p + k->jc + j0 : b->p + k->pc * b->rs + k->jc + j0;
        brows.off = b->off ? b->off + k->pc : NULL;
        brows.rs = b->rs;
    }
    const float* arow[MR];
    int64_t a_cs = MR;
    for (int i = 0; i < MR; i++) arow[i] = k->ap + (i0 / MR) * k->kc * MR + i;
    if (i0 < k->mfull) {
        for (int i = 0; i < MR; i++) arow[i] = ev__row(a, k->ic + i0 + i) + k->pc;
        a_cs = 1;
    }
    float* ct = k->c + (k->ic + i0) * k->c_rs + k->jc + j0;
    if (rows == MR && cols == k->nr) {
        ev__kernel(k->nr, k->kc, arow, a_cs, brows, ct, k->c_rs, k->acc);
        return;
    }
    float tile[MR * NR] __attribute__((aligned(64)));
    if (k->acc)
        for (int64_t i = 0; i < rows; i++) memcpy(tile + i * k->nr, ct + i * k->c_rs, (size_t)cols * sizeof(float));
    ev__kernel(k->nr, k->kc, arow, a_cs, brows, tile, k->nr, k->acc);
    for (int64_t i = 0; i < rows; i++) memcpy(ct + i * k->c_rs, tile + i * k->nr, (size_t)cols * sizeof(float));
}

int ev_gemm_mat_f32(int64_t m, int64_t n, int64_t k, const ev_mat* a, const ev_mat* b, float* c, int64_t c_rs,
                    int accumulate, float* work, int64_t work_size) {
    if (m < 0 || n < 0 || k < 0 || work_size < ev_gemm_work_f32()) return -1;
    if (k == 0) {                                   /* an empty sum: C = 0, or C as it is */
        if (!accumulate)
            for (int64_t i = 0; i < m; i++) memset(c + i * c_rs, 0, (size_t)n * sizeof(float));
        return 0;
    }
    float* ap = (float*)(((uintptr_t)work + 63) & ~(uintptr_t)63);
    float* bp = ap + (int64_t)MC * KC;
    /* NOTE: operands whose rows are contiguous along the product's inner loops (A
     * along p, B along j) are read in place: packing them would copy them once
     * more for nothing.  Only their last, partial panels are packed (a full-width
     * read would run past a row). */
    const int a_direct = a->cs == 1, b_direct = b->cs == 1;
    ev__block blk = {a, b, ap, bp, c, c_rs, ev__width(n), 0, 0, 0, 0, 0, 0, 0, 0, 0};
    for (blk.jc = 0; blk.jc < n; blk.jc += NC) {
        blk.nc = n - blk.jc < NC ? n - blk.jc : NC;
        for (blk.pc = 0; blk.pc < k; blk.pc += KC) {
            blk.kc = k - blk.pc < KC ? k - blk.pc : KC;
            blk.acc = accumulate || blk.pc > 0;
            blk.nfull = b_direct ? blk.nc - blk.nc % blk.nr : 0;
            if (blk.nfull < blk.nc)
                ev__pack_b(b, blk.pc, blk.jc + blk.nfull, blk.kc, blk.nc - blk.nfull, blk.nr,
                           bp + (blk.nfull / blk.nr) * blk.kc * blk.nr);
            for (blk.ic = 0; blk.ic < m; blk.ic += MC) {
                blk.mc = m - blk.ic < MC ? m - blk.ic : MC;
                blk.mfull = a_direct ? blk.mc - blk.mc % MR : 0;
                if (blk.mfull < blk.mc)
                    ev__pack_a(a, blk.ic + blk.mfull, blk.pc, blk.mc - blk.mfull, blk.kc,
                               ap + (blk.mfull / MR) * blk.kc * MR);
                const int64_t tiles = ((blk.nc + blk.nr - 1) / blk.nr) * ((blk.mc + MR - 1) / MR);
                for (int64_t t = 0; t < tiles; t++) ev__tile(&blk, t);
            }
        }
    }
    return 0;
}

int ev_gemm_f32(int64_t batch, int64_t m, int64_t n, int64_t k,
                const float* a, int64_t a_batch, int64_t a_rs, int64_t a_cs,
                const float* b, int64_t b_batch, int64_t b_rs, int64_t b_cs,
                float* c, int64_t c_batch, int64_t c_rs, int accumulate,
                float* work, int64_t work_size) {
    if (batch < 0 || m < 0 || n < 0 || k < 0 || work_size < ev_gemm_work_f32()) return -1;
    const int shared = c_batch == 0;
    if (batch == 0) {
        if (shared && !accumulate)
            for (int64_t i = 0; i < m; i++) memset(c + i * c_rs, 0, (size_t)n * sizeof(float));
        return 0;
    }
    for (int64_t s = 0; s < batch; s++) {
        const ev_mat as = {a + s * a_batch, NULL, a_rs, a_cs};
        const ev_mat bs = {b + s * b_batch, NULL, b_rs, b_cs};
        if (ev_gemm_mat_f32(m, n, k, &as, &bs, c + s * c_batch, c_rs, accumulate || (shared && s > 0), work,
                            work_size))
            return -1;
    }
    return 0;
}
