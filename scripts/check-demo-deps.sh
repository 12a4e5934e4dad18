#!/usr/bin/env bash
# CI check (.ci/run): the main job (scripts/demo.sh) must not depend on a program that a
# fresh Debian lacks and demo.sh does not install.
#
# How: it lists every external program the demo path runs, taken from the sources each time
# (so a new one is seen without anyone remembering to list it):
#   - the Rust code of the node and CLI: `Command::new("prog")`, and the first word of the
#     argv arrays in files that spawn `Command::new(args[0])`-style (container/network.rs:
#     `run(&["ip", ...])`); test modules (`#[cfg(test)]` to the end of a file) and
#     src/appliance (the worker VM / USB init and `omnicloud install`, not the demo) excluded;
#   - the shell scripts demo.sh runs (demo.sh, build-images.sh and what they source): the
#     first word of every simple command, command substitutions included, from bash's own
#     parse (`bash --pretty-print`), minus keywords, builtins and the scripts' functions;
# then finds the package providing each on this machine (dpkg -S, following alternatives)
# and fails unless that package is one every Debian has (Priority: required) or one that
# scripts/lib/demo-deps.sh lists for that very program (which demo.sh checks and installs).
# A listed program whose package is not the one named fails too. Finally it runs demo.sh's
# own check (`demo.sh --check-deps`), which must pass after the set-up.
#
# Why this and not a debootstrap chroot running demo.sh: a chroot needs a mirror, minutes
# and root, and demo.sh's real run needs a release build and containers; this takes a second,
# needs only dpkg, and fails exactly when a program is added to the demo path without its
# package. Limits: a program named only in a variable (`Command::new(path)`) is not seen;
# `cargo` (Rust, installed with rustup) and `sudo` (used only when run by sudo) are demo.sh's
# own business and checked there.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/demo-deps.sh
export PATH=$PATH:/usr/local/sbin:/usr/sbin:/sbin

bash --pretty-print /dev/null >/dev/null 2>&1 || {
    echo "check-demo-deps: needs bash 5.2 or newer (bash --pretty-print)" >&2
    exit 1
}

# The scripts of the demo path.
SCRIPTS="scripts/demo.sh scripts/build-images.sh scripts/lib/busybox.sh scripts/lib/demo-deps.sh"
# Not external programs though they start commands in the scripts.
NOT_PROGRAMS="cargo sudo"

rust_programs() {
    find src -name '*.rs' -not -path 'src/appliance/*' -print0 | xargs -0 perl -0777 -ne '
        s/#\[cfg\(test\)\].*//s;
        print "$1\n" while /(?<!clap::)Command::new\(\s*"([^"]+)"\s*\)/g;
        if (/Command::new\(\s*&?\w+\[0\]\s*\)/) {
            print "$1\n" while /\[\s*"([A-Za-z][A-Za-z0-9_.+-]*)"\s*,/g;
        }'
}

script_programs() {
    local f defined
    for f in $SCRIPTS; do
        bash --pretty-print "$f"
    done | awk '
        # Heredoc bodies are data.
        doc != "" { if ($0 == doc) doc = ""; next }
        match($0, /<<-?[ ]*[\047"]?[A-Za-z_]+/) {
            d = substr($0, RSTART, RLENGTH); sub(/<<-?[ ]*[\047"]?/, "", d); heredoc = d
        }
        { print; if (heredoc != "") { doc = heredoc; heredoc = "" } }
    ' | awk -f scripts/lib/commands.awk
}

functions_defined() {
    for f in $SCRIPTS; do bash --pretty-print "$f"; done |
        sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\) () *$/\1/p'
}

skip=$( (compgen -k; compgen -b; functions_defined; tr ' ' '\n' <<<"$NOT_PROGRAMS") | sort -u)
# The listed ones too (cc: cargo's linker), so a wrong package name is caught.
programs=$( (rust_programs; script_programs; for p in $DEMO_DEPS; do echo "${p%%:*}"; done) | grep -E '^[A-Za-z][A-Za-z0-9_.+-]*$' | sort -u |
    comm -23 - <(echo "$skip"))

required=$(dpkg-query -W -f '${Package} ${Priority}\n' | awk '$2 == "required" { print $1 }')
fail=0
for prog in $programs; do
    listed=
    for pair in $DEMO_DEPS; do
        [ "${pair%%:*}" = "$prog" ] && listed=${pair#*:}
    done
    pkg=$(package_of "$prog")
    if [ -z "$pkg" ]; then
        echo "check-demo-deps: $prog is run by the demo path but is not installed here (or not from a package)" >&2
        fail=1
    elif [ -n "$listed" ] && [ "$listed" != "$pkg" ]; then
        echo "check-demo-deps: scripts/lib/demo-deps.sh says $prog comes from $listed, but here it is $pkg's" >&2
        fail=1
    elif [ -z "$listed" ] && ! grep -qx "$pkg" <<<"$required"; then
        echo "check-demo-deps: $prog ($pkg) is run by the demo path; a fresh Debian lacks $pkg: add $prog:$pkg to DEMO_DEPS in scripts/lib/demo-deps.sh" >&2
        fail=1
    else
        echo "  $prog: $pkg${listed:+ (demo.sh installs it)}"
    fi
done
for pkg in $DEMO_EXTRA_PACKAGES; do
    apt-cache show "$pkg" >/dev/null 2>&1 || {
        echo "check-demo-deps: DEMO_EXTRA_PACKAGES names $pkg, which apt does not know" >&2
        fail=1
    }
done
[ "$fail" = 0 ] || exit 1
scripts/demo.sh --check-deps
echo "check-demo-deps: every program of the demo path ($(wc -w <<<"$programs")) is installed by demo.sh or in every Debian"
