#!/bin/bash
# Every error code of lib/err.h is documented in docs/errors.md with its
# number and message, and nothing documented is missing from the code.
cd "$(dirname "$0")/../.."
fail=0
while IFS='|' read -r name off msg; do
    code=$((-9000 - off))
    line=$(grep -E "^\| CD_E$name \| $code \| " docs/errors.md)
    if [ -z "$line" ]; then
        echo "docs/errors.md: CD_E$name ($code) missing"; fail=1
    elif ! grep -qF "| $msg |" <<<"$line"; then
        echo "docs/errors.md: CD_E$name message differs from lib/err.h ($msg)"; fail=1
    fi
done < <(sed -n 's/^ *X(\([A-Z]*\), \([0-9]*\), "\(.*\)").*/\1|\2|\3/p' lib/err.h)
n_code=$(grep -cE '^ *X\([A-Z]+, [0-9]+, "' lib/err.h)
n_doc=$(grep -cE '^\| CD_E[A-Z]+ \| -9' docs/errors.md)
if [ "$n_code" != "$n_doc" ]; then
    echo "lib/err.h has $n_code codes, docs/errors.md lists $n_doc"; fail=1
fi
[ "$n_code" -gt 20 ] || { echo "parsed only $n_code codes from lib/err.h"; fail=1; }
[ $fail = 0 ] && echo "docs: $n_code error codes documented"
exit $fail
