/*  pyi_test_host: a host process for the process tests.

    pyi_test_host WORKER_PROGRAM

    Creates a broker, spawns WORKER_PROGRAM for service "orphan", waits
    until it is ready, prints "<worker pid> <runtime directory>" on a line
    of stdout and then waits to be killed. The test kills it with SIGKILL
    and checks that the worker dies with it and that the next host removes
    the runtime directory it left behind.
*/
#include <pyisolate/pyisolate.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <unistd.h>

int
main (int argc, char *argv [])
{
    if (argc < 2) {
        fprintf (stderr, "usage: pyi_test_host WORKER_PROGRAM\n");
        return 64;
    }
    /*  Never outlive the test that started us, whatever happens to it. */
    prctl (PR_SET_PDEATHSIG, SIGKILL);
    pyi_broker_t *broker = pyi_broker_new ();
    if (!broker) {
        fprintf (stderr, "pyi_test_host: %s\n", pyi_last_error ());
        return 1;
    }
    const char *worker_argv [] = { argv [1], NULL };
    /*  Our stdout is the test's pipe: keep the worker's lines out of it. */
    int devnull = open ("/dev/null", O_WRONLY | O_CLOEXEC);
    int pid = pyi_broker_spawn (broker, "orphan", worker_argv, NULL, devnull, -1);
    if (pid <= 0) {
        fprintf (stderr, "pyi_test_host: spawn: %s\n", pyi_last_error ());
        return 1;
    }
    pyi_event_t event;
    while (pyi_broker_event (broker, &event, 10000) == 0)
        if (event.type == PYI_EVENT_READY) {
            printf ("%d %s\n", pid, pyi_broker_rundir (broker));
            fflush (stdout);
            while (true)
                pause ();
        }
    fprintf (stderr, "pyi_test_host: the worker did not become ready\n");
    return 1;
}
