/* A float32 matrix product for the convolutions: packed panels and a register-
 * blocked micro-kernel, the classic layout of fast GEMMs.  See ev_gemm.h.
 *
 * Why here and not BLAS: the OpenBLAS that numpy wheels ship picks its 256-bit
 * kernels on CPUs it does not know by name, which on this machine's 512-bit cores
 * leaves half the multiply-add width unused; conv's three products per layer
 * (forward, input and weight gradients) are most of a convnet's step.
 *
 * Blocking (sizes in floats): C is computed in MR x NR tiles kept in 24 vector
 * registers; K runs in blocks of KC so that one packed B panel (KC x NR, 48 KB)
 * and a packed A panel stay in L1 while the tile accumulates; B is packed NC
 * columns at a time (NC x KC in L2) and A MC rows at a time.  Packing reads any
 * strides (transposes included) and pads the edges with zeros, so the kernel only
 * ever sees full panels; partial tiles of C go through a local tile.
 *
 * Written with gcc's vector extensions, not intrinsics: a build without
 * -march=native still compiles it (to narrower vectors) and gives the same sums.
 */
#include <stdint.h>
#include <string.h>
#include "ev_gemm.h"

#define MR 8
#define NR 48
#define KC 256
#define MC 192
#define NC 480          /* a multiple of NR */
#define VL 16           /* floats per vector */
#define NV (NR / VL)

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

/* A rows [0, mc) x columns [0, kc) into panels of MR rows: panel r holds, for each p,
 * the MR values A(r*MR + i, p), zero past mc. */
static void ev__pack_a(int64_t mc, int64_t kc, const float* a, int64_t rs, int64_t cs, float* ap) {
    for (int64_t r = 0; r < mc; r += MR) {
        const int64_t rows = mc - r < MR ? mc - r : MR;
        for (int64_t p = 0; p < kc; p++) {
            const float* src = a + r * rs + p * cs;
            for (int64_t i = 0; i < rows; i++) ap[i] = src[i * rs];
            for (int64_t i = rows; i < MR; i++) ap[i] = 0.0f;
            ap += MR;
        }
    }
}

/* B rows [0, kc) x columns [0, nc) into panels of NR columns, zero past nc. */
static void ev__pack_b(int64_t kc, int64_t nc, const float* b, int64_t rs, int64_t cs, float* bp) {
    for (int64_t j0 = 0; j0 < nc; j0 += NR, bp += kc * NR) {
        const int64_t cols = nc - j0 < NR ? nc - j0 : NR;
        if (rs == 1 && cs != 1) {
            /* B is a transpose (its columns contiguous): read down each column, write
             * across the panel (in cache), rather than gather NR columns far apart. */
            for (int64_t j = 0; j < cols; j++) {
                const float* col = b + (j0 + j) * cs;
                for (int64_t p = 0; p < kc; p++) bp[p * NR + j] = col[p];
            }
        } else {
            for (int64_t p = 0; p < kc; p++) {
                const float* src = b + p * rs + j0 * cs;
                for (int64_t j = 0; j < cols; j++) bp[p * NR + j] = src[j * cs];
            }
        }
        for (int64_t p = 0; p < kc; p++)
            for (int64_t j = cols; j < NR; j++) bp[p * NR + j] = 0.0f;
    }
}

/* The MR x NR tile at t (row stride t_rs) = the product of an A panel and a B panel
 * over kc; added to what t holds when acc, else written.  A's element (i, p) is at
 * ap[i*a_rs + p*a_cs] (packed: 1, MR; read in place: A's row stride, 1), B's row p
 * at bp + p*b_rs (packed: NR; in place: B's row stride). */
static void ev__kernel(int64_t kc, const float* restrict ap, int64_t a_rs, int64_t a_cs,
                       const float* restrict bp, int64_t b_rs, float* restrict t, int64_t t_rs, int acc) {
    v16 c[MR][NV];
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) c[i][v] = acc ? ev__load(t + i * t_rs + v * VL) : (v16){0};
    for (int64_t p = 0; p < kc; p++) {
        v16 b[NV];
        for (int v = 0; v < NV; v++) b[v] = ev__load(bp + v * VL);
        for (int i = 0; i < MR; i++) {
            const v16 ai = ev__splat(ap[i * a_rs]);
            for (int v = 0; v < NV; v++) c[i][v] += ai * b[v];
        }
        ap += a_cs;
        bp += b_rs;
    }
    for (int i = 0; i < MR; i++)
        for (int v = 0; v < NV; v++) ev__store(t + i * t_rs + v * VL, c[i][v]);
}

/* C block (mc x nc at c, row stride c_rs) from A's and B's panels over kc.  A panel
 * i (MR rows) is read in place from ad (row stride a_rs) when ad is not NULL and the
 * panel is full, else from the packed ap; B panel j (NR columns) likewise from bd
 * (row stride b_rs) or bp.  Full tiles are made in C itself, edge tiles in a local
 * tile, then copied.  acc: add to C. */
static void ev__block(int64_t mc, int64_t nc, int64_t kc, const float* ad, int64_t a_rs, const float* ap,
                      const float* bd, int64_t b_rs, const float* bp, float* c, int64_t c_rs, int acc) {
    float tile[MR * NR] __attribute__((aligned(64)));
    for (int64_t j0 = 0; j0 < nc; j0 += NR) {
        const int64_t cols = nc - j0 < NR ? nc - j0 : NR;
        const int bdir = bd != NULL && cols == NR;
        const float* bpanel = bdir ? bd + j0 : bp + (j0 / NR) * kc * NR;
        const int64_t bstride = bdir ? b_rs : NR;
        for (int64_t i0 = 0; i0 < mc; i0 += MR) {
            const int64_t rows = mc - i0 < MR ? mc - i0 : MR;
            const int adir = ad != NULL && rows == MR;
            const float* apanel = adir ? ad + i0 * a_rs : ap + (i0 / MR) * kc * MR;
            const int64_t ars = adir ? a_rs : 1, acs = adir ? 1 : MR;
            float* ct = c + i0 * c_rs + j0;
            if (rows == MR && cols == NR) {
                ev__kernel(kc, apanel, ars, acs, bpanel, bstride, ct, c_rs, acc);
                continue;
            }
            if (acc) {
                for (int64_t i = 0; i < rows; i++) memcpy(tile + i * NR, ct + i * c_rs, (size_t)cols * sizeof(float));
            }
            ev__kernel(kc, apanel, ars, acs, bpanel, bstride, tile, NR, acc);
            for (int64_t i = 0; i < rows; i++) memcpy(ct + i * c_rs, tile + i * NR, (size_t)cols * sizeof(float));
        }
    }
}

int ev_gemm_f32(int64_t batch, int64_t m, int64_t n, int64_t k,
                const float* a, int64_t a_batch, int64_t a_rs, int64_t a_cs,
                const float* b, int64_t b_batch, int64_t b_rs, int64_t b_cs,
                float* c, int64_t c_batch, int64_t c_rs, int accumulate,
                float* work, int64_t work_size) {
    if (batch < 0 || m < 0 || n < 0 || k < 0 || work_size < ev_gemm_work_f32()) return -1;
    float* ap = (float*)(((uintptr_t)work + 63) & ~(uintptr_t)63);
    float* bp = ap + (int64_t)MC * KC;
    const int shared = c_batch == 0;
    if (k == 0 || (batch == 0 && shared)) {         /* an empty sum: C = 0, or C as it is */
        if (accumulate) return 0;
        for (int64_t s = 0; s < (shared ? 1 : batch); s++)
            for (int64_t i = 0; i < m; i++) memset(c + s * c_batch + i * c_rs, 0, (size_t)n * sizeof(float));
        return 0;
    }
    for (int64_t s = 0; s < batch; s++) {
        const float* as = a + s * a_batch;
        const float* bs = b + s * b_batch;
        float* cs = c + s * c_batch;
        for (int64_t jc = 0; jc < n; jc += NC) {
            const int64_t nc = n - jc < NC ? n - jc : NC;
            for (int64_t pc = 0; pc < k; pc += KC) {
                const int64_t kc = k - pc < KC ? k - pc : KC;
                const int acc = accumulate || pc > 0 || (shared && s > 0);
                const float* bb = bs + pc * b_rs + jc * b_cs;
                /* NOTE: rows of B already contiguous are read in place: packing them
                 * would copy B once more for nothing; only a last, partial panel is
                 * packed (a full-width read would run past B's row). */
                const float* bd = b_cs == 1 ? bb : NULL;
                if (bd == NULL) {
                    ev__pack_b(kc, nc, bb, b_rs, b_cs, bp);
                } else if (nc % NR) {
                    const int64_t j0 = nc - nc % NR;
                    ev__pack_b(kc, nc - j0, bb + j0, b_rs, 1, bp + (j0 / NR) * kc * NR);
                }
                for (int64_t ic = 0; ic < m; ic += MC) {
                    const int64_t mc = m - ic < MC ? m - ic : MC;
                    const float* aa = as + ic * a_rs + pc * a_cs;
                    /* rows of A already contiguous are read in place too (the kernel
                     * broadcasts one element of each row at a time) */
                    const float* ad = a_cs == 1 ? aa : NULL;
                    if (ad == NULL) {
                        ev__pack_a(mc, kc, aa, a_rs, a_cs, ap);
                    } else if (mc % MR) {
                        const int64_t i0 = mc - mc % MR;
                        ev__pack_a(mc - i0, kc, aa + i0 * a_rs, a_rs, 1, ap + (i0 / MR) * kc * MR);
                    }
                    ev__block(mc, nc, kc, ad, a_rs, ap, bd, b_rs, bp, cs + ic * c_rs + jc, c_rs, acc);
                }
            }
        }
    }
    return 0;
}
