/* Kernel ABI of exprvm's C backend.  Plain declarations only: this file is
 * also the cffi cdef (exprvm/kernels/build_c.py), which cannot parse macros
 * or includes.  n is the element count; out may be the same buffer as an
 * input (in place) but must not partially overlap one. */

void ev_tanh_f32(const float* x, float* out, int64_t n);
void ev_tanh_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
void ev_tanh_f64(const double* x, double* out, int64_t n);
void ev_tanh_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

void ev_sigmoid_f32(const float* x, float* out, int64_t n);
void ev_sigmoid_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
void ev_sigmoid_f64(const double* x, double* out, int64_t n);
void ev_sigmoid_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

void ev_exp_f32(const float* x, float* out, int64_t n);
void ev_exp_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
void ev_exp_f64(const double* x, double* out, int64_t n);
void ev_exp_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

void ev_expm1_f32(const float* x, float* out, int64_t n);
void ev_expm1_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
void ev_expm1_f64(const double* x, double* out, int64_t n);
void ev_expm1_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

void ev_log1p_f32(const float* x, float* out, int64_t n);
void ev_log1p_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
void ev_log1p_f64(const double* x, double* out, int64_t n);
void ev_log1p_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

void ev_cube_f32(const float* x, float* out, int64_t n);
void ev_cube_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
void ev_cube_f64(const double* x, double* out, int64_t n);
void ev_cube_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

void ev_square_f32(const float* x, float* out, int64_t n);
void ev_square_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
void ev_square_f64(const double* x, double* out, int64_t n);
void ev_square_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

void ev_relu_f32(const float* x, float* out, int64_t n);
void ev_relu_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
void ev_relu_f64(const double* x, double* out, int64_t n);
void ev_relu_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

void ev_softplus_f32(const float* x, float* out, int64_t n);
void ev_softplus_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
void ev_softplus_f64(const double* x, double* out, int64_t n);
void ev_softplus_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

/* Softmax cross-entropy of the n rows of z (each c wide) against class ids t:
 * loss[r] = log(sum_j exp(z[r,j] - m)) - (z[r,t[r]] - m), m the row's max (NaN if
 * the row has one), and its gradient out[r,:] = softmax(z[r,:]) - onehot(t[r]).
 * Every id is checked before anything is written: the return value is -1, or the
 * first row whose id is outside [0, c). */
int64_t ev_xent_f32(const float* z, const int64_t* t, float* loss, int64_t n, int64_t c);
int64_t ev_xent_f64(const double* z, const int64_t* t, double* loss, int64_t n, int64_t c);
int64_t ev_xent_grad_f32(const float* z, const int64_t* t, float* out, int64_t n, int64_t c);
int64_t ev_xent_grad_f64(const double* z, const int64_t* t, double* out, int64_t n, int64_t c);

/* The gradient of a row gather (take along axis 0): out (rows x width) is zeroed, then
 * row ids[k] of out accumulates row k of g (n x width; repeated ids add up). Every id is
 * checked before anything is written: the return value is -1, or the first k whose id
 * is outside [0, rows). */
int64_t ev_scatter_rows_f32(const float* g, const int64_t* ids, float* out, int64_t n, int64_t width,
                            int64_t rows);
int64_t ev_scatter_rows_f64(const double* g, const int64_t* ids, double* out, int64_t n, int64_t width,
                            int64_t rows);

/* Threads the kernels use for large arrays (1 without OpenMP). */
int ev_num_threads(void);
