/* The destructor of the DLPack capsules exprvm's DeviceArray exports (see
 * exprvm/kernels/dlpack.py). A capsule still named "dltensor" when it dies was never
 * consumed, so its DLManagedTensor's deleter runs here. It may run while the consumer that
 * refused the capsule has an exception pending (numpy refusing device memory); the deleter
 * is Python code, so that exception is set aside meanwhile and restored after. */
#include <Python.h>
#include <stdint.h>
#include "ev_dlpack.h"

/* dlpack.h's layout (unversioned ABI) */
typedef struct {
    void *data;
    struct { int device_type, device_id; } device;
    int ndim;
    struct { uint8_t code, bits; uint16_t lanes; } dtype;
    int64_t *shape, *strides;
    uint64_t byte_offset;
} ev_DLTensor;

typedef struct ev_DLManagedTensor {
    ev_DLTensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct ev_DLManagedTensor *);
} ev_DLManagedTensor;

void ev_dlpack_capsule_destructor(void *capsule) {
    PyObject *cap = (PyObject *)capsule;
    if (!PyCapsule_IsValid(cap, "dltensor"))
        return;                                 /* consumed: the consumer calls the deleter */
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    ev_DLManagedTensor *m = (ev_DLManagedTensor *)PyCapsule_GetPointer(cap, "dltensor");
    if (m != NULL && m->deleter != NULL)
        m->deleter(m);
    PyErr_Restore(type, value, traceback);
}
