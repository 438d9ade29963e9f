/* Convolution and pooling kernels of exprvm's C backend (csrc/ev_conv.c).  Plain
 * declarations only: this file is also the cffi cdef (exprvm/kernels/build_c.py).
 *
 * Every array is C-contiguous; x is (n, c, h, w).  The geometry says how windows
 * sit on x: window (oy, ox) reads rows oy*sh - ph + i*dh (i < kh) and columns
 * ox*sw - pw + j*dw (j < kw); positions outside x are padding, and the kernels
 * never touch memory there.  oh and ow are the output's height and width.
 * Every function checks the geometry first and returns -1, writing nothing, if a
 * size is negative (n, c) or below 1 (the rest, bar ph, pw >= 0). */
typedef struct {
    int64_t n, c, h, w;
    int64_t kh, kw;
    int64_t sh, sw;
    int64_t ph, pw;
    int64_t dh, dw;
    int64_t oh, ow;
} ev_conv_geom;

/* cols (n, c*kh*kw, oh*ow): cols[b, (ch*kh + i)*kw + j, oy*ow + ox] = x at that tap, 0 in
 * the padding.  col2im is its adjoint: x = 0, then every column entry added back. */
int ev_im2col_f32(const float* x, float* cols, const ev_conv_geom* g);
int ev_im2col_f64(const double* x, double* cols, const ev_conv_geom* g);
int ev_col2im_f32(const float* cols, float* x, const ev_conv_geom* g);
int ev_col2im_f64(const double* cols, double* x, const ev_conv_geom* g);

/* Max over each window's real taps into out (n, c, oh, ow), and its position
 * (iy*w + ix in the (h, w) plane) into argmax, or -1 for a window with no real tap.
 * Ties: the first maximum in row-major window order; a NaN beats numbers.  out or
 * argmax may be NULL.  max_pool2d_grad: dx = 0, then g added at each argmax (-1
 * skipped); returns -2, writing nothing, if an argmax is outside [-1, h*w). */
int ev_max_pool2d_f32(const float* x, float* out, int64_t* argmax, const ev_conv_geom* g);
int ev_max_pool2d_f64(const double* x, double* out, int64_t* argmax, const ev_conv_geom* g);
int ev_max_pool2d_grad_f32(const float* gout, const int64_t* argmax, float* dx, const ev_conv_geom* g);
int ev_max_pool2d_grad_f64(const double* gout, const int64_t* argmax, double* dx, const ev_conv_geom* g);

/* Sum of each window's real taps / (kh*kw) (padding counts as zeros), and its adjoint:
 * dx = 0, then g / (kh*kw) added over each window's real taps. */
int ev_avg_pool2d_f32(const float* x, float* out, const ev_conv_geom* g);
int ev_avg_pool2d_f64(const double* x, double* out, const ev_conv_geom* g);
int ev_avg_pool2d_grad_f32(const float* gout, float* dx, const ev_conv_geom* g);
int ev_avg_pool2d_grad_f64(const double* gout, double* dx, const ev_conv_geom* g);

/* float32 convolutions made one sample at a time (csrc/ev_conv_gemm.c): the sample's
 * im2col columns, then ev_gemm_f32 per group, so the columns stay in cache between
 * the two.  x (n, c, h, w), w (o, c/groups, kh, kw), out / gy (n, o, oh, ow); dw is
 * overwritten with the batch's sum.  work holds ev_conv_gemm_work_f32(g, o, groups)
 * floats (-1 if groups < 1).
 * Return 0, or -1 (writing nothing) for a bad geometry, groups not dividing c and o,
 * or a work buffer too small. */
int64_t ev_conv_gemm_work_f32(const ev_conv_geom* g, int64_t o, int64_t groups);
int ev_conv2d_gemm_f32(const float* x, const float* w, float* out, const ev_conv_geom* g, int64_t o,
                       int64_t groups, float* work, int64_t work_size);
int ev_conv2d_grad_input_gemm_f32(const float* gy, const float* w, float* dx, const ev_conv_geom* g, int64_t o,
                                  int64_t groups, float* work, int64_t work_size);
int ev_conv2d_grad_weight_gemm_f32(const float* x, const float* gy, float* dw, const ev_conv_geom* g, int64_t o,
                                   int64_t groups, float* work, int64_t work_size);
