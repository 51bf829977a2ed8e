/*  pyi_policy: the launcher's command line, read strictly. */
#include "pyi_policy.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_PORT 65535
#define MAX_LIMIT (1LL << 40)       /* past any sensible limit; refused as a typo */

/*  A whole decimal number in [low, high]; 0 or -1. */
static int
s_number (const char *text, long long low, long long high, long long *value)
{
    if (!text || !*text)
        return -1;
    char *end;
    errno = 0;
    long long v = strtoll (text, &end, 10);
    if (errno || *end || v < low || v > high)
        return -1;
    *value = v;
    return 0;
}

static int
s_fail (char *error, size_t size, const char *what, const char *option, const char *value)
{
    snprintf (error, size, "%s %s%s%s", what, option, value ? " " : "", value ? value : "");
    return -1;
}

static int
s_add_path (pyi_policy_t *self, const char *path, pyi_access_t access,
            char *error, size_t size)
{
    if (*path != '/')
        return s_fail (error, size, "not an absolute path:", path, NULL);
    if (self->npaths == PYI_POLICY_MAX_PATHS)
        return s_fail (error, size, "too many paths at", path, NULL);
    self->paths [self->npaths++] = (pyi_grant_path_t) { path, access };
    return 0;
}

int
pyi_policy_parse (pyi_policy_t *self, int argc, char *argv[], char *error, size_t size)
{
    memset (self, 0, sizeof (*self));
    self->mode = PYI_MODE_BEST_EFFORT;
    self->network = PYI_NETWORK_NONE;
    self->memory_mb = self->cpu_seconds = PYI_POLICY_NO_LIMIT;
    self->open_files = self->processes = PYI_POLICY_NO_LIMIT;
    bool network_all = false;
    int i = 1;
    for (; i < argc; i++) {
        const char *option = argv [i];
        if (strcmp (option, "--") == 0) {
            i++;
            break;
        }
        if (strcmp (option, "--check") == 0) {
            self->check = true;
            continue;
        }
        if (i + 1 >= argc)
            return s_fail (error, size, "missing value or unknown option:", option, NULL);
        const char *value = argv [++i];
        long long number = 0;
        if (strcmp (option, "--mode") == 0) {
            if (strcmp (value, "disabled") == 0)
                self->mode = PYI_MODE_DISABLED;
            else
            if (strcmp (value, "best_effort") == 0)
                self->mode = PYI_MODE_BEST_EFFORT;
            else
            if (strcmp (value, "required") == 0)
                self->mode = PYI_MODE_REQUIRED;
            else
                return s_fail (error, size, "bad value of", option, value);
        }
        else
        if (strcmp (option, "--read") == 0 || strcmp (option, "--write") == 0
        ||  strcmp (option, "--shm") == 0 || strcmp (option, "--device") == 0) {
            pyi_access_t access = option [2] == 'r' ? PYI_ACCESS_READ
                                : option [2] == 'w' ? PYI_ACCESS_WRITE
                                : option [2] == 's' ? PYI_ACCESS_SHM : PYI_ACCESS_DEVICE;
            if (s_add_path (self, value, access, error, size))
                return -1;
        }
        else
        if (strcmp (option, "--network") == 0) {
            if (strcmp (value, "none") == 0)
                network_all = false;
            else
            if (strcmp (value, "all") == 0)
                network_all = true;
            else
                return s_fail (error, size, "bad value of", option, value);
        }
        else
        if (strcmp (option, "--port") == 0) {
            if (s_number (value, 1, MAX_PORT, &number))
                return s_fail (error, size, "bad value of", option, value);
            if (self->nports == PYI_POLICY_MAX_PORTS)
                return s_fail (error, size, "too many ports at", option, value);
            self->ports [self->nports++] = (uint16_t) number;
        }
        else {
            long long *limit = strcmp (option, "--memory-mb") == 0 ? &self->memory_mb
                             : strcmp (option, "--cpu-seconds") == 0 ? &self->cpu_seconds
                             : strcmp (option, "--open-files") == 0 ? &self->open_files
                             : strcmp (option, "--processes") == 0 ? &self->processes : NULL;
            if (!limit)
                return s_fail (error, size, "unknown option", option, NULL);
            if (s_number (value, 1, MAX_LIMIT, limit))
                return s_fail (error, size, "bad value of", option, value);
        }
    }
    if (network_all && self->nports)
        return s_fail (error, size, "--network all and --port contradict each other", "", NULL);
    self->network = network_all ? PYI_NETWORK_ALL
                  : self->nports ? PYI_NETWORK_PORTS : PYI_NETWORK_NONE;
    if (self->check) {
        if (i < argc)
            return s_fail (error, size, "--check runs no program, but got", argv [i], NULL);
        return 0;
    }
    if (i >= argc)
        return s_fail (error, size, "no program to run: give it after", "--", NULL);
    self->command = argv + i;
    return 0;
}
