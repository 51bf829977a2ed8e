/*  pyi_region: regions kept in this process's cache with no reference
    (docs/tensors.md, section 3), so that the next use costs no new
    mapping. Off until pyi_region_linger () gives a time. Two kinds:

    Lingering: a host region made by another process whose last local
    reference goes while some other process maps it or a message names it
    stays mapped with its lock released. It never delays the removal of
    its name (the other process's last release removes it as if we did not
    map it); a descriptor naming it takes the lock back (one flock). One
    that goes while a message names it (a tensor just sent back) is held:
    it keeps LOCK_SH until the reaper's next look, so that a descriptor
    naming it again before then costs no flock; the reaper then lets go of
    the lock as a release would have, or removes the name when it finds
    it was the last to map it.

    Spares: a region made here by pyi_region_new_for_copy (an inline
    tensor's arrival) whose last local reference goes while nobody else
    maps it and no message names it stays mapped, holding LOCK_EX, so that
    nobody can map it nor a sweep remove it; the next arrival of that size
    takes it instead of a new zero-filled region. No descriptor names a
    spare (open refuses it), and its bytes are all overwritten before it
    is shared again.

    The reaper thread drops what is kept: a lingering region within
    REAP_TICK_NS of its name being removed, any kept region after the
    linger time. Every lock transition of a kept region happens under
    pyi_region_lock with non-blocking flocks: the lock belongs to the open
    file description, which threads share.
*/
#include "pyi_region_internal.h"
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MAX_LINGERING 32                /* lingering regions at most */
#define MAX_SPARES 4                    /* spares at most */
#define REAP_TICK_NS 50000000ULL        /* the reaper looks every 50 ms */
#define REAP_IDLE_TICKS 20              /* looks at nothing before it ends */

static size_t s_lingering;              /* regions lingering */
static size_t s_spares;                 /* spares */
static uint64_t s_linger_ns;            /* 0: off */
static bool s_reaper;                   /* the reaper thread runs */

static uint64_t
s_now (void)
{
    struct timespec now;
    clock_gettime (CLOCK_MONOTONIC, &now);
    return (uint64_t) now.tv_sec * 1000000000ULL + (uint64_t) now.tv_nsec;
}

void
pyi_region_forget (pyi_region_t *self)
{
    if (self->keep == KEEP_LINGER)
        s_lingering--;
    else
    if (self->keep == KEEP_SPARE)
        s_spares--;
    self->keep = KEEP_NONE;
    self->held = false;
}

size_t
pyi_region_kept (void)
{
    return s_lingering + s_spares;
}

void
pyi_region_keep_forked (void)
{
    /*  What the parent keeps is the parent's: its locks belong to file
        descriptions both share, so the child only lets go of its copies
        (no flock, no unlink). */
    pyi_region_t *next = NULL;
    for (pyi_region_t *r = pyi_region_list; r; r = next) {
        next = r->next;
        if (r->keep == KEEP_NONE)
            continue;
        pyi_region_unlist (r);
        pyi_region_forget (r);
        munmap (r->base, r->mapped);
        close (r->fd);
        free (r);
    }
    s_reaper = false;
}

/*  Take the kept regions due (all when every is true, else those kept
    s_linger_ns, and lingering ones whose name is gone) out of the list,
    onto the list due (linked by next); lock held. */
static pyi_region_t *
s_due (bool every, pyi_region_t *due)
{
    uint64_t now = s_now ();
    pyi_region_t *next = NULL;
    for (pyi_region_t *r = pyi_region_list; r; r = next) {
        next = r->next;
        struct stat st;
        bool take = r->keep != KEEP_NONE
                 && (every || now - r->since >= s_linger_ns
                     || (r->keep == KEEP_LINGER && fstat (r->fd, &st) == 0
                         && st.st_nlink == 0));
        if (!take)
            continue;
        pyi_region_unlist (r);
        pyi_region_forget (r);
        r->next = due;
        due = r;
    }
    return due;
}

/*  Let go of the locks of held lingering regions, as their release
    would have: those we find we were the last to map while no message
    names them are taken out of the list (returned, linked by next, to
    drop: that removes their names); lock held. */
static pyi_region_t *
s_unhold (void)
{
    pyi_region_t *due = NULL;
    pyi_region_t *next = NULL;
    for (pyi_region_t *r = pyi_region_list; r; r = next) {
        next = r->next;
        if (r->keep != KEEP_LINGER || !r->held)
            continue;
        r->held = false;
        bool last = flock (r->fd, LOCK_EX | LOCK_NB) == 0;
        if (last && atomic_load (&pyi_region_header_of (r)->inflight) == 0) {
            pyi_region_unlist (r);
            pyi_region_forget (r);
            r->next = due;
            due = r;
        }
        else
            flock (r->fd, LOCK_UN);
    }
    return due;
}

static size_t
s_drop_all (pyi_region_t *list)
{
    size_t count = 0;
    while (list) {
        pyi_region_t *next = list->next;
        pyi_region_drop (list);
        list = next;
        count++;
    }
    return count;
}

static void *
s_reap (void *arg)
{
    (void) arg;
    pthread_mutex_lock (&pyi_region_lock);
    /*  It ends once nothing was kept for REAP_IDLE_TICKS looks in a row
        (not at the first: a region in use between two crossings would
        start a thread per look). */
    for (int idle = 0; idle < REAP_IDLE_TICKS; idle = pyi_region_kept () > 0 ? 0 : idle + 1) {
        pthread_mutex_unlock (&pyi_region_lock);
        struct timespec tick = { 0, (long) REAP_TICK_NS };
        nanosleep (&tick, NULL);
        pthread_mutex_lock (&pyi_region_lock);
        pyi_region_t *due = s_unhold ();
        due = s_due (s_linger_ns == 0, due);
        pthread_mutex_unlock (&pyi_region_lock);
        s_drop_all (due);
        pthread_mutex_lock (&pyi_region_lock);
    }
    s_reaper = false;
    pthread_mutex_unlock (&pyi_region_lock);
    return NULL;
}

/*  The reaper runs (started when it does not); false when it cannot. */
static bool
s_reaping (void)
{
    if (!s_reaper) {
        pthread_attr_t attr;
        pthread_t thread;
        pthread_attr_init (&attr);
        pthread_attr_setdetachstate (&attr, PTHREAD_CREATE_DETACHED);
        s_reaper = pthread_create (&thread, &attr, s_reap, NULL) == 0;
        pthread_attr_destroy (&attr);
    }
    return s_reaper;
}

/*  Room for one more of kind (at most max): the oldest of that kind out
    of the list, into *evicted. */
static void
s_make_room (pyi_region_keep_t kind, size_t count, size_t max, pyi_region_t **evicted)
{
    if (count < max)
        return;
    pyi_region_t *oldest = NULL;
    for (pyi_region_t *r = pyi_region_list; r; r = r->next)
        if (r->keep == kind && (!oldest || r->since < oldest->since))
            oldest = r;
    pyi_region_forget (oldest);
    pyi_region_unlist (oldest);
    *evicted = oldest;
}

bool
pyi_region_keep (pyi_region_t *self, pyi_region_t **evicted)
{
    if (!s_linger_ns || self->kind != KIND_HOST || !(self->for_copy || !self->here))
        return false;
    /*  A message names it (a reply just sent, say): not idle, whoever else
        maps it, so it lingers without asking whether we were the last. */
    bool named = !self->for_copy && atomic_load (&pyi_region_header_of (self)->inflight) > 0;
    bool last = !named && flock (self->fd, LOCK_EX | LOCK_NB) == 0;
    bool idle = last && atomic_load (&pyi_region_header_of (self)->inflight) == 0;
    if (self->for_copy) {
        /*  A spare only when nobody else maps it and nothing names it;
            LOCK_EX stays held. Else its release goes on as usual. */
        if (!idle || !s_reaping ())
            return false;
        s_make_room (KEEP_SPARE, s_spares, MAX_SPARES, evicted);
        self->keep = KEEP_SPARE;
        s_spares++;
    }
    else {
        if (idle || !s_reaping ())
            return false;           /* nobody can name it to us again */
        s_make_room (KEEP_LINGER, s_lingering, MAX_LINGERING, evicted);
        /*  Named: likely to come back soon; held until the reaper looks. */
        if (named)
            self->held = true;
        else
            flock (self->fd, LOCK_UN);
        self->keep = KEEP_LINGER;
        s_lingering++;
    }
    self->since = s_now ();
    return true;
}

pyi_region_t *
pyi_region_unkeep (pyi_region_t *self, pyi_region_t **evicted)
{
    if (self->keep == KEEP_NONE) {
        self->refs++;
        return self;
    }
    bool held = self->held;
    pyi_region_forget (self);
    if (held || flock (self->fd, LOCK_SH | LOCK_NB) == 0) {
        self->refs = 1;
        return self;
    }
    pyi_region_unlist (self);
    *evicted = self;
    return NULL;
}

pyi_region_t *
pyi_region_new_for_copy (size_t size)
{
    pthread_mutex_lock (&pyi_region_lock);
    pyi_region_t *self = pyi_region_list;
    while (self && !(self->keep == KEEP_SPARE && self->size == size))
        self = self->next;
    if (self) {
        pyi_region_forget (self);
        self->refs = 1;
        /*  From LOCK_EX to LOCK_SH is not atomic: counted in flight
            meanwhile, so that a sweep in the gap leaves the name. */
        atomic_fetch_add (&pyi_region_header_of (self)->inflight, 1);
    }
    pthread_mutex_unlock (&pyi_region_lock);
    if (!self) {
        self = pyi_region_new (size);
        if (self)
            self->for_copy = true;      /* nobody else knows it yet */
        return self;
    }
    while (flock (self->fd, LOCK_SH) && errno == EINTR)
        ;
    pyi_region_header_consume (pyi_region_header_of (self));
    return self;
}

void
pyi_region_linger (unsigned ms)
{
    pthread_mutex_lock (&pyi_region_lock);
    s_linger_ns = (uint64_t) ms * 1000000ULL;
    pthread_mutex_unlock (&pyi_region_lock);
    if (!ms)
        pyi_region_trim ();
}

size_t
pyi_region_trim (void)
{
    pthread_mutex_lock (&pyi_region_lock);
    pyi_region_t *due = s_due (true, NULL);
    pthread_mutex_unlock (&pyi_region_lock);
    return s_drop_all (due);
}

size_t
pyi_region_lingering (void)
{
    pthread_mutex_lock (&pyi_region_lock);
    size_t count = s_lingering;
    pthread_mutex_unlock (&pyi_region_lock);
    return count;
}

size_t
pyi_region_spares (void)
{
    pthread_mutex_lock (&pyi_region_lock);
    size_t count = s_spares;
    pthread_mutex_unlock (&pyi_region_lock);
    return count;
}
