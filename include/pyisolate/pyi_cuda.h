/*  pyi_cuda: the CUDA driver, loaded at run time when present, for CUDA
    tensors crossing processes by IPC handle (docs/tensors.md, section 8).

    Nothing here needs CUDA at build time or at run time: the driver
    library (libcuda.so.1, or $PYI_CUDA_LIBRARY) is opened with dlopen on
    first use; without it every call fails cleanly with a text in
    pyi_last_error () and CPU tensors work as before.

    All calls run in the primary context of their device (the one PyTorch
    and the CUDA runtime use), pushed and popped around each call, so they
    work from any thread. Thread-safe.
*/
#ifndef PYI_CUDA_H_INCLUDED
#define PYI_CUDA_H_INCLUDED

#include <stddef.h>
#include <stdint.h>
#include "pyi_library.h"
#include "pyi_msg.h"

#ifdef __cplusplus
extern "C" {
#endif

/*  Bytes of a CUDA IPC memory handle and of a device UUID. */
#define PYI_CUDA_HANDLE 64
#define PYI_CUDA_UUID 16

/*  1 when the driver loads and sees at least one device, else 0 with
    pyi_last_error () saying why. The answer is cached. */
PYI_EXPORT int pyi_cuda_available (void);

/*  Wait for all work queued on the devices whose memory this process has
    shared or received, so that another process reads finished data. A
    no-op (no driver call) in a process that never did. 0 or -1. */
PYI_EXPORT int pyi_cuda_synchronize (void);

/*  1 when this process has shared or received CUDA memory (so that
    pyi_cuda_synchronize has work to do), else 0. No driver call. */
PYI_EXPORT int pyi_cuda_active (void);

#ifdef __cplusplus
}
#endif

#endif
