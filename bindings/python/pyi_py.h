/*  pyi_py: the C half of the Python binding, pyisolate._native.

    cffi wraps the public headers and this one (ffi_build.py reads them all
    at build time). What cffi cannot do, the bridge does in the Python C
    API: after pyi_py_install () the module also has these functions,
    which _core.py and _tensors.py call, one call per message:

        recv_client (client) / recv_worker (worker)
            client: a cffi ``pyi_client_t *``, worker a ``pyi_worker_t *``.
            -> None when nothing is waiting, else the tuple
               (command, id, service, code, text, timeout_ms, frames, services)
            frames[0] is bytes and the other frames bytearrays (copies)
            when shorter than PYI_PY_BIG_FRAME; longer frames are
            read-only memoryviews of the received bytes, which keep the
            message alive until every view of it is released (no copy).
            services (READY only, else empty) is a list of str.
        client_request (client, service: bytes, id, timeout_ms, frames[, marks])
        worker_reply (worker, id, frames[, marks])
        worker_error (worker, id, code, text: bytes, frames)
            frames: a sequence of contiguous buffers. One shorter than
            PYI_PY_BIG_FRAME is copied into its body frame; a longer one
            is lent: the frame points at the Python buffer, held (a
            Py_buffer) until libzmq is done with it (pyi_py_loan.h).
            marks: the indexes of the frames that hold tensor descriptors
            (pyi_msg_mark_descriptor). -> 0 sent; 1 not sent, the send
            queue is full (EAGAIN: try again later); -1 failed
            (pyi_last_error () says why); -2 more frames than a message
            may carry.
        recv_lane (lane)
            lane: a cffi ``pyi_lane_t *``. -> None when no whole message
            is waiting (or the lane ended: pyi_lane_state () says), else
            the tuple of recv_client.
        lane_send (lane, now, command, id, service: bytes, timeout_ms, code,
                   text: bytes, frames[, marks])
            REQUEST (service, timeout_ms), REPLY, ERROR (code, text,
            service) or CANCEL on a lane; frames and marks as above.
            now: write it to the socket now (pyi_lane_send), else only
            queue it (pyi_lane_queue) for the next pyi_lane_flush.
            -> sent or queued: the bytes the lane's queue holds now
            (pyi_lane_queued (), 0 when all went to the socket);
            -1 failed (pyi_last_error () says why); -2 too many frames.
        dlpack_capsule_versioned (tensor) -> a "dltensor_versioned" capsule
        dlpack_capsule (tensor)           -> a "dltensor" capsule
            tensor: a cffi ``DLManagedTensorVersioned *`` (resp.
            ``DLManagedTensor *``), taken: the capsule's destructor calls
            its deleter when nobody consumed it (numpy and torch rename a
            consumed capsule "used_..." and call the deleter themselves).
        array (tensor) -> Array
            tensor: a cffi ``DLManagedTensorVersioned *`` (taken). An
            object that exports the tensor's memory by the buffer protocol
            (pyi_py_array.h): numpy.asarray of it is an ndarray over it.
        describe_array (obj) -> (bytes, read_only) or None
            the descriptor of the memory obj exports by the buffer
            protocol, counted in flight on its region; None when it is not
            wholly inside a region mapped here.
        received (descriptor) -> bool
            pyi_tensor_received: a descriptor this process sent came back
            and the tensor it sent stands for it; True when its in-flight
            count was taken (False: decode it instead).
        Hooks, codec_setup, codec_numpy, codec_torch, codec_decode
            the codec's msgpack hooks in C, and its decoder: pyi_py_codec.h.

    Handles cross as cffi pointers, checked against their type as cffi
    checks the arguments of its own functions.
*/
#ifndef PYI_PY_H_INCLUDED
#define PYI_PY_H_INCLUDED

#include <stddef.h>

/*  Frames from this size on cross without a copy (lent on send, viewed on
    receive); shorter ones are copied, which costs less than a loan. */
#define PYI_PY_BIG_FRAME 65536

/*  Add the functions above to pyisolate._native; later calls do nothing.
    Takes the GIL (cffi calls C without it). 0, or -1. */
int pyi_py_install (void);

/*  Python buffers lent to libzmq now: sent without a copy and not yet
    given back to Python. */
size_t pyi_py_loans (void);

/*  Received messages that views of their frames keep alive now. */
size_t pyi_py_views (void);

#endif
