/*  pyi_registry: what the brokers of one process share, the only
    process-wide state of broker/ (behind one mutex; an atomic counter).
    Only pyi_broker_new and pyi_broker_destroy touch it, on the host's
    threads: never a broker thread, never the routing path.

    - A number for each new broker, unique for the life of the process,
      that names its inproc endpoints (libzmq may still hold the names of
      a broker destroyed a moment ago).
    - The live brokers, for the host's own shared memory regions: they are
      named after one session for the life of the host's brokers, the
      first live broker's (pyi_region_set_session). A broker that stops
      removes the regions of its own session (its extensions are gone);
      the last one to stop removes the host's too (only then can no
      message in flight name them). Internal to libpyisolate (broker/).
*/
#ifndef PYI_REGISTRY_H_INCLUDED
#define PYI_REGISTRY_H_INCLUDED

/*  A number no other broker of this process had. */
unsigned long pyi_registry_number (void);

/*  A broker of session "<pid>-<hex>" started; the first lends its session
    to the host's regions. */
void pyi_registry_join (const char *session);

/*  The broker of session stopped, its extensions gone: remove the names
    of the regions of its session (unless the host's regions bear it),
    and the host's own when it was the last. Mappings held here stay
    valid until released. */
void pyi_registry_leave (const char *session);

#endif
