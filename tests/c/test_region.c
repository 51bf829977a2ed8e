/*  test_region: shared memory regions and their lifetime across processes.

    Real processes: this program starts copies of itself (posix_spawn of
    /proc/self/exe) as a "child" that maps regions on command, and as a
    "host" that starts a broker and is killed with SIGKILL.

    Guarantees checked:
    - a new region has a name of the form /pyi-<session>-<pid>-<random>
      (the next region's last part is not the next number: names cannot
      be guessed from one another), a
      page-aligned zeroed data area of the size asked (0 allowed), and a
      /dev/shm entry; opening its name again gives the same region (same
      mapping, cached, one more reference); find maps addresses inside
      (and the end of) its data to it with the offset, and others to NULL;
    - with hundreds of regions mapped, released in any order, find and
      open give each one and nothing else (the indexes by address and by
      name);
    - bad names (not of our form, absent) and objects of our form that are
      not regions (no header, too small) are refused with an error text;
    - another process maps the same memory: writes in place are seen both
      ways;
    - the last process to let go removes the name; a region with a message
      in flight survives its sender's release until the receiver maps it
      and lets go; sweep leaves in-flight and mapped regions alone, and
      remove_session removes everything of the session;
    - the three leak cases: a child that exits normally without releasing
      leaves nothing of its own; a child killed with SIGKILL while it maps
      a region: after the host releases too nothing stays in /dev/shm nor
      in /proc/self/maps (and when the host released first, a sweep
      reclaims it; a sweep by the dead creator's pid reclaims its own);
      a host killed with SIGKILL: the next pyi_broker_new removes its
      regions;
    - threads opening, finding and releasing one region at once keep the
      count right;
    - lingering (pyi_region_linger): a region made by another process
      stays mapped after its last local reference while that process
      maps it, holding no lock (the other process's last release removes
      the name), and opening it again gives the same mapping; a region in
      use holds its lock (the name stays); one made here never lingers;
      at most 32 linger; trim and linger (0) unmap them; the reaper lets
      go of one whose name is gone; one released while a message names it
      keeps its lock until the reaper looks (the name stays), and the
      reaper removes the name when this process was the last to map it;
    - at the end no pyi- name of this test's session is left in /dev/shm,
      and nothing of ours is mapped.
*/
#include "testchild.h"
#include <pthread.h>
#include <sys/mman.h>

/*  On failure: kill the helpers, remove what the test made. */
static void
s_on_failure (void)
{
    t_kill_children ();
    pyi_region_remove_session (NULL);
}

/*  Tell the child to exit (without releasing) and reap it. */
static void
s_exit (t_child_t *child)
{
    fprintf (child->in, "exit\n");
    fflush (child->in);
    int status = t_reap (child);
    CHECK (WIFEXITED (status) && WEXITSTATUS (status) == 0);
}

static void
s_kill (t_child_t *child)
{
    kill (child->pid, SIGKILL);
    CHECK (WIFSIGNALED (t_reap (child)));
}

/*  The child: maps regions on command (one current region). */
static int
s_child_main (void)
{
    char line [512];
    pyi_region_t *region = NULL;
    setvbuf (stdout, NULL, _IOLBF, 0);
    while (fgets (line, sizeof line, stdin)) {
        char name [256];
        unsigned long a, b;
        if (sscanf (line, "open %255s", name) == 1) {
            region = pyi_region_open (name);
            printf (region ? "ok\n" : "err %s\n", pyi_last_error ());
        }
        else
        if (sscanf (line, "new %lu", &a) == 1) {
            region = pyi_region_new (a);
            printf ("%s\n", region ? pyi_region_name (region) : "err");
        }
        else
        if (sscanf (line, "read %lu", &a) == 1)
            printf ("%u\n", ((uint8_t *) pyi_region_data (region)) [a]);
        else
        if (sscanf (line, "write %lu %lu", &a, &b) == 2) {
            ((uint8_t *) pyi_region_data (region)) [a] = (uint8_t) b;
            printf ("ok\n");
        }
        else
        if (strncmp (line, "received", 8) == 0) {
            pyi_region_received (region);
            printf ("ok\n");
        }
        else
        if (strncmp (line, "release", 7) == 0) {
            pyi_region_release (&region);
            printf ("ok\n");
        }
        else
        if (strncmp (line, "exit", 4) == 0)
            exit (0);       /* without releasing: the exit pass must cope */
        else
            printf ("err unknown command\n");
    }
    return 0;
}

/*  The host: a broker (so its session is the runtime directory's), one
    region, then wait to be killed. */
static int
s_host_main (void)
{
    pyi_broker_t *broker = pyi_broker_new ();
    if (!broker || pyi_region_set_session (pyi_broker_session (broker)))
        return 1;
    pyi_region_t *region = pyi_region_new (8192);
    if (!region)
        return 1;
    printf ("%s %s\n", pyi_region_name (region), pyi_region_session ());
    fflush (stdout);
    while (true)
        pause ();
}

/*  Checks -------------------------------------------------------------- */

static bool
s_exists (const char *name)
{
    char path [300];
    snprintf (path, sizeof path, "/dev/shm%s", name);
    return access (path, F_OK) == 0;
}

static void
s_check_clean (void)
{
    CHECK_INT (pyi_region_mapped (), 0);
    CHECK_INT (t_shm_mapped (), 0);
    CHECK_INT (t_shm_leftovers (NULL), 0);
}

static void
test_basics (void)
{
    TEST_BEGIN ("create, open (cached), find, release");
    int fds = t_count_fds ();
    pyi_region_t *region = pyi_region_new (10000);
    CHECK_MSG (region, "%s", pyi_last_error ());
    const char *name = pyi_region_name (region);
    char prefix [128];
    snprintf (prefix, sizeof prefix, "/pyi-%s-%d-", pyi_region_session (), (int) getpid ());
    CHECK_MSG (strncmp (name, prefix, strlen (prefix)) == 0, "name %s", name);
    CHECK (s_exists (name));
    pyi_region_t *next = pyi_region_new (1);
    CHECK_MSG (next, "%s", pyi_last_error ());
    unsigned long long first = strtoull (name + strlen (prefix), NULL, 10);
    unsigned long long second = strtoull (pyi_region_name (next) + strlen (prefix), NULL, 10);
    CHECK_MSG (second != first + 1 && second != first, "%s after %s", pyi_region_name (next),
               name);
    pyi_region_release (&next);
    uint8_t *data = (uint8_t *) pyi_region_data (region);
    CHECK_INT ((uintptr_t) data % 4096, 0);
    CHECK_INT (pyi_region_size (region), 10000);
    for (int i = 0; i < 10000; i++)
        CHECK (data [i] == 0);
    data [9999] = 42;
    CHECK_INT (pyi_region_inflight (region), 0);
    CHECK_INT (pyi_region_mapped (), 1);
    /*  A sweep leaves alone what this process maps. */
    CHECK_INT (pyi_region_sweep (NULL, 0), 0);
    CHECK_INT (pyi_region_sweep (NULL, getpid ()), 0);
    CHECK (s_exists (name));

    pyi_region_t *again = pyi_region_open (name);
    CHECK (again == region);
    CHECK (pyi_region_data (again) == data);
    CHECK_INT (pyi_region_mapped (), 1);
    CHECK_INT (t_count_fds (), fds + 1);         /* one fd per region, not per open */

    size_t offset = 0;
    pyi_region_t *found = pyi_region_find (data + 1234, &offset);
    CHECK (found == region);
    CHECK_INT (offset, 1234);
    pyi_region_release (&found);
    found = pyi_region_find (data + 10000, &offset);   /* the end, for empty tensors */
    CHECK (found == region);
    CHECK_INT (offset, 10000);
    CHECK (pyi_region_find (data - 1, &offset) == NULL);
    CHECK (pyi_region_find (data + 10001, &offset) == NULL);
    CHECK (pyi_region_find (&offset, NULL) == NULL);
    pyi_region_t *ref = pyi_region_ref (region);
    CHECK (ref == region);

    /*  Four references: the name stays until the last goes. */
    pyi_region_release (&again);
    CHECK (again == NULL);
    pyi_region_release (&found);
    pyi_region_release (&ref);
    CHECK (s_exists (name));
    CHECK_INT (pyi_region_mapped (), 1);
    char saved [PYI_REGION_MAX_NAME + 1];
    snprintf (saved, sizeof saved, "%s", name);
    pyi_region_release (&region);
    CHECK (region == NULL);
    pyi_region_release (&region);     /* safe on NULL */
    pyi_region_release (NULL);
    CHECK (!s_exists (saved));
    CHECK_INT (t_count_fds (), fds);
    CHECK (pyi_region_open (saved) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "unknown region"), "%s", pyi_last_error ());

    /*  Size 0 is a region too (empty tensors). */
    region = pyi_region_new (0);
    CHECK (region);
    CHECK_INT (pyi_region_size (region), 0);
    found = pyi_region_find (pyi_region_data (region), &offset);
    CHECK (found == region);
    pyi_region_release (&found);
    pyi_region_release (&region);
    CHECK (pyi_region_new (PYI_REGION_MAX_SIZE + 1) == NULL);
    s_check_clean ();
}

/*  Many regions at once, some empty, released in a shuffled order: find
    and open give each one (inside, at its end, by name) and nothing for
    what is outside all of them, at every step (the indexes by address and
    by name agree with the regions mapped). */
static void
test_many (void)
{
    TEST_BEGIN ("many regions: find and open by index, released in any order");
    enum { N = 300 };
    pyi_region_t *regions [N];
    char names [N][PYI_REGION_MAX_NAME + 1];
    for (int i = 0; i < N; i++) {
        regions [i] = pyi_region_new (i % 7 == 0 ? 0 : (size_t) (i % 5 + 1) * 4096);
        CHECK_MSG (regions [i], "%s", pyi_last_error ());
        snprintf (names [i], sizeof names [i], "%s", pyi_region_name (regions [i]));
    }
    CHECK_INT (pyi_region_mapped (), N);
    unsigned seed = 7;
    int order [N];
    for (int i = 0; i < N; i++)
        order [i] = i;
    for (int i = N - 1; i > 0; i--) {
        int j = (int) (rand_r (&seed) % (unsigned) (i + 1));
        int t = order [i];
        order [i] = order [j];
        order [j] = t;
    }
    for (int step = 0; step <= N; step++) {
        for (int i = 0; i < N; i++) {
            if (!regions [i] || (step % 50 != 0 && i % 17 != step % 17))
                continue;           /* every region at some steps, a few at the others */
            uint8_t *data = (uint8_t *) pyi_region_data (regions [i]);
            size_t size = pyi_region_size (regions [i]), offset = 1;
            pyi_region_t *found = pyi_region_find (data + size / 2, &offset);
            CHECK_MSG (found == regions [i], "region %d not found inside", i);
            CHECK_INT (offset, size / 2);
            pyi_region_release (&found);
            found = pyi_region_find (data + size, &offset);
            CHECK_MSG (found == regions [i] || (found && offset == 0),
                       "region %d: its end is in none", i);
            pyi_region_release (&found);
            found = pyi_region_open (names [i]);
            CHECK_MSG (found == regions [i], "region %d not found by name", i);
            pyi_region_release (&found);
        }
        if (step < N) {
            int gone = order [step];
            uint8_t *data = (uint8_t *) pyi_region_data (regions [gone]);
            size_t size = pyi_region_size (regions [gone]), offset;
            pyi_region_release (&regions [gone]);
            if (size > 0)
                CHECK (pyi_region_find (data + size / 2, &offset) == NULL);
            CHECK (pyi_region_open (names [gone]) == NULL);
            CHECK_INT (pyi_region_mapped (), (size_t) (N - step - 1));
        }
    }
    s_check_clean ();
}

static void
test_bad_names (void)
{
    TEST_BEGIN ("bad names and objects that are not regions");
    const char *bad [] = {
        NULL, "", "/", "pyi-1-ab-1-1", "/pyi-", "/pyi-1-ab-1", "/pyi-1-xyz-1-1",
        "/pyi-1-ab-1-1/../../etc/passwd", "/etc/passwd", "/pyi-1-ab-1-1-", "/pyi--ab-1-1",
        "/pyi-1-ab-1-1 ", "/pyi-12345678901-ab-1-1",
        "/pyi-1-0123456789abcdef0-1-1", "/sem.mp-79usw592"
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        CHECK_MSG (pyi_region_open (bad [i]) == NULL, "accepted %s", bad [i]);
        CHECK_MSG (strstr (pyi_last_error (), "not of the form"), "%s", pyi_last_error ());
    }
    /*  Of our form but absent. */
    char name [128];
    snprintf (name, sizeof name, "/pyi-%s-1-999999", pyi_region_session ());
    CHECK (pyi_region_open (name) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "unknown region"), "%s", pyi_last_error ());

    /*  Of our form, but not a region: too small, then no valid header. */
    int fd = shm_open (name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK (fd != -1);
    CHECK (ftruncate (fd, 100) == 0);
    CHECK (pyi_region_open (name) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "bad size"), "%s", pyi_last_error ());
    CHECK (ftruncate (fd, 8192) == 0);
    CHECK (pyi_region_open (name) == NULL);
    CHECK_MSG (strstr (pyi_last_error (), "no valid header"), "%s", pyi_last_error ());
    close (fd);
    CHECK_INT (pyi_region_mapped (), 0);
    /*  The junk object is nobody's: a sweep takes it. */
    CHECK_INT (pyi_region_sweep (NULL, 1), 1);
    CHECK (!s_exists (name));
    CHECK (pyi_region_set_session ("nope") == -1);
    CHECK (pyi_region_set_session (NULL) == -1);
    CHECK (pyi_region_sweep ("../x", 0) == -1);
    s_check_clean ();
}

static void
test_cross_process (void)
{
    TEST_BEGIN ("another process maps the same memory; writes seen both ways");
    pyi_region_t *region = pyi_region_new (4096 * 3);
    CHECK (region);
    uint8_t *data = (uint8_t *) pyi_region_data (region);
    for (int i = 0; i < 4096 * 3; i++)
        data [i] = (uint8_t) (i * 7);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (region));

    t_child_t *child = t_spawn_self ("child", NULL);
    CHECK_STR (t_ask (child, "open %s", name), "ok");
    CHECK_STR (t_ask (child, "read 100"), "188");          /* 700 % 256 */
    CHECK_STR (t_ask (child, "read 12287"), "249");        /* 86009 % 256 */
    CHECK_STR (t_ask (child, "write 200 7"), "ok");
    CHECK_INT (data [200], 7);
    data [300] = 9;
    CHECK_STR (t_ask (child, "read 300"), "9");

    /*  Host lets go first: the child still maps it, the name stays. */
    pyi_region_release (&region);
    CHECK (s_exists (name));
    CHECK_STR (t_ask (child, "read 300"), "9");
    /*  The child is the last: it removes the name. */
    CHECK_STR (t_ask (child, "release"), "ok");
    CHECK (!s_exists (name));
    s_exit (child);
    s_check_clean ();
}

static void
test_inflight (void)
{
    TEST_BEGIN ("a region in flight outlives its sender's release");
    pyi_region_t *region = pyi_region_new (4096);
    CHECK (region);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    ((uint8_t *) pyi_region_data (region)) [5] = 55;
    pyi_region_sent (region);                       /* a message names it */
    CHECK_INT (pyi_region_inflight (region), 1);
    pyi_region_release (&region);                  /* the sender drops it at once */
    CHECK_MSG (s_exists (name), "a region in flight was removed");
    CHECK_INT (pyi_region_mapped (), 0);
    /*  Nobody maps it, but a message names it: sweep leaves it alone. */
    CHECK_INT (pyi_region_sweep (NULL, 0), 0);
    CHECK (s_exists (name));

    t_child_t *child = t_spawn_self ("child", NULL);
    CHECK_STR (t_ask (child, "open %s", name), "ok");
    CHECK_STR (t_ask (child, "read 5"), "55");
    CHECK_STR (t_ask (child, "received"), "ok");
    CHECK_STR (t_ask (child, "received"), "ok");   /* never below 0 */
    CHECK_STR (t_ask (child, "release"), "ok");
    CHECK_MSG (!s_exists (name), "the receiver's release did not remove it");
    s_exit (child);

    /*  A region whose message was never delivered: only the end of the
        session removes it. */
    region = pyi_region_new (100);
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    pyi_region_sent (region);
    pyi_region_release (&region);
    CHECK (s_exists (name));
    CHECK_INT (pyi_region_sweep (NULL, 0), 0);
    CHECK_INT (pyi_region_remove_session (NULL), 1);
    CHECK (!s_exists (name));
    s_check_clean ();
}

static void
test_normal_exit (void)
{
    TEST_BEGIN ("a child that exits without releasing leaves nothing");
    pyi_region_t *region = pyi_region_new (4096);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    t_child_t *child = t_spawn_self ("child", NULL);
    char own [PYI_REGION_MAX_NAME + 1];
    snprintf (own, sizeof own, "%s", t_ask (child, "new 5000"));
    CHECK_MSG (strncmp (own, "/pyi-", 5) == 0, "%s", own);
    CHECK (s_exists (own));
    CHECK_STR (t_ask (child, "open %s", name), "ok");
    pyi_region_release (&region);
    CHECK (s_exists (name));                        /* the child maps it */
    s_exit (child);
    CHECK_MSG (!s_exists (own), "the child's own region outlived its normal exit");
    CHECK_MSG (!s_exists (name), "the last process to exit did not remove the name");
    s_check_clean ();
}

static void
test_child_killed (void)
{
    TEST_BEGIN ("a child killed with SIGKILL while it maps regions");
    /*  Killed first, host releases after: the host's release removes it. */
    pyi_region_t *region = pyi_region_new (1 << 20);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    t_child_t *child = t_spawn_self ("child", NULL);
    CHECK_STR (t_ask (child, "open %s", name), "ok");
    CHECK_STR (t_ask (child, "write 1 1"), "ok");
    s_kill (child);
    CHECK (s_exists (name));
    pyi_region_release (&region);
    CHECK_MSG (!s_exists (name), "left in /dev/shm after SIGKILL and release");
    CHECK_INT (t_shm_mapped (), 0);

    /*  Host released first, then the child is killed: nobody is left to
        release, a sweep (what the host does when a process exits) reclaims
        it. The child's own regions go with a sweep by its pid. */
    region = pyi_region_new (4096);
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    child = t_spawn_self ("child", NULL);
    pid_t pid = child->pid;
    char own [PYI_REGION_MAX_NAME + 1];
    snprintf (own, sizeof own, "%s", t_ask (child, "new 4096"));
    CHECK_STR (t_ask (child, "open %s", name), "ok");
    pyi_region_release (&region);
    CHECK (s_exists (name));
    /*  While it lives, a sweep removes nothing it maps. */
    CHECK_INT (pyi_region_sweep (NULL, 0), 0);
    CHECK_INT (pyi_region_sweep (NULL, pid), 0);
    s_kill (child);
    CHECK (s_exists (name) && s_exists (own));
    CHECK_INT (pyi_region_sweep (NULL, pid), 1);         /* its own only */
    CHECK (!s_exists (own) && s_exists (name));
    CHECK_INT (pyi_region_sweep (NULL, 0), 1);
    CHECK (!s_exists (name));
    s_check_clean ();
}

/*  Threads hammering one region's reference count. */
static char s_shared_name [PYI_REGION_MAX_NAME + 1];

static void *
s_hammer (void *arg)
{
    for (int i = 0; i < 2000; i++) {
        pyi_region_t *a = pyi_region_open (s_shared_name);
        size_t offset;
        pyi_region_t *b = pyi_region_find (pyi_region_data (a), &offset);
        if (!a || a != b)
            return (void *) 1;
        pyi_region_release (&b);
        pyi_region_release (&a);
    }
    return NULL;
}

static void
test_threads (void)
{
    TEST_BEGIN ("threads open, find and release one region at once");
    pyi_region_t *region = pyi_region_new (4096);
    snprintf (s_shared_name, sizeof s_shared_name, "%s", pyi_region_name (region));
    pthread_t threads [4];
    for (int i = 0; i < 4; i++)
        CHECK (pthread_create (&threads [i], NULL, s_hammer, NULL) == 0);
    for (int i = 0; i < 4; i++) {
        void *result;
        pthread_join (threads [i], &result);
        CHECK (result == NULL);
    }
    CHECK_INT (pyi_region_mapped (), 1);
    CHECK (s_exists (s_shared_name));
    pyi_region_release (&region);
    CHECK (!s_exists (s_shared_name));
    s_check_clean ();
}

static void
test_host_killed (void)
{
    TEST_BEGIN ("a host killed with SIGKILL: the next broker removes its regions");
    t_child_t *host = t_spawn_self ("host", NULL);
    char line [512], name [256], session [128];
    CHECK_MSG (fgets (line, sizeof line, host->out), "the host helper did not start");
    CHECK (sscanf (line, "%255s %127s", name, session) == 2);
    CHECK_MSG (strstr (name, session), "%s not in session %s", name, session);
    CHECK (s_exists (name));
    s_kill (host);
    CHECK (s_exists (name));           /* nobody maps it, nobody removed it */
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK_MSG (broker, "%s", pyi_last_error ());
    CHECK_MSG (!s_exists (name), "the dead host's region survived the next start");
    CHECK_INT (t_shm_leftovers (session), 0);
    pyi_broker_destroy (&broker);
}

/*  Make the region "/pyi-<pid>-abc123-<pid>-1" of host pid's session (no
    runtime directory) into name. */
static void
s_session_region (char *name, size_t size, pid_t pid)
{
    snprintf (name, size, "/pyi-%ld-abc123-%ld-1", (long) pid, (long) pid);
    int fd = shm_open (name, O_RDWR | O_CREAT | O_EXCL, 0600);
    CHECK_MSG (fd != -1, "shm_open: %s", strerror (errno));
    close (fd);
}

/*  Regions of a session whose host pid is gone, made with no runtime
    directory at all, are removed by the next broker; a live pid's stay. */
static void
test_orphans (void)
{
    TEST_BEGIN ("orphan regions of a dead session pid are removed, live ones kept");
    pid_t dead = fork ();
    if (dead == 0)
        _exit (0);
    CHECK (dead > 0 && waitpid (dead, NULL, 0) == dead);
    char orphan [128], alive [128];
    s_session_region (orphan, sizeof orphan, dead);
    s_session_region (alive, sizeof alive, getpid ());
    CHECK (s_exists (orphan) && s_exists (alive));
    pyi_broker_t *broker = pyi_broker_new ();
    CHECK_MSG (broker, "%s", pyi_last_error ());
    CHECK_MSG (!s_exists (orphan), "a dead session's region survived the next start");
    CHECK_MSG (s_exists (alive), "a live session's region was removed");
    pyi_broker_destroy (&broker);
    shm_unlink (alive);
}

/*  A session's process that ended but was not reaped yet (a zombie: a
    runner killed with its Ray node, before its new parent waits for it)
    is gone: its regions are orphans. */
static void
test_zombie_orphans (void)
{
    TEST_BEGIN ("a zombie session pid's regions are orphans");
    pid_t zombie = fork ();
    if (zombie == 0)
        _exit (0);
    siginfo_t info;
    /*  Ended, not reaped (WNOWAIT): a zombie. */
    CHECK (zombie > 0 && waitid (P_PID, (id_t) zombie, &info, WEXITED | WNOWAIT) == 0);
    char orphan [128];
    s_session_region (orphan, sizeof orphan, zombie);
    CHECK (pyi_region_remove_orphans () >= 1);
    CHECK_MSG (!s_exists (orphan), "a zombie's region survived");
    CHECK (waitpid (zombie, NULL, 0) == zombie);
}

/*  With two brokers in one host, the host's regions keep one session; one
    broker stopping leaves them alone, the last one removes them. */
static void
test_two_brokers (void)
{
    TEST_BEGIN ("two brokers: the host's regions outlive the first to stop");
    pyi_broker_t *first = pyi_broker_new ();
    pyi_broker_t *second = pyi_broker_new ();
    CHECK (first && second);
    CHECK_STR (pyi_region_session (), pyi_broker_session (first));
    pyi_region_t *region = pyi_region_new (4096);
    CHECK (region);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    pyi_region_sent (region);           /* a message in flight names it */
    pyi_region_release (&region);
    CHECK (s_exists (name));
    pyi_broker_destroy (&second);
    CHECK_MSG (s_exists (name), "stopping one broker removed a region in flight");
    pyi_broker_destroy (&first);
    CHECK_MSG (!s_exists (name), "the last broker left the host's region behind");
}

/*  Poll until nothing lingers (the reaper looks every 50 ms); bounded. */
static void
s_wait_reaped (void)
{
    for (int i = 0; i < 1000 && pyi_region_lingering () > 0; i++)
        usleep (10000);
    CHECK_INT (pyi_region_lingering (), 0);
}

static void
test_linger (void)
{
    TEST_BEGIN ("lingering mappings: kept without a lock, reused, let go");
    pyi_region_linger (600000);     /* long: here only a removed name ends one */
    t_child_t *child = t_spawn_self ("child", NULL);
    char name [PYI_REGION_MAX_NAME + 1];
    snprintf (name, sizeof name, "%s", t_ask (child, "new 8192"));
    pyi_region_t *region = pyi_region_open (name);
    CHECK_MSG (region, "%s", pyi_last_error ());
    uint8_t *data = (uint8_t *) pyi_region_data (region);
    data [1] = 42;
    pyi_region_release (&region);
    CHECK_INT (pyi_region_mapped (), 0);
    CHECK_INT (pyi_region_lingering (), 1);
    CHECK_INT (t_shm_mapped (), 1);
    CHECK (pyi_region_find (data, NULL) == NULL);      /* nothing here uses it */

    /*  Opened again: the same mapping, in use, holding its lock: the
        child's release cannot remove the name. */
    region = pyi_region_open (name);
    CHECK (region && pyi_region_data (region) == data && data [1] == 42);
    CHECK_INT (pyi_region_lingering (), 0);
    CHECK_INT (pyi_region_mapped (), 1);
    CHECK_STR (t_ask (child, "release"), "ok");
    CHECK_MSG (s_exists (name), "a region in use here lost its name");
    /*  Our release is the last: removed, nothing lingers. */
    pyi_region_release (&region);
    CHECK (!s_exists (name));
    CHECK_INT (pyi_region_lingering (), 0);
    CHECK_INT (t_shm_mapped (), 0);

    /*  Lingering holds no lock: the child's last release removes the
        name, and the reaper then lets go of the mapping. */
    snprintf (name, sizeof name, "%s", t_ask (child, "new 4096"));
    region = pyi_region_open (name);
    CHECK (region);
    pyi_region_release (&region);
    CHECK_INT (pyi_region_lingering (), 1);
    CHECK_STR (t_ask (child, "release"), "ok");
    CHECK_MSG (!s_exists (name), "a lingering mapping kept the name");
    s_wait_reaped ();
    CHECK_INT (t_shm_mapped (), 0);

    /*  Released while a message names it (a tensor just sent back): held,
        LOCK_SH kept until the reaper's next look. Opened again before
        then: the same mapping. */
    snprintf (name, sizeof name, "%s", t_ask (child, "new 4096"));
    region = pyi_region_open (name);
    CHECK (region);
    data = (uint8_t *) pyi_region_data (region);
    pyi_region_sent (region);
    pyi_region_release (&region);
    CHECK_INT (pyi_region_lingering (), 1);
    region = pyi_region_open (name);
    CHECK (region && pyi_region_data (region) == data);
    pyi_region_release (&region);
    CHECK_INT (pyi_region_lingering (), 1);
    /*  The message is dropped and the child lets go: the held lock keeps
        the name from the child's release, and the reaper's look, finding
        this process the last, removes it. */
    CHECK_INT (pyi_region_discard (name), 0);
    CHECK_STR (t_ask (child, "release"), "ok");
    CHECK_MSG (s_exists (name), "a held lingering region lost its name to another release");
    s_wait_reaped ();
    CHECK_MSG (!s_exists (name), "the reaper left a held region's name behind");
    CHECK_INT (t_shm_mapped (), 0);

    /*  A region made here never lingers, even while the child maps it. */
    region = pyi_region_new (4096);
    snprintf (name, sizeof name, "%s", pyi_region_name (region));
    CHECK_STR (t_ask (child, "open %s", name), "ok");
    pyi_region_release (&region);
    CHECK_INT (pyi_region_lingering (), 0);
    CHECK_INT (t_shm_mapped (), 0);
    CHECK_STR (t_ask (child, "release"), "ok");
    CHECK (!s_exists (name));

    /*  At most 32 linger (the child keeps the 33 it makes mapped); trim
        unmaps them all. */
    for (int i = 0; i < 33; i++) {
        snprintf (name, sizeof name, "%s", t_ask (child, "new 4096"));
        region = pyi_region_open (name);
        CHECK (region);
        pyi_region_release (&region);
    }
    CHECK_INT (pyi_region_lingering (), 32);
    CHECK_INT (t_shm_mapped (), 32);
    CHECK_INT (pyi_region_trim (), 32);
    CHECK_INT (t_shm_mapped (), 0);

    /*  Off: the last release unmaps at once, and what lingered goes. */
    snprintf (name, sizeof name, "%s", t_ask (child, "new 4096"));
    region = pyi_region_open (name);
    pyi_region_release (&region);
    CHECK_INT (pyi_region_lingering (), 1);
    pyi_region_linger (0);
    CHECK_INT (pyi_region_lingering (), 0);
    region = pyi_region_open (name);
    pyi_region_release (&region);
    CHECK_INT (pyi_region_lingering (), 0);
    CHECK_INT (t_shm_mapped (), 0);
    s_exit (child);     /* its exit pass removes the names it still maps */
    s_check_clean ();
}

int
main (int argc, char *argv [])
{
    if (argc > 1 && strcmp (argv [1], "child") == 0)
        return s_child_main ();
    if (argc > 1 && strcmp (argv [1], "host") == 0)
        return s_host_main ();
    t_setup_rundir ();
    t_on_failure = s_on_failure;
    /*  Our helpers share this test's session. */
    setenv ("PYI_SESSION", pyi_region_session (), 1);
    test_basics ();
    test_many ();
    test_bad_names ();
    test_cross_process ();
    test_inflight ();
    test_normal_exit ();
    test_child_killed ();
    test_threads ();
    test_host_killed ();
    test_orphans ();
    test_zombie_orphans ();
    test_two_brokers ();
    test_linger ();
    s_check_clean ();
    fprintf (stderr, "test_region: OK\n");
    return 0;
}
