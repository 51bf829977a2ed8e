/*  pyisolate: run extensions in their own processes and talk to them
    through an in-host ZeroMQ broker. Include this one header.

    Classes (one header each):
      pyi_library  the version, the export macro, the thread's last error
      pyi_msg      a protocol message: msgpack header plus body frames
      pyi_broker   the ROUTER broker actor that runs inside the host
      pyi_client   calls named services
      pyi_worker   serves named services
      pyi_region   a shared memory region that tensors live in
      pyi_tensor   tensor descriptors over regions, and DLPack
      pyi_cuda     the CUDA driver, for CUDA tensors by IPC handle

    The wire protocol is specified in docs/protocol.md.
*/
#ifndef PYISOLATE_H_INCLUDED
#define PYISOLATE_H_INCLUDED

#include "pyi_library.h"
#include "pyi_msg.h"
#include "pyi_broker.h"
#include "pyi_client.h"
#include "pyi_worker.h"
#include "pyi_lane.h"
#include "pyi_region.h"
#include "pyi_tensor.h"
#include "pyi_cuda.h"

#endif
