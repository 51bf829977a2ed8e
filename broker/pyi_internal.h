/*  Functions shared inside libpyisolate, not part of its API. */
#ifndef PYI_INTERNAL_H_INCLUDED
#define PYI_INTERNAL_H_INCLUDED

/*  Initialise czmq once, without its signal handlers. */
void pyi_init (void);

#endif
