#!/bin/sh
# Security gate: package vulnerabilities with debsecan (Debian). Compares the installed packages with
# the Debian security tracker's data and turns every finding into a JUnit case with a policy (see
# docs/security-gate.md). Run as root, from this directory:
#
#   test = { source = "provisioners/linux/security", command = "sh ./debsecan.sh", report = "debsecan.xml",
#            env = { DEBSECAN_FEED = "/tmp/bookworm", DEBSECAN_FAIL = "high medium" } }
#
# DEBSECAN_FEED          the tracker's data as a file on the machine (the file the tracker serves at
#                        https://security-tracker.debian.org/tracker/debsecan/release/1/SUITE, zlib-
#                        compressed, or the same text uncompressed: it starts with "VERSION 1")
# DEBSECAN_SOURCE        else a URL base debsecan fetches SOURCE/SUITE from (debsecan --source; default
#                        the tracker, https://security-tracker.debian.org/tracker/debsecan/release/1/)
# DEBSECAN_SUITE         the suite (default this machine's VERSION_CODENAME; GENERIC: no suite)
# DEBSECAN_FAIL          urgencies whose findings fail the gate (default "high"; any of high medium low
#                        unassigned, or "all")
# DEBSECAN_ONLY_FIXED    1: only findings with a fix in the suite count (debsecan --only-fixed)
# DEBSECAN_ACCEPT        vulnerability ids accepted whatever their urgency (recorded, never failing)
# DEBSECAN_REPORT        the JUnit file (default debsecan.xml)
# GATE_NO_INSTALL        1: never install debsecan (fail when it is missing)
cd "$(dirname "$0")" || exit 2
. ./gate.sh

report=${DEBSECAN_REPORT:-debsecan.xml}
fail=${DEBSECAN_FAIL:-high}
gate_begin debsecan "$report"
finish() {
    [ -n "${feed_dir:-}" ] && rm -rf "$feed_dir"
    gate_end
    exit $?
}

if ! out=$(gate_install debsecan 2>&1); then
    gate_error "debsecan installed" "could not install debsecan" "$out"
    finish
fi

suite=${DEBSECAN_SUITE:-$(gate_os_release VERSION_CODENAME)}
[ -n "$suite" ] || suite=GENERIC
source_url=${DEBSECAN_SOURCE:-}
if [ -n "${DEBSECAN_FEED:-}" ]; then
    if [ ! -r "$DEBSECAN_FEED" ]; then
        gate_error "vulnerability data" "DEBSECAN_FEED: no readable file $DEBSECAN_FEED"
        finish
    fi
    # debsecan fetches SOURCE/SUITE (SOURCE/GENERIC without a suite) and zlib-decompresses it.
    feed_dir=$(mktemp -d "${TMPDIR:-/tmp}/debsecan-feed.XXXXXX") || finish
    if [ "$(head -c 9 "$DEBSECAN_FEED")" = "VERSION 1" ]; then
        python3 -c 'import sys, zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))' \
            <"$DEBSECAN_FEED" >"$feed_dir/$suite"
    else
        cp "$DEBSECAN_FEED" "$feed_dir/$suite"
    fi
    chmod -R a+rX "$feed_dir"
    source_url=file://$feed_dir/
fi

set -- --format summary
[ "$suite" = GENERIC ] || set -- "$@" --suite "$suite"
[ -n "$source_url" ] && set -- "$@" --source "$source_url"
[ "${DEBSECAN_ONLY_FIXED:-0}" = 1 ] && set -- "$@" --only-fixed
echo "debsecan $*"
# No user configuration (/etc/default/debsecan) changes what the gate reads.
debsecan --config /dev/null "$@" >debsecan.out 2>debsecan.err
rc=$?
if [ "$rc" -ne 0 ]; then
    gate_error "vulnerability data" "debsecan exited with status $rc" "$(cat debsecan.err)"
    finish
fi
count=$(grep -c . debsecan.out)
gate_pass "vulnerability data" "read for suite $suite: $count findings"

# A summary line: ID PACKAGE [(fixed, remotely exploitable, high urgency, obsolete)]
while read -r id package notes; do
    [ -n "$id" ] || continue
    urgency=unassigned
    case $notes in
    *"high urgency"*) urgency=high ;;
    *"medium urgency"*) urgency=medium ;;
    *"low urgency"*) urgency=low ;;
    esac
    version=$(dpkg-query -W -f '${Version}' "$package" 2>/dev/null)
    name="$id $package"
    what="$package $version ${notes:-(no urgency assigned)}"
    if gate_in "$id" "${DEBSECAN_ACCEPT:-}"; then
        gate_skip "$name" "accepted (DEBSECAN_ACCEPT): $what"
    elif gate_in all "$fail" || gate_in "$urgency" "$fail"; then
        gate_fail "$name" "$what"
    else
        gate_skip "$name" "not enforced: $what"
    fi
done <debsecan.out
finish
