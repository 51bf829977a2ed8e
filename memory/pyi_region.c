/*  pyi_region: shared memory regions, mapped once per process and cached,
    with cross-process lifetime kept by flock (docs/tensors.md).

    Lock protocol. Every process that maps a region holds LOCK_SH on its
    own open file description of it. Whoever can take LOCK_EX (with
    LOCK_NB) knows that no other process maps the region. While LOCK_EX is
    held nobody can map it, so the header's inflight count cannot change:
    reading it then is exact. The kernel drops the locks of a process that
    dies, however it dies.

    Kept regions (pyi_region_keep.c): with pyi_region_linger on, a
    region whose last local reference goes may stay in the cache with refs
    0 (lingering, or a spare): open and pyi_region_new_for_copy take such
    regions back; find never returns them.

    This file holds the regions mapped in this process; pyi_region_names.c
    what is done to regions by name alone (discard, sweep, removal).
*/
#include "pyi_region_internal.h"
#include "pyi_cuda_internal.h"
#include "pyi_library_internal.h"
#include "pyi_table.h"
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define LOCK_TRIES 1000                      /* 1 ms apart: a peer's LOCK_EX is brief */

pthread_mutex_t pyi_region_lock = PTHREAD_MUTEX_INITIALIZER;
pyi_region_t *pyi_region_list;
size_t pyi_region_count;
static pthread_once_t s_once = PTHREAD_ONCE_INIT;

/*  fork () while another thread holds the lock would leave the child's copy
    locked forever: hold it across fork. */
static void s_prepare (void) { pthread_mutex_lock (&pyi_region_lock); }
static void s_after (void) { pthread_mutex_unlock (&pyi_region_lock); }
static void s_child (void) { pyi_region_keep_forked (); pthread_mutex_unlock (&pyi_region_lock); }

/*  At exit the process's mappings go away with it, released or not: do
    what the last release would do for each, without unmapping (other exit
    handlers may still read them). */
static void
s_at_exit (void)
{
    pthread_mutex_lock (&pyi_region_lock);
    for (pyi_region_t *r = pyi_region_list; r; r = r->next)
        if (r->exporter)
            shm_unlink (r->name);   /* its CUDA memory dies with this process */
        else
        if (r->kind == KIND_HOST && flock (r->fd, LOCK_EX | LOCK_NB) == 0
        &&  atomic_load (&((pyi_region_header_t *) r->base)->inflight) == 0)
            shm_unlink (r->name);
    pthread_mutex_unlock (&pyi_region_lock);
}

static void
s_init (void)
{
    pthread_atfork (s_prepare, s_after, s_child);
    atexit (s_at_exit);
}

/*  Take LOCK_SH, waiting out a peer's brief LOCK_EX (never forever). */
static int
s_lock_shared (int fd)
{
    for (int i = 0; i < LOCK_TRIES; i++) {
        if (flock (fd, LOCK_SH | LOCK_NB) == 0)
            return 0;
        if (errno != EWOULDBLOCK && errno != EINTR)
            return -1;
        struct timespec ms = { 0, 1000000 };
        nanosleep (&ms, NULL);
    }
    errno = EWOULDBLOCK;
    return -1;
}

/*  Indexes of pyi_region_list (lock held): by name, and by data address
    (an array sorted by data), so that open and find cost no walk of every
    region mapped here. If memory runs out they are given up for good and
    both walk the list: slower, never wrong. */
static pyi_table_t *s_names;
static pyi_region_t **s_by_data;
static size_t s_by_data_count;
static size_t s_by_data_slots;
static bool s_unindexed;

static const void *
s_name_key (const void *item, size_t *size)
{
    const pyi_region_t *r = (const pyi_region_t *) item;
    *size = strlen (r->name);
    return r->name;
}

/*  The first index of s_by_data whose region's data lies above p. */
static size_t
s_above (const uint8_t *p)
{
    size_t lo = 0, hi = s_by_data_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s_by_data [mid]->data <= p)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void
s_index (pyi_region_t *self)
{
    if (s_unindexed)
        return;
    if (!s_names)
        s_names = pyi_table_new (s_name_key);
    if (s_by_data_count == s_by_data_slots) {
        size_t slots = s_by_data_slots ? 2 * s_by_data_slots : 64;
        pyi_region_t **grown = (pyi_region_t **) realloc (s_by_data, slots * sizeof (*grown));
        if (grown) {
            s_by_data = grown;
            s_by_data_slots = slots;
        }
    }
    if (!s_names || s_by_data_count == s_by_data_slots || pyi_table_insert (s_names, self)) {
        s_unindexed = true;
        return;
    }
    size_t at = s_above (self->data);
    memmove (s_by_data + at + 1, s_by_data + at, (s_by_data_count - at) * sizeof (*s_by_data));
    s_by_data [at] = self;
    s_by_data_count++;
}

static void
s_unindex (pyi_region_t *self)
{
    if (s_unindexed)
        return;
    pyi_table_remove (s_names, self->name, strlen (self->name));
    size_t at = s_above (self->data);
    while (at > 0 && s_by_data [at - 1] != self && s_by_data [at - 1]->data == self->data)
        at--;       /* (equal addresses: a host and a CUDA region, say) */
    if (at == 0 || s_by_data [at - 1] != self) {
        s_unindexed = true;     /* not there: never expected, never trusted again */
        return;
    }
    memmove (s_by_data + at - 1, s_by_data + at, (s_by_data_count - at) * sizeof (*s_by_data));
    s_by_data_count--;
}

/*  Add a mapped region to the cache with one reference; lock held. */
static pyi_region_t *
s_insert (pyi_region_t *self)
{
    self->refs = 1;
    self->prev = NULL;
    self->next = pyi_region_list;
    if (pyi_region_list)
        pyi_region_list->prev = self;
    pyi_region_list = self;
    pyi_region_count++;
    s_index (self);
    return self;
}

static pyi_region_t *
s_lookup (const char *name)
{
    if (!s_unindexed)
        return s_names ? (pyi_region_t *) pyi_table_lookup (s_names, name, strlen (name)) : NULL;
    for (pyi_region_t *r = pyi_region_list; r; r = r->next)
        if (strcmp (r->name, name) == 0)
            return r;
    return NULL;
}

void
pyi_region_unlist (pyi_region_t *self)
{
    if (self->prev)
        self->prev->next = self->next;
    else
        pyi_region_list = self->next;
    if (self->next)
        self->next->prev = self->prev;
    self->prev = self->next = NULL;
    pyi_region_count--;
    s_unindex (self);
}

/*  LOCK_EX succeeds only when no other process maps the region; while we
    hold it nobody can start to, so inflight is stable. (A failed
    conversion drops our LOCK_SH: harmless, we close next.) */
void
pyi_region_drop (pyi_region_t *self)
{
    if (!self)
        return;
    if (self->kind == KIND_CUDA && !self->exporter)
        pyi_cuda_close ((uintptr_t) self->data, self->device);
    bool last = flock (self->fd, LOCK_EX | LOCK_NB) == 0;
    bool idle = last && atomic_load (&pyi_region_header_of (self)->inflight) == 0;
    /*  A CUDA region's name is its creator's to remove (pyi_region_collect)
        while the creator lives: it may name the allocation again. */
    if (idle && self->kind == KIND_CUDA)
        idle = self->exporter || !pyi_region_alive (pyi_region_header_of (self)->creator);
    munmap (self->base, self->mapped);
    if (idle)
        shm_unlink (self->name);
    close (self->fd);
    free (self);
}

/*  Create a new, empty shared memory object with a fresh name; 0 or -1. */
static int
s_create (pyi_region_t *self)
{
    char session [MAX_SESSION + 1];
    pyi_region_session_copy (session);

    /*  The last part is 64 random bits: a name cannot be guessed, so a
        process that cannot list /dev/shm (a sandboxed extension) opens
        only the regions whose names it was given. O_EXCL skips a name that
        exists anyway. */
    self->fd = -1;
    for (int tries = 0; self->fd == -1 && tries < 100; tries++) {
        uint64_t nonce;
        if (getrandom (&nonce, sizeof (nonce), 0) != sizeof (nonce)) {
            pyi_set_error ("cannot name shared memory: getrandom: %s", strerror (errno));
            return -1;
        }
        snprintf (self->name, sizeof (self->name), "/" NAME_PREFIX "%s-%ld-%" PRIu64,
                  session, (long) getpid (), nonce);
        self->fd = shm_open (self->name, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (self->fd == -1 && errno != EEXIST)
            break;
    }
    if (self->fd == -1) {
        pyi_set_error ("cannot create shared memory %s: %s", self->name, strerror (errno));
        return -1;
    }
    return 0;
}

pyi_region_t *
pyi_region_new (size_t size)
{
    pthread_once (&s_once, s_init);
    if (size > PYI_REGION_MAX_SIZE) {
        pyi_set_error ("region of %zu bytes is over the limit of %zu", size, PYI_REGION_MAX_SIZE);
        return NULL;
    }
    pyi_region_t *self = (pyi_region_t *) calloc (1, sizeof (pyi_region_t));
    if (!self) {
        pyi_set_error ("out of memory");
        return NULL;
    }
    if (s_create (self)) {
        free (self);
        return NULL;
    }
    /*  Lock before the object has a size: a sweep that sees size 0 skips it. */
    size_t total = PYI_REGION_HEADER + size;
    int rc;
    if (flock (self->fd, LOCK_SH)) {
        pyi_set_error ("cannot lock %s: %s", self->name, strerror (errno));
        goto failed;
    }
    if ((rc = posix_fallocate (self->fd, 0, (off_t) total))) {
        pyi_set_error ("cannot reserve %zu bytes of shared memory in " SHM_DIR " for %s: %s",
                       total, self->name, strerror (rc));
        goto failed;
    }
    self->base = (uint8_t *) mmap (NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, self->fd, 0);
    if (self->base == MAP_FAILED) {
        self->base = NULL;
        pyi_set_error ("cannot map %s: %s", self->name, strerror (errno));
        goto failed;
    }
    self->mapped = total;
    self->data = self->base + PYI_REGION_HEADER;
    self->size = size;
    self->kind = KIND_HOST;
    self->here = true;
    pyi_region_header_t *header = pyi_region_header_of (self);
    header->layout = REGION_LAYOUT;
    header->header_size = PYI_REGION_HEADER;
    header->size = size;
    atomic_store (&header->inflight, 0);
    header->creator = (uint32_t) getpid ();
    atomic_thread_fence (memory_order_release);
    header->magic = REGION_MAGIC;

    pthread_mutex_lock (&pyi_region_lock);
    s_insert (self);
    pthread_mutex_unlock (&pyi_region_lock);
    return self;

failed:
    shm_unlink (self->name);
    close (self->fd);
    free (self);
    return NULL;
}

/*  Map an existing region (not in the cache). NULL with the error set. */
static pyi_region_t *
s_map (const char *name)
{
    pyi_region_t *self = (pyi_region_t *) calloc (1, sizeof (pyi_region_t));
    if (!self) {
        pyi_set_error ("out of memory");
        return NULL;
    }
    snprintf (self->name, sizeof (self->name), "%s", name);
    self->fd = shm_open (name, O_RDWR | O_NOFOLLOW | O_CLOEXEC, 0);
    if (self->fd == -1) {
        pyi_set_error ("unknown region %s: %s", name, strerror (errno));
        free (self);
        return NULL;
    }
    struct stat st;
    if (s_lock_shared (self->fd) || fstat (self->fd, &st)) {
        pyi_set_error ("cannot lock region %s: %s", name, strerror (errno));
        goto failed;
    }
    if (st.st_size < PYI_REGION_HEADER
    ||  (uint64_t) st.st_size - PYI_REGION_HEADER > PYI_REGION_MAX_SIZE) {
        pyi_set_error ("region %s has a bad size (%lld bytes)", name, (long long) st.st_size);
        goto failed;
    }
    self->mapped = (size_t) st.st_size;
    self->base = (uint8_t *) mmap (NULL, self->mapped, PROT_READ | PROT_WRITE,
                                   MAP_SHARED, self->fd, 0);
    if (self->base == MAP_FAILED) {
        self->base = NULL;
        pyi_set_error ("cannot map region %s: %s", name, strerror (errno));
        goto failed;
    }
    pyi_region_header_t *header = pyi_region_header_of (self);
    self->kind = (int) header->kind;
    self->size = (size_t) header->size;
    bool host = self->kind == KIND_HOST && self->mapped - PYI_REGION_HEADER == self->size;
    bool cuda = self->kind == KIND_CUDA && self->mapped == PYI_REGION_HEADER
             && self->size <= PYI_REGION_MAX_SIZE;
    if (header->magic != REGION_MAGIC || header->layout != REGION_LAYOUT
    ||  header->header_size != PYI_REGION_HEADER || !(host || cuda)) {
        pyi_set_error ("region %s has no valid header (magic, layout %u, kind %u, or size)",
                       name, (unsigned) header->layout, (unsigned) header->kind);
        goto unmap;
    }
    if (host)
        self->data = self->base + PYI_REGION_HEADER;
    else {
        uintptr_t pointer;
        if (pyi_cuda_open (header->uuid, header->handle, &pointer, &self->device)) {
            /*  The descriptor that named it is consumed all the same. */
            pyi_region_header_consume (header);
            goto unmap;
        }
        self->data = (uint8_t *) pointer;
    }
    return self;

unmap:
    munmap (self->base, self->mapped);

failed:
    close (self->fd);   /* drops our lock; the name is not ours to remove */
    free (self);
    return NULL;
}

pyi_region_t *
pyi_region_open (const char *name)
{
    pthread_once (&s_once, s_init);
    if (!pyi_region_valid_name (name)) {
        pyi_set_error ("region name not of the form /pyi-<session>-<pid>-<random>: %.64s",
                       name ? name : "(null)");
        return NULL;
    }
    pyi_region_t *evicted = NULL;
    pthread_mutex_lock (&pyi_region_lock);
    pyi_region_t *self = s_lookup (name);
    bool spare = self && self->keep == KEEP_SPARE;
    if (self && !spare)
        self = pyi_region_unkeep (self, &evicted);
    pthread_mutex_unlock (&pyi_region_lock);
    pyi_region_drop (evicted);
    if (spare) {
        pyi_set_error ("region %s is not in use (no descriptor may name it)", name);
        return NULL;
    }
    if (self)
        return self;

    /*  Map outside the lock (syscalls); another thread may map it too:
        the first to insert wins, the other drops its mapping. */
    pyi_region_t *mapped = s_map (name);
    if (!mapped)
        return NULL;
    pthread_mutex_lock (&pyi_region_lock);
    self = s_lookup (name);
    if (self && self->keep != KEEP_NONE) {     /* let ours, which holds the lock, replace it */
        pyi_region_forget (self);
        pyi_region_unlist (self);
        evicted = self;
        self = NULL;
    }
    if (self)
        self->refs++;
    else
        self = s_insert (mapped);
    pthread_mutex_unlock (&pyi_region_lock);
    pyi_region_drop (evicted);
    if (self != mapped) {
        if (mapped->kind == KIND_CUDA)
            pyi_cuda_close ((uintptr_t) mapped->data, mapped->device);
        munmap (mapped->base, mapped->mapped);
        close (mapped->fd);
        free (mapped);
    }
    return self;
}

pyi_region_t *
pyi_region_find (const void *ptr, size_t *offset)
{
    const uint8_t *p = (const uint8_t *) ptr;
    pthread_mutex_lock (&pyi_region_lock);
    /*  Inside a region's data, else at the end of one (mappings and CUDA
        allocations may be adjacent: inside wins). Regions do not overlap:
        the one p may be inside starts last at or below p, and the one it
        may end is that one or the one before. */
    pyi_region_t *self = NULL, *edge = NULL;
    size_t above = s_unindexed ? 0 : s_above (p);
    pyi_region_t *r = s_unindexed ? pyi_region_list : above ? s_by_data [above - 1] : NULL;
    for (size_t seen = 0; r && !self; seen++) {
        if (r->keep == KEEP_NONE) {         /* nothing here points into a kept one */
            if (p >= r->data && p < r->data + r->size)
                self = r;
            else
            if (p == r->data + r->size && !edge)
                edge = r;
        }
        r = s_unindexed ? r->next : seen == 0 && above > 1 ? s_by_data [above - 2] : NULL;
    }
    if (!self)
        self = edge;
    if (self) {
        self->refs++;
        if (offset)
            *offset = (size_t) (p - self->data);
    }
    pthread_mutex_unlock (&pyi_region_lock);
    return self;
}

pyi_region_t *
pyi_region_find_cuda (const void *ptr, int device, size_t *offset)
{
    pthread_once (&s_once, s_init);
    size_t at = 0;
    pyi_region_t *self = pyi_region_find (ptr, &at);
    if (self && at == self->size && self->size > 0)
        pyi_region_release (&self);     /* just past an allocation: maybe the next */
    if (self) {
        if (offset)
            *offset = at;
        if (self->kind == KIND_CUDA)
            return self;
        pyi_region_release (&self);
        pyi_set_error ("address %p is host memory of a shared region, not CUDA memory", ptr);
        return NULL;
    }
    /*  Not shared yet: a region naming its whole allocation. */
    uintptr_t base;
    size_t size;
    int ordinal;
    uint8_t uuid [PYI_CUDA_UUID], handle [PYI_CUDA_HANDLE];
    if (pyi_cuda_export (ptr, device, &base, &size, &ordinal, uuid, handle))
        return NULL;
    if (size > PYI_REGION_MAX_SIZE) {
        pyi_set_error ("CUDA allocation of %zu bytes is over the limit of %zu",
                       size, PYI_REGION_MAX_SIZE);
        return NULL;
    }
    self = (pyi_region_t *) calloc (1, sizeof (pyi_region_t));
    if (!self) {
        pyi_set_error ("out of memory");
        return NULL;
    }
    if (s_create (self)) {
        free (self);
        return NULL;
    }
    /*  The exporter holds no lock once the header is written, so that
        pyi_region_collect can tell by LOCK_EX whether a receiver maps the
        region; until then LOCK_SH keeps sweeps off the half-made object. */
    int rc = flock (self->fd, LOCK_SH) ? errno : posix_fallocate (self->fd, 0, PYI_REGION_HEADER);
    if (rc) {
        pyi_set_error ("cannot reserve shared memory for %s: %s", self->name, strerror (rc));
        goto failed;
    }
    self->mapped = PYI_REGION_HEADER;
    self->base = (uint8_t *) mmap (NULL, self->mapped, PROT_READ | PROT_WRITE, MAP_SHARED,
                                   self->fd, 0);
    if (self->base == MAP_FAILED) {
        self->base = NULL;
        pyi_set_error ("cannot map %s: %s", self->name, strerror (errno));
        goto failed;
    }
    self->data = (uint8_t *) base;
    self->size = size;
    self->kind = KIND_CUDA;
    self->device = ordinal;
    self->exporter = true;
    pyi_region_header_t *header = pyi_region_header_of (self);
    header->layout = REGION_LAYOUT;
    header->header_size = PYI_REGION_HEADER;
    header->size = size;
    header->creator = (uint32_t) getpid ();
    header->kind = KIND_CUDA;
    memcpy (header->uuid, uuid, PYI_CUDA_UUID);
    memcpy (header->handle, handle, PYI_CUDA_HANDLE);
    atomic_thread_fence (memory_order_release);
    header->magic = REGION_MAGIC;
    flock (self->fd, LOCK_UN);

    pthread_mutex_lock (&pyi_region_lock);
    /*  Another thread may have exported the same allocation meanwhile. */
    pyi_region_t *other = pyi_region_list;
    while (other && !(other->kind == KIND_CUDA && other->data == self->data))
        other = other->next;
    if (other) {
        other->refs++;
        pthread_mutex_unlock (&pyi_region_lock);
        munmap (self->base, self->mapped);
        shm_unlink (self->name);
        close (self->fd);
        free (self);
        self = other;
    }
    else {
        s_insert (self);        /* the export's own reference */
        self->refs++;           /* the caller's */
        pthread_mutex_unlock (&pyi_region_lock);
    }
    if (offset)
        *offset = (size_t) ((const uint8_t *) ptr - self->data);
    return self;

failed:
    shm_unlink (self->name);
    close (self->fd);
    free (self);
    return NULL;
}

int
pyi_region_collect (char (*names) [PYI_REGION_MAX_NAME + 1], int capacity)
{
    int done = 0;
    pthread_mutex_lock (&pyi_region_lock);
    pyi_region_t *next = NULL;
    for (pyi_region_t *r = pyi_region_list; r && done < capacity; r = next) {
        next = r->next;
        /*  Only the export's reference left, and no other process maps it
            (LOCK_EX: nobody can start to while we hold it) nor is about to. */
        bool free_it = r->exporter && r->refs == 1
                    && flock (r->fd, LOCK_EX | LOCK_NB) == 0;
        if (free_it && atomic_load (&pyi_region_header_of (r)->inflight) > 0) {
            flock (r->fd, LOCK_UN);
            free_it = false;
        }
        if (!free_it)
            continue;
        pyi_region_unlist (r);
        shm_unlink (r->name);
        if (names)
            memcpy (names [done], r->name, sizeof (r->name));
        done++;
        munmap (r->base, r->mapped);
        close (r->fd);
        free (r);
    }
    pthread_mutex_unlock (&pyi_region_lock);
    return done;
}

size_t
pyi_region_exported (void)
{
    size_t count = 0;
    pthread_mutex_lock (&pyi_region_lock);
    for (pyi_region_t *r = pyi_region_list; r; r = r->next)
        count += r->exporter;
    pthread_mutex_unlock (&pyi_region_lock);
    return count;
}

pyi_region_t *
pyi_region_ref (pyi_region_t *self)
{
    pthread_mutex_lock (&pyi_region_lock);
    self->refs++;
    pthread_mutex_unlock (&pyi_region_lock);
    return self;
}

void
pyi_region_release (pyi_region_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    pyi_region_t *self = *self_p;
    *self_p = NULL;
    pyi_region_t *evicted = NULL;
    pthread_mutex_lock (&pyi_region_lock);
    if (--self->refs > 0) {
        pthread_mutex_unlock (&pyi_region_lock);
        return;
    }
    if (pyi_region_keep (self, &evicted)) {
        pthread_mutex_unlock (&pyi_region_lock);
        pyi_region_drop (evicted);
        return;
    }
    pyi_region_unlist (self);
    pthread_mutex_unlock (&pyi_region_lock);
    pyi_region_drop (self);
}

void *pyi_region_data (pyi_region_t *self) { return self->data; }
int pyi_region_device (pyi_region_t *self) { return self->kind == KIND_CUDA ? self->device : -1; }
size_t pyi_region_size (pyi_region_t *self) { return self->size; }
const char *pyi_region_name (pyi_region_t *self) { return self->name; }

void
pyi_region_sent (pyi_region_t *self)
{
    atomic_fetch_add (&pyi_region_header_of (self)->inflight, 1);
}

void
pyi_region_received (pyi_region_t *self)
{
    pyi_region_header_consume (pyi_region_header_of (self));
}

uint32_t
pyi_region_inflight (pyi_region_t *self)
{
    return atomic_load (&pyi_region_header_of (self)->inflight);
}

size_t
pyi_region_mapped (void)
{
    pthread_mutex_lock (&pyi_region_lock);
    size_t count = pyi_region_count - pyi_region_kept ();
    pthread_mutex_unlock (&pyi_region_lock);
    return count;
}
