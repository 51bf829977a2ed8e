/*  pyi_broker_cmd: commands and answers as single frames, copied as they
    are (both ends are threads of one process). */
#include "pyi_broker_cmd.h"
#include <string.h>
#include <zmq.h>

static int
s_send (void *pipe, const void *data, size_t size)
{
    return zmq_send (pipe, data, size, 0) == (int) size ? 0 : -1;
}

/*  One frame of exactly size bytes; a frame of any other size is read
    whole and refused. */
static int
s_recv (void *pipe, void *data, size_t size)
{
    zmq_msg_t frame;
    zmq_msg_init (&frame);
    int rc = -1;
    if (zmq_msg_recv (&frame, pipe, 0) == (int) size && !zmq_msg_more (&frame)) {
        memcpy (data, zmq_msg_data (&frame), size);
        rc = 0;
    }
    else
        while (zmq_msg_more (&frame) && zmq_msg_recv (&frame, pipe, 0) != -1)
            ;                       /* drop the rest of a multipart */
    zmq_msg_close (&frame);
    return rc;
}

int
pyi_broker_cmd_send (void *pipe, const pyi_broker_cmd_t *cmd)
{
    return s_send (pipe, cmd, sizeof (*cmd));
}

int
pyi_broker_answer_send (void *pipe, const pyi_broker_answer_t *answer)
{
    return s_send (pipe, answer, sizeof (*answer));
}

int
pyi_broker_cmd_recv (void *pipe, pyi_broker_cmd_t *cmd)
{
    return s_recv (pipe, cmd, sizeof (*cmd));
}

int
pyi_broker_answer_recv (void *pipe, pyi_broker_answer_t *answer)
{
    return s_recv (pipe, answer, sizeof (*answer));
}
