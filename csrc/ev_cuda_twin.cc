// The cuBLAS entry points exprvm calls, for the host twin only (never part of the
// GPU library): column-major GEMM written from the BLAS definition,
//
//   C = alpha * op(A) @ op(B) + beta * C,   op(X) = X or X^T,  X[i, j] = X[i + j * ldX]
//
// with cuBLAS's argument checks (status 7, CUBLAS_STATUS_INVALID_VALUE, for a bad
// size or leading dimension), so exprvm/kernels/cublas.py's row-major operand
// swapping is tested against numpy where there is no GPU.  beta == 0 ignores C's
// old contents, NaN included, as BLAS specifies.
#include <stdint.h>
#include <stdlib.h>

extern "C" {

typedef struct EvTwinHandle { int math_mode; } EvTwinHandle;

enum { kSuccess = 0, kNotInitialized = 1, kInvalidValue = 7 };

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

namespace {

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
                *out = (*beta == 0) ? *alpha * acc : *alpha * acc + *beta * *out;
            }
        }
    }
    return kSuccess;
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
