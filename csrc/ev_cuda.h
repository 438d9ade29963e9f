/* ABI of exprvm's CUDA library (built by exprvm/kernels/build_cuda.py with
 * nvcc, loaded with cffi's dlopen).  Plain declarations only: this file is
 * also the cffi cdef.  Every function returns a cudaError_t as an int (0 is
 * success); ev_cuda_error_string turns it into text.  Pointers to T are
 * device pointers; n is an element count; kernels run on the default stream
 * (or record into a capture, below) and return without waiting for the device. */

const char* ev_cuda_error_string(int code);
int ev_cuda_device_count(int* count);
int ev_cuda_set_device(int device);
int ev_cuda_get_device(int* device);
int ev_cuda_device_info(int device, char* name, int name_len, size_t* total_bytes, int* major, int* minor);
int ev_cuda_mem_info(size_t* free_bytes, size_t* total_bytes);
int ev_cuda_malloc(void** ptr, size_t nbytes);
int ev_cuda_free(void* ptr);
int ev_cuda_memcpy_htod(void* dst, const void* src, size_t nbytes);
int ev_cuda_memcpy_dtoh(void* dst, const void* src, size_t nbytes);
int ev_cuda_memcpy_dtod(void* dst, const void* src, size_t nbytes);
int ev_cuda_memset(void* dst, int byte, size_t nbytes);
int ev_cuda_synchronize(void);
/* The status word bad inputs set (1: an index out of range, 2: a NaN or Inf gradient in a
 * solver update), copied to *out; reset: clear it. */
int ev_cuda_status(int* out, int reset);
/* 1 in the host twin (build_cuda.build_twin: kernels run serially on the CPU), else 0. */
int ev_cuda_is_twin(void);

/* CUDA graphs (exprvm/device/graphs.py). Between capture_begin and capture_end, what this
 * thread launches is recorded on its own stream, not run; capture_end instantiates it
 * (*graph_exec, or an error: a call that cannot be captured invalidates the capture),
 * graph_launch replays it, ordered with the default stream. ev_cuda_stream: the stream
 * launches go to now (NULL: the default stream), for cuBLAS to follow. */
int ev_cuda_capture_begin(void);
int ev_cuda_capture_end(void** graph_exec);
int ev_cuda_graph_launch(void* graph_exec);
int ev_cuda_graph_free(void* graph_exec);
void* ev_cuda_stream(void);

/* elementwise unary kernels and their gradients (math in ev_math.h) */
int ev_cuda_tanh_f32(const float* x, float* out, int64_t n);
int ev_cuda_tanh_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
int ev_cuda_tanh_f64(const double* x, double* out, int64_t n);
int ev_cuda_tanh_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);
int ev_cuda_sigmoid_f32(const float* x, float* out, int64_t n);
int ev_cuda_sigmoid_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
int ev_cuda_sigmoid_f64(const double* x, double* out, int64_t n);
int ev_cuda_sigmoid_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);
int ev_cuda_exp_f32(const float* x, float* out, int64_t n);
int ev_cuda_exp_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
int ev_cuda_exp_f64(const double* x, double* out, int64_t n);
int ev_cuda_exp_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);
int ev_cuda_expm1_f32(const float* x, float* out, int64_t n);
int ev_cuda_expm1_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
int ev_cuda_expm1_f64(const double* x, double* out, int64_t n);
int ev_cuda_expm1_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);
int ev_cuda_log1p_f32(const float* x, float* out, int64_t n);
int ev_cuda_log1p_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
int ev_cuda_log1p_f64(const double* x, double* out, int64_t n);
int ev_cuda_log1p_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);
int ev_cuda_cube_f32(const float* x, float* out, int64_t n);
int ev_cuda_cube_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
int ev_cuda_cube_f64(const double* x, double* out, int64_t n);
int ev_cuda_cube_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);
int ev_cuda_square_f32(const float* x, float* out, int64_t n);
int ev_cuda_square_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
int ev_cuda_square_f64(const double* x, double* out, int64_t n);
int ev_cuda_square_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);
int ev_cuda_relu_f32(const float* x, float* out, int64_t n);
int ev_cuda_relu_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
int ev_cuda_relu_f64(const double* x, double* out, int64_t n);
int ev_cuda_relu_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);
int ev_cuda_softplus_f32(const float* x, float* out, int64_t n);
int ev_cuda_softplus_grad_f32(const float* x, const float* ans, const float* g, float* out, int64_t n);
int ev_cuda_softplus_f64(const double* x, double* out, int64_t n);
int ev_cuda_softplus_grad_f64(const double* x, const double* ans, const double* g, double* out, int64_t n);

/* elementwise binary kernels: out = a <op> b, same length */
int ev_cuda_add_f32(const float* a, const float* b, float* out, int64_t n);
int ev_cuda_add_f64(const double* a, const double* b, double* out, int64_t n);
int ev_cuda_sub_f32(const float* a, const float* b, float* out, int64_t n);
int ev_cuda_sub_f64(const double* a, const double* b, double* out, int64_t n);
int ev_cuda_mul_f32(const float* a, const float* b, float* out, int64_t n);
int ev_cuda_mul_f64(const double* a, const double* b, double* out, int64_t n);
int ev_cuda_div_f32(const float* a, const float* b, float* out, int64_t n);
int ev_cuda_div_f64(const double* a, const double* b, double* out, int64_t n);
/* out = -x */
int ev_cuda_neg_f32(const float* x, float* out, int64_t n);
int ev_cuda_neg_f64(const double* x, double* out, int64_t n);

/* ---- a training step's kernels (ev_cuda_nn.cu, ev_cuda_train.cu) ----------------------
 * Strided operands: ndim <= 8 (else error 10001), shape[ndim] and strides in
 * elements (0 for a broadcast dimension), host arrays; out is C-contiguous unless
 * it has strides of its own.  n is the number of elements of shape.
 * Row ops take (outer, length, inner) with the reduced / softmax axis in the middle.
 * Indices are int64 (or int32: the _i32_ variants); an index out of range sets bit 1 of the status word and
 * makes its output NaN (take_grad: skipped), never an access out of bounds. */
#define EV_CONCAT_MAX 32
int ev_cuda_bcast_add_f32(const float* a, const float* b, float* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_sub_f32(const float* a, const float* b, float* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_mul_f32(const float* a, const float* b, float* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_div_f32(const float* a, const float* b, float* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_maximum_f32(const float* a, const float* b, float* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_minimum_f32(const float* a, const float* b, float* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_add_f64(const double* a, const double* b, double* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_sub_f64(const double* a, const double* b, double* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_mul_f64(const double* a, const double* b, double* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_div_f64(const double* a, const double* b, double* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_maximum_f64(const double* a, const double* b, double* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
int ev_cuda_bcast_minimum_f64(const double* a, const double* b, double* out, int ndim, const int64_t* shape, const int64_t* astride, const int64_t* bstride, int64_t n);
/* out = c ? x : y, c one byte per element (numpy bool) */
int ev_cuda_where_f32(const uint8_t* c, const float* x, const float* y, float* out, int ndim, const int64_t* shape, const int64_t* cstride, const int64_t* xstride, const int64_t* ystride, int64_t n);
int ev_cuda_where_f64(const uint8_t* c, const double* x, const double* y, double* out, int ndim, const int64_t* shape, const int64_t* cstride, const int64_t* xstride, const int64_t* ystride, int64_t n);
/* any view into any view (slices, transposes, broadcasts, pieces of a concatenation) */
int ev_cuda_copy_strided_f32(const float* x, float* out, int ndim, const int64_t* shape, const int64_t* xstride, const int64_t* ostride, int64_t n);
int ev_cuda_copy_strided_f64(const double* x, double* out, int ndim, const int64_t* shape, const int64_t* xstride, const int64_t* ostride, int64_t n);
/* out[i] = *value, value a device pointer */
int ev_cuda_fill_f32(float* out, const float* value, int64_t n);
int ev_cuda_fill_f64(double* out, const double* value, int64_t n);
/* k <= EV_CONCAT_MAX contiguous pieces (outer, lens[j], inner) into rows [s0, s0 + sum lens)
 * of out (outer, axis_len, inner); srcs and lens are host arrays of device pointers / lengths */
int ev_cuda_concat_f32(int k, const float* const* srcs, const int64_t* lens, float* out, int64_t outer, int64_t axis_len, int64_t inner, int64_t s0);
int ev_cuda_concat_f64(int k, const double* const* srcs, const int64_t* lens, double* out, int64_t outer, int64_t axis_len, int64_t inner, int64_t s0);
/* out (outer, inner) = reduce over the middle axis of x (outer, r, inner), times scale (sum);
 * parts > 1 reduces in two passes through partial (outer, parts, inner) */
int ev_cuda_reduce_sum_f32(const float* x, float* out, float* partial, int64_t outer, int64_t r, int64_t inner, int64_t parts, float scale);
int ev_cuda_reduce_sum_f64(const double* x, double* out, double* partial, int64_t outer, int64_t r, int64_t inner, int64_t parts, double scale);
int ev_cuda_reduce_max_f32(const float* x, float* out, float* partial, int64_t outer, int64_t r, int64_t inner, int64_t parts);
int ev_cuda_reduce_max_f64(const double* x, double* out, double* partial, int64_t outer, int64_t r, int64_t inner, int64_t parts);
int ev_cuda_softmax_f32(const float* x, float* out, int64_t outer, int64_t c, int64_t inner);
int ev_cuda_softmax_f64(const double* x, double* out, int64_t outer, int64_t c, int64_t inner);
int ev_cuda_log_softmax_f32(const float* x, float* out, int64_t outer, int64_t c, int64_t inner);
int ev_cuda_log_softmax_f64(const double* x, double* out, int64_t outer, int64_t c, int64_t inner);
/* logits (n, c), targets (n,): loss (n,); xent_grad: softmax(z) - one_hot(t), (n, c) */
int ev_cuda_cross_entropy_f32(const float* z, const int64_t* t, float* out, int64_t n, int64_t c);
int ev_cuda_cross_entropy_f64(const double* z, const int64_t* t, double* out, int64_t n, int64_t c);
int ev_cuda_xent_grad_f32(const float* z, const int64_t* t, float* out, int64_t n, int64_t c);
int ev_cuda_xent_grad_f64(const double* z, const int64_t* t, double* out, int64_t n, int64_t c);
/* take: out (outer, m, inner) = x (outer, n, inner) at idx (m,); take_grad zeroes out
 * (outer, n, inner) and adds g (outer, m, inner) at idx (atomicAdd: repeats accumulate) */
int ev_cuda_take_f32(const float* x, const int64_t* idx, float* out, int64_t outer, int64_t n, int64_t inner, int64_t m);
int ev_cuda_take_f64(const double* x, const int64_t* idx, double* out, int64_t outer, int64_t n, int64_t inner, int64_t m);
int ev_cuda_take_grad_f32(const float* g, const int64_t* idx, float* out, int64_t outer, int64_t n, int64_t inner, int64_t m);
int ev_cuda_take_grad_f64(const double* g, const int64_t* idx, double* out, int64_t outer, int64_t n, int64_t inner, int64_t m);

/* one_hot: out (n, depth) = 1 where the column is t's id, else 0 (a bad id: its row NaN) */
int ev_cuda_one_hot_f32(const int64_t* t, float* out, int64_t n, int64_t depth);
int ev_cuda_one_hot_f64(const int64_t* t, double* out, int64_t n, int64_t depth);
int ev_cuda_one_hot_i32_f32(const int32_t* t, float* out, int64_t n, int64_t depth);
int ev_cuda_one_hot_i32_f64(const int32_t* t, double* out, int64_t n, int64_t depth);
/* cross_entropy, xent_grad, take, take_grad with int32 indices (numpy int32 ids) */
int ev_cuda_cross_entropy_i32_f32(const float* z, const int32_t* t, float* out, int64_t n, int64_t c);
int ev_cuda_cross_entropy_i32_f64(const double* z, const int32_t* t, double* out, int64_t n, int64_t c);
int ev_cuda_xent_grad_i32_f32(const float* z, const int32_t* t, float* out, int64_t n, int64_t c);
int ev_cuda_xent_grad_i32_f64(const double* z, const int32_t* t, double* out, int64_t n, int64_t c);
int ev_cuda_take_i32_f32(const float* x, const int32_t* idx, float* out, int64_t outer, int64_t n, int64_t inner, int64_t m);
int ev_cuda_take_i32_f64(const double* x, const int32_t* idx, double* out, int64_t outer, int64_t n, int64_t inner, int64_t m);
int ev_cuda_take_grad_i32_f32(const float* g, const int32_t* idx, float* out, int64_t outer, int64_t n, int64_t inner, int64_t m);
int ev_cuda_take_grad_i32_f64(const double* g, const int32_t* idx, double* out, int64_t outer, int64_t n, int64_t inner, int64_t m);

/* solver updates in place, the gradient prepared in front (clip > 0, l1, l2, and a
 * global-norm scale read from device memory when scale is not NULL) */
int ev_cuda_sgd_f32(float* w, const float* g, int64_t n, float lr, float clip, float l1, float l2, const double* scale);
int ev_cuda_sgd_f64(double* w, const double* g, int64_t n, double lr, double clip, double l1, double l2, const double* scale);
int ev_cuda_momentum_f32(float* w, float* velocity, const float* g, int64_t n, float lr, float momentum, int nesterov, float clip, float l1, float l2, const double* scale);
int ev_cuda_momentum_f64(double* w, double* velocity, const double* g, int64_t n, double lr, double momentum, int nesterov, double clip, double l1, double l2, const double* scale);
int ev_cuda_adam_f32(float* w, float* m, float* v, const float* g, int64_t n, float lr_t, float beta1, float one_minus_beta1, float beta2, float one_minus_beta2, float sq_scale, float eps, float decay, float clip, float l1, float l2, const double* scale);
int ev_cuda_adam_f64(double* w, double* m, double* v, const double* g, int64_t n, double lr_t, double beta1, double one_minus_beta1, double beta2, double one_minus_beta2, double sq_scale, double eps, double decay, double clip, double l1, double l2, const double* scale);
/* *acc += sum of clip(g)^2 (parts interleaved partial sums); then *acc = min(1, max_norm / sqrt(*acc)) */
int ev_cuda_sumsq_f32(const float* g, float clip, double* acc, int64_t n, int64_t parts);
int ev_cuda_sumsq_f64(const double* g, double clip, double* acc, int64_t n, int64_t parts);
int ev_cuda_clip_scale(double* acc, double max_norm);
