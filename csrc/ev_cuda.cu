// CUDA kernels and runtime entry points of exprvm, loaded from Python through
// cffi's ABI mode (exprvm/kernels/cuda_lib.py).  The math is ev_math.h, the
// same code the CPU kernels run, so both backends agree to the ulp.
//
// Every entry point returns the cudaError_t of what it did as an int instead
// of aborting: with no driver, cudaGetDeviceCount returns
// cudaErrorInsufficientDriver and Python reports that, never a crash.
#include <cuda_runtime.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "ev_math.h"

extern "C" {
#include "ev_cuda.h"
}

namespace {

const int kBlock = 256;
// Enough blocks to fill any current GPU several times over; the grid-stride
// loops cover larger arrays, and small arrays launch only what they need.
const int64_t kMaxBlocks = 8192;

int grid_for(int64_t n) {
    int64_t blocks = (n + kBlock - 1) / kBlock;
    return (int)(blocks < kMaxBlocks ? blocks : kMaxBlocks);
}

// A kernel launch reports bad configurations through cudaGetLastError; faults
// during execution surface at the next synchronizing call.
int launched() { return (int)cudaGetLastError(); }

}  // namespace

#define EV_GRID_STRIDE(i, n)                                              \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n); \
         i += (int64_t)blockDim.x * gridDim.x)

// NOTE: one macro per loop shape instead of 52 hand-copied kernels.  Inputs
// are not __restrict__: out may be the same buffer as an input (in place).
#define EV_CUDA_UNARY(op, T, sfx)                                          \
    __global__ void k_##op##_##sfx(const T* x, T* out, int64_t n) {       \
        EV_GRID_STRIDE(i, n) out[i] = evm_##op##_##sfx(x[i]);             \
    }                                                                      \
    extern "C" int ev_cuda_##op##_##sfx(const T* x, T* out, int64_t n) {  \
        if (n <= 0) return 0;                                              \
        k_##op##_##sfx<<<grid_for(n), kBlock>>>(x, out, n);                \
        return launched();                                                 \
    }

#define EV_CUDA_UNARY_GRAD(op, T, sfx)                                          \
    __global__ void k_##op##_grad_##sfx(const T* x, const T* ans, const T* g,  \
                                        T* out, int64_t n) {                    \
        EV_GRID_STRIDE(i, n) out[i] = evm_##op##_grad_##sfx(x[i], ans[i], g[i]); \
    }                                                                           \
    extern "C" int ev_cuda_##op##_grad_##sfx(const T* x, const T* ans,         \
                                             const T* g, T* out, int64_t n) {  \
        if (n <= 0) return 0;                                                   \
        k_##op##_grad_##sfx<<<grid_for(n), kBlock>>>(x, ans, g, out, n);        \
        return launched();                                                      \
    }

#define EV_CUDA_BINARY(op, expr, T, sfx)                                        \
    __global__ void k_##op##_##sfx(const T* a, const T* b, T* out, int64_t n) { \
        EV_GRID_STRIDE(i, n) { T u = a[i], v = b[i]; out[i] = (expr); }         \
    }                                                                           \
    extern "C" int ev_cuda_##op##_##sfx(const T* a, const T* b, T* out,         \
                                        int64_t n) {                            \
        if (n <= 0) return 0;                                                   \
        k_##op##_##sfx<<<grid_for(n), kBlock>>>(a, b, out, n);                  \
        return launched();                                                      \
    }

#define EV_CUDA_OP(op)                 \
    EV_CUDA_UNARY(op, float, f32)      \
    EV_CUDA_UNARY(op, double, f64)     \
    EV_CUDA_UNARY_GRAD(op, float, f32) \
    EV_CUDA_UNARY_GRAD(op, double, f64)

EV_CUDA_OP(tanh)
EV_CUDA_OP(sigmoid)
EV_CUDA_OP(exp)
EV_CUDA_OP(expm1)
EV_CUDA_OP(log1p)
EV_CUDA_OP(cube)
EV_CUDA_OP(square)
EV_CUDA_OP(relu)
EV_CUDA_OP(softplus)

EV_CUDA_BINARY(add, u + v, float, f32)
EV_CUDA_BINARY(add, u + v, double, f64)
EV_CUDA_BINARY(sub, u - v, float, f32)
EV_CUDA_BINARY(sub, u - v, double, f64)
EV_CUDA_BINARY(mul, u * v, float, f32)
EV_CUDA_BINARY(mul, u * v, double, f64)
EV_CUDA_BINARY(div, u / v, float, f32)
EV_CUDA_BINARY(div, u / v, double, f64)

// ---- runtime: devices, memory, copies ------------------------------------

extern "C" const char* ev_cuda_error_string(int code) {
    return cudaGetErrorString((cudaError_t)code);
}

extern "C" int ev_cuda_device_count(int* count) {
    *count = 0;
    return (int)cudaGetDeviceCount(count);
}

extern "C" int ev_cuda_set_device(int device) { return (int)cudaSetDevice(device); }

extern "C" int ev_cuda_get_device(int* device) { return (int)cudaGetDevice(device); }

extern "C" int ev_cuda_device_info(int device, char* name, int name_len,
                                   size_t* total_bytes, int* major, int* minor) {
    cudaDeviceProp prop;
    cudaError_t err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) return (int)err;
    if (name_len > 0) {
        strncpy(name, prop.name, (size_t)name_len - 1);
        name[name_len - 1] = '\0';
    }
    *total_bytes = prop.totalGlobalMem;
    *major = prop.major;
    *minor = prop.minor;
    return 0;
}

extern "C" int ev_cuda_mem_info(size_t* free_bytes, size_t* total_bytes) {
    return (int)cudaMemGetInfo(free_bytes, total_bytes);
}

extern "C" int ev_cuda_malloc(void** ptr, size_t nbytes) {
    *ptr = NULL;
    return (int)cudaMalloc(ptr, nbytes);
}

extern "C" int ev_cuda_free(void* ptr) { return (int)cudaFree(ptr); }

extern "C" int ev_cuda_memcpy_htod(void* dst, const void* src, size_t nbytes) {
    return (int)cudaMemcpy(dst, src, nbytes, cudaMemcpyHostToDevice);
}

extern "C" int ev_cuda_memcpy_dtoh(void* dst, const void* src, size_t nbytes) {
    return (int)cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToHost);
}

extern "C" int ev_cuda_memcpy_dtod(void* dst, const void* src, size_t nbytes) {
    return (int)cudaMemcpy(dst, src, nbytes, cudaMemcpyDeviceToDevice);
}

extern "C" int ev_cuda_synchronize(void) { return (int)cudaDeviceSynchronize(); }
