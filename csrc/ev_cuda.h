/* ABI of exprvm's CUDA library (built by exprvm/kernels/build_cuda.py with
 * nvcc, loaded with cffi's dlopen).  Plain declarations only: this file is
 * also the cffi cdef.  Every function returns a cudaError_t as an int (0 is
 * success); ev_cuda_error_string turns it into text.  Pointers to T are
 * device pointers; n is an element count; kernels run on the default stream
 * and return without waiting for the device. */

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
int ev_cuda_synchronize(void);

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
