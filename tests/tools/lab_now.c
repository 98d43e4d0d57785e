/*
 * lab_now - print CLOCK_MONOTONIC in nanoseconds.
 *
 * The fault lab stamps its nemesis events with the clock the clients stamp
 * their operations with.  CLOCK_MONOTONIC is one clock for every network
 * namespace on the machine, so events and operations from different
 * namespaces compare directly.  A shell has no monotonic clock of its own.
 */
#include <inttypes.h>
#include <stdio.h>
#include <time.h>

int main(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("lab_now: clock_gettime");
        return 1;
    }
    printf("%" PRIu64 "\n",
           (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec);
    return 0;
}
