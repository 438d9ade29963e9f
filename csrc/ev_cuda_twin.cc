// The cuBLAS entry points exprvm calls, for the host twin only (never part of the
// GPU library): column-major GEMM written from the BLAS definition,
//
//   C = alpha * op(A) @ op(B) + beta * C,   op(X) = X or X^T,  X[i, j] = X[i + j * ldX]
//
// with cuBLAS's argument checks (status 7, CUBLAS_STATUS_INVALID_VALUE, for a bad
// size or leading dimension), so exprvm/kernels/cublas.py's row-major operand
// swapping is tested against numpy where there is no GPU.  beta == 0 ignores C's
// old contents, NaN included, as BLAS specifies.
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include <functional>
#include <vector>

// ---- the launch order (ev_cuda_launch.h) ------------------------------------------------
// A GPU runs a launch's indices in no fixed order; the twin runs them in a shuffled one,
// drawn afresh for each launch from a seed (splitmix64 steps, Fisher-Yates), so a kernel
// body that depends on the order fails here too. Seed 0: in order.

namespace {
uint64_t g_order_seed = 0;
uint64_t g_order_launch = 0;
std::vector<int64_t> g_order;

uint64_t splitmix64(uint64_t* state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
}  // namespace

extern "C" const int64_t* ev_twin_order(int64_t n) {
    if (g_order_seed == 0 || n < 2) return NULL;
    g_order.resize((size_t)n);
    for (int64_t i = 0; i < n; i++) g_order[(size_t)i] = i;
    uint64_t state = g_order_seed ^ (0xD1B54A32D192ED03ull * ++g_order_launch);
    for (int64_t i = n - 1; i > 0; i--) {
        const int64_t j = (int64_t)(splitmix64(&state) % (uint64_t)(i + 1));
        const int64_t t = g_order[(size_t)i];
        g_order[(size_t)i] = g_order[(size_t)j];
        g_order[(size_t)j] = t;
    }
    return g_order.data();
}

extern "C" {

// The twin's own entry point (not in ev_cuda.h): launches from now on run their indices
// in an order drawn from seed (0: in order), the same sequence of orders for the same seed.
void ev_twin_set_order(uint64_t seed) {
    g_order_seed = seed;
    g_order_launch = 0;
}

// 1 when this build takes ev_math.h's fused multiply-add branches (as a GPU does).
int ev_twin_fma(void) {
#if defined(FP_FAST_FMAF)
    return 1;
#else
    return 0;
#endif
}

}  // extern "C"

extern "C" {

typedef struct EvTwinHandle {
    int math_mode;
    void* stream;
    void* workspace;    // the user's, or NULL: cuBLAS's own pool (allocated as it goes)
} EvTwinHandle;

enum { kSuccess = 0, kNotInitialized = 1, kInvalidValue = 7, kExecutionFailed = 13 };

void* ev_cuda_stream(void);

// The stream later calls go to (NULL: the default stream). While a capture is open, a
// product must go to the capturing stream (ev_cuda_stream), as on a GPU, where a cuBLAS
// call on the default stream fails and invalidates the capture. As cuBLAS documents,
// setting a stream puts the handle back on its own workspace pool.
int cublasSetStream_v2(EvTwinHandle* handle, void* stream) {
    if (handle == NULL) return kNotInitialized;
    handle->stream = stream;
    handle->workspace = NULL;
    return kSuccess;
}

// A workspace of the user's. A product captured without one would allocate cuBLAS's own
// inside the capture: the twin fails it, so that exprvm is seen to set one.
int cublasSetWorkspace_v2(EvTwinHandle* handle, void* workspace, size_t size) {
    if (handle == NULL) return kNotInitialized;
    if (workspace == NULL || size == 0) return kInvalidValue;
    handle->workspace = workspace;
    return kSuccess;
}

int cublasCreate_v2(EvTwinHandle** handle) {
    *handle = (EvTwinHandle*)calloc(1, sizeof(EvTwinHandle));
    return *handle ? kSuccess : 3;
}

int cublasDestroy_v2(EvTwinHandle* handle) {
    if (handle == NULL) return kNotInitialized;
    free(handle);
    return kSuccess;
}

int cublasGetVersion_v2(EvTwinHandle* handle, int* version) {
    if (handle == NULL) return kNotInitialized;
    *version = 0;
    return kSuccess;
}

int cublasSetMathMode(EvTwinHandle* handle, int mode) {
    if (handle == NULL) return kNotInitialized;
    handle->math_mode = mode;
    return kSuccess;
}

const char* cublasGetStatusString(int status) {
    switch (status) {
        case kSuccess: return "CUBLAS_STATUS_SUCCESS";
        case kNotInitialized: return "CUBLAS_STATUS_NOT_INITIALIZED";
        case kInvalidValue: return "CUBLAS_STATUS_INVALID_VALUE";
        default: return "CUBLAS_STATUS_UNKNOWN (host twin)";
    }
}

}  // extern "C"

// Stream capture (ev_cuda_launch.h, ev_cuda.cu)
bool ev_twin_capturing(void);
void ev_twin_record(std::function<void()> work);
bool ev_twin_record_on(void* stream, std::function<void()> work);
void ev_twin_invalidate(void);

namespace {

template <class T>
void gemm_run(int ta, int tb, int m, int n, int k, T alpha, const T* A, int lda, long long sa,
              const T* B, int ldb, long long sb, T beta, T* C, int ldc, long long sc, int batch);

template <class T>
int gemm(EvTwinHandle* h, int ta, int tb, int m, int n, int k, const T* alpha, const T* A,
         int lda, long long sa, const T* B, int ldb, long long sb, const T* beta, T* C, int ldc,
         long long sc, int batch) {
    if (h == NULL) return kNotInitialized;
    if (ta < 0 || ta > 1 || tb < 0 || tb > 1 || m < 0 || n < 0 || k < 0 || batch < 0)
        return kInvalidValue;
    const int arows = ta ? k : m, brows = tb ? n : k;
    if (lda < (arows > 1 ? arows : 1) || ldb < (brows > 1 ? brows : 1) || ldc < (m > 1 ? m : 1))
        return kInvalidValue;
    // NOTE: alpha and beta are host pointers, read when the call is made (a capture keeps
    // their values)
    const T al = *alpha, be = *beta;
    auto work = [=] { gemm_run<T>(ta, tb, m, n, k, al, A, lda, sa, B, ldb, sb, be, C, ldc, sc, batch); };
    if (ev_twin_capturing()) {
        if (h->stream == NULL || h->stream != ev_cuda_stream() || h->workspace == NULL) {
            ev_twin_invalidate();
            return kExecutionFailed;
        }
        ev_twin_record(work);
        return kSuccess;
    }
    // NOTE: a product sent to a stream another thread is capturing is recorded there, not
    // run, as on a GPU: one handle's stream is every thread's (exprvm keeps other threads'
    // products out of a capture: device/graphs.py)
    if (!ev_twin_record_on(h->stream, work)) work();
    return kSuccess;
}

template <class T>
void gemm_run(int ta, int tb, int m, int n, int k, T alpha, const T* A, int lda, long long sa,
              const T* B, int ldb, long long sb, T beta, T* C, int ldc, long long sc, int batch) {
    for (int b = 0; b < batch; b++) {
        const T* a = A + b * sa;
        const T* bb = B + b * sb;
        T* c = C + b * sc;
        for (int j = 0; j < n; j++) {
            for (int i = 0; i < m; i++) {
                T acc = 0;
                for (int l = 0; l < k; l++) {
                    const T x = ta ? a[l + (int64_t)i * lda] : a[i + (int64_t)l * lda];
                    const T y = tb ? bb[j + (int64_t)l * ldb] : bb[l + (int64_t)j * ldb];
                    acc += x * y;
                }
                T* out = c + i + (int64_t)j * ldc;
                *out = (beta == 0) ? alpha * acc : alpha * acc + beta * *out;
            }
        }
    }
}

}  // namespace

extern "C" {

int cublasSgemm_v2(EvTwinHandle* h, int ta, int tb, int m, int n, int k, const float* alpha,
                   const float* A, int lda, const float* B, int ldb, const float* beta,
                   float* C, int ldc) {
    return gemm<float>(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

int cublasDgemm_v2(EvTwinHandle* h, int ta, int tb, int m, int n, int k, const double* alpha,
                   const double* A, int lda, const double* B, int ldb, const double* beta,
                   double* C, int ldc) {
    return gemm<double>(h, ta, tb, m, n, k, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0, 1);
}

int cublasSgemmStridedBatched(EvTwinHandle* h, int ta, int tb, int m, int n, int k,
                              const float* alpha, const float* A, int lda, long long sa,
                              const float* B, int ldb, long long sb, const float* beta,
                              float* C, int ldc, long long sc, int batch) {
    return gemm<float>(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

int cublasDgemmStridedBatched(EvTwinHandle* h, int ta, int tb, int m, int n, int k,
                              const double* alpha, const double* A, int lda, long long sa,
                              const double* B, int ldb, long long sb, const double* beta,
                              double* C, int ldc, long long sc, int batch) {
    return gemm<double>(h, ta, tb, m, n, k, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc, batch);
}

}  // extern "C"
