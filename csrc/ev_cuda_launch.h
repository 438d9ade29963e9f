/* How exprvm's CUDA kernels are launched, shared by every ev_cuda*.cu file.
 *
 * A kernel is written once as a body, `EV_KD static void run(const Args&, int64_t i)`,
 * computing output element (or row) i (EV_KD: host and device); ev_launch<Body>(args, n) runs it for
 * i in [0, n):
 *
 *   on a GPU (nvcc)         a grid-stride __global__ loop on the default stream (or
 *                           the stream capturing a CUDA graph: ev_stream), returning
 *                           cudaGetLastError() of the launch;
 *   in the host twin        (EV_HOST_TWIN, a plain C++ build of the same files)
 *                           a serial loop over i in an order shuffled afresh for
 *                           every launch (seeded: ev_twin_set_order, ev_cuda_twin.cc),
 *                           so the kernels' indexing and math run and are tested on
 *                           machines without a GPU, and a body that depends on the
 *                           order its indices run in fails there as it would on a GPU.
 *
 * NOTE: every body must be a pure function of (args, i) writing only what i
 * owns (or accumulating through EV_ATOMIC_ADD): that is what makes the serial
 * twin and the parallel launch compute the same thing.
 */
#ifndef EV_CUDA_LAUNCH_H
#define EV_CUDA_LAUNCH_H

#include <stddef.h>
#include <stdint.h>

#include "ev_math.h"

#ifndef EV_HOST_TWIN
#include <cuda_runtime.h>
#endif

/* What kernel bodies and their helpers are declared with (ev_math.h's EV_HD is
 * `static inline` on the host, which a member function cannot be). */
#if defined(__CUDACC__)
#define EV_KD __host__ __device__ __forceinline__
#else
#define EV_KD inline
#endif

#define EV_MAX_DIMS 8   /* most dimensions a strided kernel takes (ev_cuda.h) */

/* Error codes of our own, above every cudaError_t value. */
#define EV_ERR_DIMS 10001      /* more than EV_MAX_DIMS dimensions */
#define EV_ERR_ARGS 10002      /* a negative size or an empty list */

/* Bits of the status word kernels set when their input is bad (ev_cuda_status). */
#define EV_STATUS_INDEX 1      /* an index out of range: take, take_grad, cross_entropy */
#define EV_STATUS_NONFINITE 2  /* a NaN or Inf gradient reached a solver update */

#if defined(EV_HOST_TWIN)
#define EV_ATOMIC_ADD(p, v) (*(p) += (v))
#define EV_ATOMIC_OR(p, v) (*(p) |= (v))
#else
#define EV_ATOMIC_ADD(p, v) atomicAdd((p), (v))
#define EV_ATOMIC_OR(p, v) atomicOr((p), (v))
#endif

/* The device address of the status word (defined in ev_cuda.cu). */
int* ev_status_word(void);

/* Shape and strides (in elements) of up to EV_MAX_DIMS dimensions, by value. */
struct EvStrides {
    int ndim;
    int64_t shape[EV_MAX_DIMS];
    int64_t stride[3][EV_MAX_DIMS];   /* up to three operands */
};

/* Fill a from host arrays; EV_ERR_DIMS if ndim is out of range. */
static inline int ev_strides(EvStrides* a, int ndim, const int64_t* shape, const int64_t* s0,
                             const int64_t* s1, const int64_t* s2) {
    if (ndim < 0 || ndim > EV_MAX_DIMS) return EV_ERR_DIMS;
    a->ndim = ndim;
    for (int d = 0; d < EV_MAX_DIMS; d++) {
        a->shape[d] = d < ndim ? shape[d] : 1;
        a->stride[0][d] = (d < ndim && s0) ? s0[d] : 0;
        a->stride[1][d] = (d < ndim && s1) ? s1[d] : 0;
        a->stride[2][d] = (d < ndim && s2) ? s2[d] : 0;
    }
    return 0;
}

/* Element offsets of the k operands at row-major position i of the shape. */
template <int K>
EV_KD void ev_offsets(const EvStrides& a, int64_t i, int64_t* off) {
    for (int k = 0; k < K; k++) off[k] = 0;
    for (int d = a.ndim - 1; d >= 0; d--) {
        const int64_t n = a.shape[d];
        const int64_t j = i % n;
        i /= n;
        for (int k = 0; k < K; k++) off[k] += j * a.stride[k][d];
    }
}

#if defined(EV_HOST_TWIN)

#include <functional>

/* The order of this launch's n indices (a permutation of [0, n), valid until the next
 * launch), or NULL to run them in order (defined in ev_cuda_twin.cc). */
extern "C" const int64_t* ev_twin_order(int64_t n);

/* Stream capture in the twin (ev_cuda.cu): while this thread captures, work is recorded,
 * with the arguments it has now, to run when the captured graph is launched (as a CUDA
 * graph keeps its launches' arguments). */
bool ev_twin_capturing(void);
void ev_twin_record(std::function<void()> work);
void ev_twin_invalidate(void);      /* a call that cannot be captured was made */

template <class Body, class Args>
void ev_run_serial(const Args& args, int64_t n) {
    const int64_t* order = ev_twin_order(n);
    if (order == NULL) {
        for (int64_t i = 0; i < n; i++) Body::run(args, i);
    } else {
        for (int64_t k = 0; k < n; k++) Body::run(args, order[k]);
    }
}

template <class Body, class Args>
int ev_launch(const Args& args, int64_t n) {
    if (n < 0) return EV_ERR_ARGS;
    if (ev_twin_capturing()) {
        ev_twin_record([args, n] { ev_run_serial<Body>(args, n); });
        return 0;
    }
    ev_run_serial<Body>(args, n);
    return 0;
}

#else

namespace ev_launch_detail {
const int kBlock = 256;
/* Enough blocks to fill any current GPU several times over; the grid-stride
 * loop covers larger sizes, and small ones launch only what they need. */
const int64_t kMaxBlocks = 8192;

template <class Body, class Args>
__global__ void each(const Args args, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)blockDim.x * gridDim.x)
        Body::run(args, i);
}
}  // namespace ev_launch_detail

/* The stream launches go to: the default stream, or while this thread captures a CUDA
 * graph, the capturing stream (defined in ev_cuda.cu). */
cudaStream_t ev_stream(void);

template <class Body, class Args>
int ev_launch(const Args& args, int64_t n) {
    using namespace ev_launch_detail;
    if (n < 0) return EV_ERR_ARGS;
    if (n == 0) return 0;
    int64_t blocks = (n + kBlock - 1) / kBlock;
    each<Body, Args><<<(int)(blocks < kMaxBlocks ? blocks : kMaxBlocks), kBlock, 0, ev_stream()>>>(args, n);
    /* A bad launch configuration shows here; faults during execution surface
     * at the next synchronizing call (a copy to the host, ev_cuda_synchronize). */
    return (int)cudaGetLastError();
}

#endif

/* Zero nbytes of device memory, asynchronously (defined in ev_cuda.cu). */
int ev_zero(void* ptr, size_t nbytes);


#endif
