// CUDA kernels and runtime entry points of exprvm, loaded from Python through
// cffi's ABI mode (exprvm/kernels/cuda_loader.py).  The math is ev_math.h, the
// same code the CPU kernels run, so both backends agree to the ulp.
//
// Every entry point returns the cudaError_t of what it did as an int instead
// of aborting: with no driver, cudaGetDeviceCount returns
// cudaErrorInsufficientDriver and Python reports that, never a crash.
//
// Built with EV_HOST_TWIN (a plain C++ compile, build_cuda.build_twin) the same
// kernels run serially on the host and the runtime entry points manage host
// memory: the host twin the tests run where there is no GPU.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(EV_HOST_TWIN)
#include <mutex>
#include <set>
#include <vector>
#endif

#include "ev_cuda_launch.h"

extern "C" {
#include "ev_cuda.h"
}

// NOTE: one body template per loop shape instead of 52 hand-copied kernels.
// Inputs are not __restrict__: out may be the same buffer as an input (in place).
template <class T>
struct UnaryArgs {
    const T* x;
    T* out;
};

template <class T>
struct GradArgs {
    const T* x;
    const T* ans;
    const T* g;
    T* out;
};

template <class T>
struct BinaryArgs {
    const T* a;
    const T* b;
    T* out;
};

#define EV_CUDA_UNARY(op, T, sfx)                                                      \
    struct op##_##sfx {                                                                \
        EV_KD static void run(const UnaryArgs<T>& a, int64_t i) {                     \
            a.out[i] = evm_##op##_##sfx(a.x[i]);                                       \
        }                                                                              \
    };                                                                                 \
    extern "C" int ev_cuda_##op##_##sfx(const T* x, T* out, int64_t n) {              \
        return ev_launch<op##_##sfx>(UnaryArgs<T>{x, out}, n);                         \
    }

#define EV_CUDA_UNARY_GRAD(op, T, sfx)                                                 \
    struct op##_grad_##sfx {                                                           \
        EV_KD static void run(const GradArgs<T>& a, int64_t i) {                      \
            a.out[i] = evm_##op##_grad_##sfx(a.x[i], a.ans[i], a.g[i]);                \
        }                                                                              \
    };                                                                                 \
    extern "C" int ev_cuda_##op##_grad_##sfx(const T* x, const T* ans, const T* g,    \
                                             T* out, int64_t n) {                      \
        return ev_launch<op##_grad_##sfx>(GradArgs<T>{x, ans, g, out}, n);             \
    }

#define EV_CUDA_BINARY(op, expr, T, sfx)                                               \
    struct op##_##sfx {                                                                \
        EV_KD static void run(const BinaryArgs<T>& a, int64_t i) {                    \
            T u = a.a[i], v = a.b[i];                                                  \
            a.out[i] = (expr);                                                         \
        }                                                                              \
    };                                                                                 \
    extern "C" int ev_cuda_##op##_##sfx(const T* a, const T* b, T* out, int64_t n) {  \
        return ev_launch<op##_##sfx>(BinaryArgs<T>{a, b, out}, n);                     \
    }

// Elementwise ops of one operand written as an expression of u (not ev_math.h kernels).
#define EV_CUDA_MAP(op, expr, T, sfx)                                                  \
    struct op##_##sfx {                                                                \
        EV_KD static void run(const UnaryArgs<T>& a, int64_t i) {                     \
            T u = a.x[i];                                                              \
            a.out[i] = (expr);                                                         \
        }                                                                              \
    };                                                                                 \
    extern "C" int ev_cuda_##op##_##sfx(const T* x, T* out, int64_t n) {              \
        return ev_launch<op##_##sfx>(UnaryArgs<T>{x, out}, n);                         \
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
EV_CUDA_MAP(neg, -u, float, f32)
EV_CUDA_MAP(neg, -u, double, f64)

#if !defined(EV_HOST_TWIN)

// ---- runtime: devices, memory, copies ------------------------------------

__device__ int g_ev_status;

int* ev_status_word(void) {
    static int* addr = NULL;
    if (addr == NULL && cudaGetSymbolAddress((void**)&addr, g_ev_status) != cudaSuccess) {
        cudaGetLastError();  // NOTE: leave no sticky error behind; kernels then skip the flag
        addr = NULL;
    }
    return addr;
}

// ---- CUDA graphs: a run of launches captured once and replayed --------------------
// While this thread captures, launches and asynchronous copies go to its own stream, which
// records them instead of running them (thread-local mode: other threads' work is not
// captured, and a call of this thread that cannot be captured -- a synchronous copy,
// cudaMalloc -- fails and invalidates the capture). The stream is a non-blocking one: while
// a blocking stream captures, the legacy default stream is unusable, so another thread's
// launch there would fail. A replay is ordered with the default stream's work before and
// after it by two events instead.

static thread_local cudaStream_t t_stream = NULL;     // this thread's capture/replay stream
static thread_local cudaEvent_t t_before = NULL;      // the default stream's work so far
static thread_local cudaEvent_t t_after = NULL;       // the replay's work
static thread_local bool t_capturing = false;

cudaStream_t ev_stream(void) { return t_capturing ? t_stream : (cudaStream_t)0; }

static int own_stream(void) {
    if (t_stream) return 0;
    cudaStream_t stream = NULL;
    cudaEvent_t before = NULL, after = NULL;
    int rc = (int)cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
    if (rc == 0) rc = (int)cudaEventCreateWithFlags(&before, cudaEventDisableTiming);
    if (rc == 0) rc = (int)cudaEventCreateWithFlags(&after, cudaEventDisableTiming);
    if (rc) {       // NOTE: all three or none, so that a later call tries again
        if (after) cudaEventDestroy(after);
        if (before) cudaEventDestroy(before);
        if (stream) cudaStreamDestroy(stream);
        return rc;
    }
    t_stream = stream;
    t_before = before;
    t_after = after;
    return 0;
}

extern "C" void* ev_cuda_stream(void) { return (void*)ev_stream(); }

extern "C" int ev_cuda_capture_begin(void) {
    if (t_capturing) return (int)cudaErrorIllegalState;
    int rc = own_stream();
    if (rc) return rc;
    rc = (int)cudaStreamBeginCapture(t_stream, cudaStreamCaptureModeThreadLocal);
    if (rc == 0) t_capturing = true;
    return rc;
}

extern "C" int ev_cuda_capture_end(void** graph_exec) {
    *graph_exec = NULL;
    if (!t_capturing) return (int)cudaErrorIllegalState;
    t_capturing = false;
    cudaGraph_t graph = NULL;
    int rc = (int)cudaStreamEndCapture(t_stream, &graph);
    if (rc == 0) {
        cudaGraphExec_t exec = NULL;
        rc = (int)cudaGraphInstantiate(&exec, graph, 0);
        if (rc == 0) *graph_exec = (void*)exec;
    }
    if (graph != NULL) cudaGraphDestroy(graph);
    if (rc) cudaGetLastError();     // NOTE: a failed capture leaves no sticky error behind
    return rc;
}

extern "C" int ev_cuda_graph_launch(void* graph_exec) {
    int rc = own_stream();
    // after the default stream's work so far (the feeds' copies), and before its later
    // work (the results' copies, the solvers' updates)
    if (rc == 0) rc = (int)cudaEventRecord(t_before, (cudaStream_t)0);
    if (rc == 0) rc = (int)cudaStreamWaitEvent(t_stream, t_before, 0);
    if (rc == 0) rc = (int)cudaGraphLaunch((cudaGraphExec_t)graph_exec, t_stream);
    if (rc == 0) rc = (int)cudaEventRecord(t_after, t_stream);
    if (rc == 0) rc = (int)cudaStreamWaitEvent((cudaStream_t)0, t_after, 0);
    return rc;
}

extern "C" int ev_cuda_graph_free(void* graph_exec) {
    return graph_exec ? (int)cudaGraphExecDestroy((cudaGraphExec_t)graph_exec) : 0;
}

int ev_zero(void* ptr, size_t nbytes) {
    return nbytes ? (int)cudaMemsetAsync(ptr, 0, nbytes, ev_stream()) : 0;
}

extern "C" const char* ev_cuda_error_string(int code) {
    if (code == EV_ERR_DIMS) return "exprvm: too many dimensions for a CUDA kernel";
    if (code == EV_ERR_ARGS) return "exprvm: bad sizes passed to a CUDA kernel";
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
    // NOTE: asynchronous on the default stream, like a kernel (used as one by the tape)
    return (int)cudaMemcpyAsync(dst, src, nbytes, cudaMemcpyDeviceToDevice, ev_stream());
}

extern "C" int ev_cuda_memset(void* dst, int byte, size_t nbytes) {
    return nbytes ? (int)cudaMemsetAsync(dst, byte, nbytes, ev_stream()) : 0;
}

extern "C" int ev_cuda_synchronize(void) { return (int)cudaDeviceSynchronize(); }

extern "C" int ev_cuda_status(int* out, int reset) {
    *out = 0;
    int* word = ev_status_word();
    if (word == NULL) return (int)cudaErrorInvalidSymbol;
    int rc = (int)cudaMemcpy(out, word, sizeof(int), cudaMemcpyDeviceToHost);
    if (rc == 0 && reset) rc = (int)cudaMemset(word, 0, sizeof(int));
    return rc;
}

extern "C" int ev_cuda_is_twin(void) { return 0; }

#else  // EV_HOST_TWIN: the same entry points over host memory

static int g_ev_status;
static size_t g_twin_used;
static const size_t kTwinTotal = (size_t)1 << 30;
static const char* const kTwinName = "exprvm host twin (kernels run serially on the CPU)";

int* ev_status_word(void) { return &g_ev_status; }

// ---- CUDA graphs in the twin: the work of a capture, recorded, run at each launch -----
// As on a GPU: what this thread launches while it captures is recorded with its
// arguments, not run; a call that cannot be captured (a synchronous copy, an allocation,
// reading the status word) fails with cudaErrorStreamCaptureUnsupported and invalidates
// the capture, whose end then fails with cudaErrorStreamCaptureInvalidated.

enum { kCaptureUnsupported = 900, kCaptureInvalidated = 901, kIllegalState = 401 };

typedef std::vector<std::function<void()> > EvTwinGraph;

static thread_local EvTwinGraph* t_capture = NULL;
static thread_local bool t_invalidated = false;
// Every capture open in any thread (its graph stands for its stream), so that work another
// thread sends to a capturing stream is recorded there, as a GPU records it whatever the
// thread (a cuBLAS handle whose stream was set by the capturing thread).
static std::mutex g_open_mu;
static std::set<void*> g_open;

bool ev_twin_capturing(void) { return t_capture != NULL; }

void ev_twin_record(std::function<void()> work) {
    std::lock_guard<std::mutex> hold(g_open_mu);
    t_capture->push_back(std::move(work));
}

bool ev_twin_record_on(void* stream, std::function<void()> work) {
    std::lock_guard<std::mutex> hold(g_open_mu);
    if (stream == NULL || g_open.count(stream) == 0) return false;
    ((EvTwinGraph*)stream)->push_back(std::move(work));
    return true;
}

void ev_twin_invalidate(void) { t_invalidated = true; }

// work recorded while this thread captures, else run now (a copy or memset: asynchronous
// on a GPU, so a capture holds it)
static int twin_async(std::function<void()> work) {
    if (t_capture != NULL) {
        ev_twin_record(std::move(work));
    } else {
        work();
    }
    return 0;
}

// 0, or (while capturing) the error of a call no capture can hold.
static int uncapturable(void) {
    if (t_capture == NULL) return 0;
    t_invalidated = true;
    return kCaptureUnsupported;
}

// A stand-in for the capturing stream while this thread captures (cuBLAS must be set to
// it, as on a GPU), else NULL.
extern "C" void* ev_cuda_stream(void) { return t_capture; }

extern "C" int ev_cuda_capture_begin(void) {
    if (t_capture != NULL) return kIllegalState;
    t_capture = new EvTwinGraph();
    t_invalidated = false;
    std::lock_guard<std::mutex> hold(g_open_mu);
    g_open.insert(t_capture);
    return 0;
}

extern "C" int ev_cuda_capture_end(void** graph_exec) {
    *graph_exec = NULL;
    if (t_capture == NULL) return kIllegalState;
    EvTwinGraph* graph = t_capture;
    t_capture = NULL;
    {
        std::lock_guard<std::mutex> hold(g_open_mu);
        g_open.erase(graph);
    }
    if (t_invalidated) {
        delete graph;
        return kCaptureInvalidated;
    }
    *graph_exec = graph;
    return 0;
}

extern "C" int ev_cuda_graph_launch(void* graph_exec) {
    if (t_capture != NULL) return uncapturable();
    for (const std::function<void()>& work : *(EvTwinGraph*)graph_exec) work();
    return 0;
}

extern "C" int ev_cuda_graph_free(void* graph_exec) {
    delete (EvTwinGraph*)graph_exec;
    return 0;
}

int ev_zero(void* ptr, size_t nbytes) {
    return twin_async([ptr, nbytes] { if (nbytes) memset(ptr, 0, nbytes); });
}

extern "C" const char* ev_cuda_error_string(int code) {
    if (code == EV_ERR_DIMS) return "exprvm: too many dimensions for a CUDA kernel";
    if (code == EV_ERR_ARGS) return "exprvm: bad sizes passed to a CUDA kernel";
    if (code == 2) return "out of memory (host twin)";
    if (code == 1) return "invalid argument (host twin)";
    if (code == kCaptureUnsupported) return "operation not permitted when stream is capturing (host twin)";
    if (code == kCaptureInvalidated) return "operation failed due to a previous error during capture (host twin)";
    if (code == kIllegalState) return "the operation cannot be performed in the present state (host twin)";
    return "unknown error (host twin)";
}

extern "C" int ev_cuda_device_count(int* count) { *count = 1; return 0; }
extern "C" int ev_cuda_set_device(int device) { return device == 0 ? 0 : 1; }
extern "C" int ev_cuda_get_device(int* device) { *device = 0; return 0; }

extern "C" int ev_cuda_device_info(int device, char* name, int name_len,
                                   size_t* total_bytes, int* major, int* minor) {
    if (device != 0) return 1;
    if (name_len > 0) {
        strncpy(name, kTwinName, (size_t)name_len - 1);
        name[name_len - 1] = '\0';
    }
    *total_bytes = kTwinTotal;
    *major = 0;
    *minor = 0;
    return 0;
}

extern "C" int ev_cuda_mem_info(size_t* free_bytes, size_t* total_bytes) {
    *total_bytes = kTwinTotal;
    *free_bytes = kTwinTotal - g_twin_used;
    return 0;
}

// Each block carries its size in front (16 bytes, so the data stays 16-aligned).
extern "C" int ev_cuda_malloc(void** ptr, size_t nbytes) {
    *ptr = NULL;
    if (int rc = uncapturable()) return rc;
    if (nbytes > kTwinTotal - g_twin_used) return 2;  // cudaErrorMemoryAllocation
    char* raw = (char*)malloc(nbytes + 16);
    if (raw == NULL) return 2;
    *(size_t*)raw = nbytes;
    g_twin_used += nbytes;
    *ptr = raw + 16;
    return 0;
}

extern "C" int ev_cuda_free(void* ptr) {
    if (int rc = uncapturable()) return rc;
    if (ptr == NULL) return 0;
    char* raw = (char*)ptr - 16;
    g_twin_used -= *(size_t*)raw;
    free(raw);
    return 0;
}

extern "C" int ev_cuda_memcpy_htod(void* dst, const void* src, size_t nbytes) {
    if (int rc = uncapturable()) return rc;
    if (nbytes) memmove(dst, src, nbytes);
    return 0;
}

extern "C" int ev_cuda_memcpy_dtoh(void* dst, const void* src, size_t nbytes) {
    if (int rc = uncapturable()) return rc;
    if (nbytes) memmove(dst, src, nbytes);
    return 0;
}

extern "C" int ev_cuda_memcpy_dtod(void* dst, const void* src, size_t nbytes) {
    return twin_async([dst, src, nbytes] { if (nbytes) memmove(dst, src, nbytes); });
}

extern "C" int ev_cuda_memset(void* dst, int byte, size_t nbytes) {
    return twin_async([dst, byte, nbytes] { if (nbytes) memset(dst, byte, nbytes); });
}

extern "C" int ev_cuda_synchronize(void) { return uncapturable(); }

extern "C" int ev_cuda_status(int* out, int reset) {
    *out = 0;
    if (int rc = uncapturable()) return rc;
    *out = g_ev_status;
    if (reset) g_ev_status = 0;
    return 0;
}

extern "C" int ev_cuda_is_twin(void) { return 1; }

#endif
