/* A float32 matrix product for the convolutions (csrc/ev_gemm.c).  Plain
 * declarations only: this file is also the cffi cdef (exprvm/kernels/build_c.py).
 *
 * For b = 0 .. batch-1, with A_b = a + b*a_batch, element (i, p) at
 * A_b[i*a_rs + p*a_cs], and B_b alike (element (p, j) at B_b[p*b_rs + j*b_cs]):
 *
 *     C_b[i*c_rs + j] = sum_p A_b(i, p) * B_b(p, j)      (C_b = c + b*c_batch)
 *
 * With c_batch == 0 every batch's product is summed into the one C.  accumulate:
 * the products are added to what C holds; else C is overwritten (never read
 * first).  C must not overlap A or B.  Any strides
 * (transposes are strides) are packed into the kernel's own layout in work, which
 * holds ev_gemm_work_f32() floats, 64-byte alignment not needed.  One thread.
 * Returns 0, or -1 (writing nothing) if a size is negative or work is too small. */
int64_t ev_gemm_work_f32(void);

/* A matrix for ev_gemm_mat_f32: row r starts at p + off[r] when off is not NULL
 * (rows anywhere: e.g. the taps of a convolution, shifted views of one image),
 * else at p + r*rs; the row's elements are cs apart. */
typedef struct {
    const float* p;
    const int64_t* off;
    int64_t rs, cs;
} ev_mat;

/* C (m x n, row stride c_rs) = A (m x k) @ B (k x n), added to C when accumulate. */
int ev_gemm_mat_f32(int64_t m, int64_t n, int64_t k, const ev_mat* a, const ev_mat* b, float* c, int64_t c_rs,
                    int accumulate, float* work, int64_t work_size);
int ev_gemm_f32(int64_t batch, int64_t m, int64_t n, int64_t k,
                const float* a, int64_t a_batch, int64_t a_rs, int64_t a_cs,
                const float* b, int64_t b_batch, int64_t b_rs, int64_t b_cs,
                float* c, int64_t c_batch, int64_t c_rs, int accumulate,
                float* work, int64_t work_size);

/* 1 if ev_gemm_f32 was compiled for 512-bit vectors (it then beats the BLAS numpy
 * loads on this kind of CPU and the conv runners use it), else 0: a plain build
 * still runs it correctly, only slower. */
int ev_gemm_wide(void);
