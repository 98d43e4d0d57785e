/*
 * raft_version.h - refuse to build against a libraft older than 0.22.1.
 *
 * Debian 12 ships libraft 0.15.0, which lacks safety fixes clusterd relies
 * on (the Figure-8 commit rule, stepping down when a disk write fails, a
 * double free at close).  'make deps' installs 0.22.1 from
 * bookworm-backports; this header makes a wrong install a build error
 * rather than a silent risk.  raft_version_number() is declared but not
 * exported by 0.22.1, so the check is on the header's macro.
 */
#ifndef CD_RAFT_VERSION_H
#define CD_RAFT_VERSION_H

#include <raft.h>

#if !defined(RAFT_VERSION_NUMBER) || RAFT_VERSION_NUMBER < 2201
#error \
    "libraft >= 0.22.1 is required (Debian 12's 0.15.0 is not safe): run 'make deps'"
#endif

#endif
