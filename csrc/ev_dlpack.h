/* The destructor of the DLPack capsules a DeviceArray exports (exprvm/kernels/dlpack.py). */
void ev_dlpack_capsule_destructor(void *capsule);
