#!/bin/bash
# The fault lab checker's unit tests (tests/lab/checker, go test): small
# hand-made histories that must pass (linearizable, with unknown writes and
# cas) or fail (a stale read, a read of a failed write, a wrong cas result,
# a lost acknowledged add, a failed add visible, a child's revision going
# back, child reads stopping, a slow recovery), and bad input (exit 2).
# Skipped without a Go toolchain; Porcupine comes from the module proxy at
# the version pinned in go.mod/go.sum.
cd "$(dirname "$0")/../lab/checker" || exit 1
GO=$(command -v go || echo /usr/local/go/bin/go)
if [ ! -x "$GO" ]; then
    echo "test_checker: skipped (no Go toolchain)"
    exit 0
fi
exec env GOFLAGS='-mod=readonly -buildvcs=false' "$GO" test -count=1 ./...
