/*  pyi_cuda, internal half: what shared memory regions ask of the CUDA
    driver (memory/pyi_region.c calls them). Not exported. */
#ifndef PYI_CUDA_INTERNAL_H_INCLUDED
#define PYI_CUDA_INTERNAL_H_INCLUDED

#include "pyisolate/pyi_cuda.h"

/*  The allocation that holds device pointer ptr (on device hint, as the
    caller believes): its base, size, device ordinal and UUID, and an IPC
    handle for it. Fails (-1) when ptr is not device memory, or its
    allocation cannot be shared by legacy CUDA IPC (for example PyTorch's
    expandable segments). Finishes the device's queued work first. */
int pyi_cuda_export (const void *ptr, int hint, uintptr_t *base, size_t *size, int *device,
                     uint8_t uuid [PYI_CUDA_UUID], uint8_t handle [PYI_CUDA_HANDLE]);

/*  Open an IPC handle made by another process on the device with this
    UUID: the device pointer and the local device ordinal, or -1. */
int pyi_cuda_open (const uint8_t uuid [PYI_CUDA_UUID], const uint8_t handle [PYI_CUDA_HANDLE],
                   uintptr_t *pointer, int *device);

/*  Close what pyi_cuda_open opened on that device. */
void pyi_cuda_close (uintptr_t pointer, int device);

#endif
