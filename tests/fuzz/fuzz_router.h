/*  fuzz_router.h: the byte format of fuzz_router's inputs (a script of
    steps for three fake peers), shared with the corpus maker.

    An input is a sequence of steps; a step is an operation byte, a peer
    byte and the operation's arguments, one byte each unless said. Bytes
    are taken modulo the number of choices; a missing byte reads as 0.

      READY       token, count (0-3), count x service
      REQUEST     id, service, timeout (x 100 ms, 0: none), body
      REPLY       id, body
      ERROR       id, code, body
      CANCEL      id
      HEARTBEAT
      DISCONNECT
      RAW         length, length x byte (a header, any bytes), body
      TIME        advance (x 100 ms: deadlines and heartbeats fall due)
      EXITED      grant (its process ended)
      OVERSIZE    command (REQUEST or REPLY), id, service, kind
                  (0: a frame over the size limit, 1: too many frames)

      body        count (0-4), then unless 0: marks (bit i: frame i
                  marked), and per frame: kind (RAW: length, length x byte; DESCRIPTOR: a
                  descriptor of the fuzzer's region, always marked, in a
                  REQUEST or REPLY, else an inline tensor; INLINE: an
                  inline tensor)

    Ids of REPLY, ERROR and CANCEL are small numbers: the broker numbers
    the requests it forwards 1, 2, 3, ... in each input, so a reply can
    name a request in flight.
*/
#ifndef FUZZ_ROUTER_H_INCLUDED
#define FUZZ_ROUTER_H_INCLUDED

enum {
    FR_READY, FR_REQUEST, FR_REPLY, FR_ERROR, FR_CANCEL, FR_HEARTBEAT, FR_DISCONNECT,
    FR_RAW, FR_TIME, FR_EXITED, FR_OVERSIZE, FR_OPS
};

/*  Peers 0 and 1 connect over inproc (local), peer 2 over tcp (remote). */
#define FR_PEERS 3
#define FR_REMOTE_PEER 2

/*  Tokens: 0 and 1 are granted, 2 never was, 3 is empty. */
#define FR_TOKENS 4
/*  Services: "svc.a" (token 0), "svc.b" (both), "svc.c" (token 1),
    "svc.x" (nobody). Token 1 belongs to a spawned process. */
#define FR_SERVICES 4

#define FR_MAX_FRAMES 4
enum { FR_FRAME_RAW, FR_FRAME_DESCRIPTOR, FR_FRAME_INLINE, FR_FRAME_KINDS };

#endif
