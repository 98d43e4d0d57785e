#!/bin/bash
# The docs say what the code does:
#   - every error code of lib/err.h is documented in docs/errors.md with its
#     number and message, and nothing documented is missing from the code;
#   - every clusterctl command (the subcommands[] table) is in clusterctl(1),
#     in its SYNOPSIS and as an item of COMMANDS, and every global option;
#   - every command line flag of clusterd and of clusterd-child is in its
#     man page;
#   - every `clusterctl ...` the docs show (code spans, and lines of code
#     blocks) names a command that exists, and for commands with verbs
#     (`snapshot save`, `backup status`, ...) a verb its --help lists.
cd "$(dirname "$0")/../.." || exit 1
BUILD=$(cd "${BUILD:-build}" 2>/dev/null && pwd)
fail=0
bad() {
    echo "$*"
    fail=1
}

while IFS='|' read -r name off msg; do
    code=$((-9000 - off))
    line=$(grep -E "^\| CD_E$name \| $code \| " docs/errors.md)
    if [ -z "$line" ]; then
        bad "docs/errors.md: CD_E$name ($code) missing"
    elif ! grep -qF "| $msg |" <<<"$line"; then
        bad "docs/errors.md: CD_E$name message differs from lib/err.h ($msg)"
    fi
done < <(sed -n 's/^ *X(\([A-Z]*\), \([0-9]*\), "\(.*\)").*/\1|\2|\3/p' lib/err.h)
n_code=$(grep -cE '^ *X\([A-Z]+, [0-9]+, "' lib/err.h)
n_doc=$(grep -cE '^\| CD_E[A-Z]+ \| -9' docs/errors.md)
if [ "$n_code" != "$n_doc" ]; then
    bad "lib/err.h has $n_code codes, docs/errors.md lists $n_doc"
fi
[ "$n_code" -gt 20 ] || bad "parsed only $n_code codes from lib/err.h"

# clusterctl's commands, from its table.
cmds=$(sed -n 's/^    {"\([a-z]*\)", [a-z_]*_main,.*/\1/p' cluster/clusterctl.c)
[ "$(wc -w <<<"$cmds")" -ge 15 ] || bad "parsed only $(wc -w <<<"$cmds") commands from cluster/clusterctl.c"
man=docs/clusterctl.1.md
synopsis=$(sed -n '/^## SYNOPSIS/,/^## DESCRIPTION/p' $man)
commands=$(sed -n '/^## COMMANDS/,/^## EXIT STATUS/p' $man)
for c in $cmds; do
    grep -qE "^clusterctl $c( |$)" <<<"$synopsis" || bad "$man: SYNOPSIS lacks 'clusterctl $c'"
    grep -qE "^\`$c( |\`)" <<<"$commands" || bad "$man: COMMANDS has no item for '$c'"
done
for o in --endpoints --output --timeout --cluster-id; do
    grep -qF -- "$o" cluster/clusterctl.c || bad "cluster/clusterctl.c: no global option $o (test out of date)"
    grep -qF -- "\`$o" $man || bad "$man: global option $o not described"
done

# Flags of the daemons, from their mains.
flags() { sed -n 's/.*strcmp([a-z]*\(\[i\]\)\{0,1\}, "\(--[a-z-]*\)").*/\2/p' "$1" | sort -u; }
for f in $(flags cluster/main.c); do
    grep -qF -- "$f" docs/clusterd.8.md || bad "docs/clusterd.8.md: flag $f (cluster/main.c) not documented"
done
for f in $(flags agents/child_main.c); do
    grep -qF -- "$f" docs/clusterd-child.8.md || bad "docs/clusterd-child.8.md: flag $f (agents/child_main.c) not documented"
done
[ "$(flags cluster/main.c | wc -l)" -ge 10 ] || bad "parsed only $(flags cluster/main.c | wc -l) flags from cluster/main.c"

# Every clusterctl command line the docs show exists.  The verbs of a
# command come from its own --help ("usage: clusterctl backup status").
declare -A verbs
if [ -x "$BUILD/bin/clusterctl" ]; then
    for c in $cmds; do
        verbs[$c]=$("$BUILD/bin/clusterctl" "$c" --help 2>/dev/null |
            grep -oE "clusterctl $c [a-z][a-z-]*" | awk '{print $3}' | sort -u | tr '\n' ' ')
    done
else
    bad "no $BUILD/bin/clusterctl: build first"
fi
shown=0
while IFS= read -r line; do
    # Drop "clusterctl" and the global options (with their values).
    read -r -a w <<<"$line"
    i=1
    while [ $i -lt ${#w[@]} ]; do
        case "${w[$i]}" in
        --endpoints | -o | --output | --timeout | --cluster-id) i=$((i + 2)) ;;
        -*) i=$((i + 1)) ;;
        *) break ;;
        esac
    done
    cmd=${w[$i]:-}
    verb=${w[$((i + 1))]:-}
    case "$cmd" in
    "" | COMMAND | *[!a-z]*) continue ;;
    esac
    shown=$((shown + 1))
    if ! grep -qxF "$cmd" <<<"$cmds"; then
        bad "docs: 'clusterctl $cmd' is not a command: $line"
        continue
    fi
    if [ -n "${verbs[$cmd]}" ] && [[ "$verb" =~ ^[a-z][a-z-]*$ ]] &&
        ! grep -qw -- "$verb" <<<"${verbs[$cmd]}"; then
        bad "docs: 'clusterctl $cmd $verb': '$cmd' takes ${verbs[$cmd]}: $line"
    fi
done < <(
    {
        grep -ohE '`clusterctl [^`]*`' docs/*.md README.md | tr -d '`'
        awk '/^```/ {inside = !inside; next} inside' docs/*.md README.md |
            sed -nE 's/^(\$ )?(clusterctl( .*)?)$/\2/p'
    } | sed -E 's/[|;&].*//; s/ +#.*//'
)
[ "$shown" -ge 50 ] || bad "found only $shown clusterctl command lines in the docs"

[ $fail = 0 ] && echo "docs: $n_code error codes, $(wc -w <<<"$cmds") clusterctl commands, $shown command lines checked"
exit $fail
