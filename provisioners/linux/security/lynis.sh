#!/bin/sh
# Security gate: Lynis. Runs `lynis audit system` on the machine and turns its report into JUnit XML
# with a policy (see docs/security-gate.md). Run as root, from this directory:
#
#   test = { source = "provisioners/linux/security", command = "sh ./lynis.sh", report = "lynis.xml",
#            env = { LYNIS_MIN_INDEX = "70", LYNIS_FAIL_TESTS = "SSH-7408 AUTH-9286" } }
#
# LYNIS_MIN_INDEX        the lowest hardening index that passes (0-100; default 0: reported only)
# LYNIS_FAIL_TESTS       test ids that fail the gate when Lynis reports a warning or suggestion for them
# LYNIS_FAIL_WARNINGS    1: every warning fails the gate (default 0)
# LYNIS_TESTS            run only these test ids (lynis --tests)
# LYNIS_GROUPS           run only these test groups (lynis --tests-from-group, e.g. "ssh authentication")
# LYNIS_PROFILE          a Lynis profile file (lynis --profile)
# LYNIS_SKIP             tests or single checks to skip, as a profile's skip-test= values
#                        (e.g. "SSH-7408:port KRNL-5820"; added to LYNIS_PROFILE, else to Lynis' default.prf)
# LYNIS_REPORT           the JUnit file (default lynis.xml); Lynis' own report goes beside it
#                        (lynis-report.dat, lynis.log)
# GATE_NO_INSTALL        1: never install lynis (fail when it is missing)
cd "$(dirname "$0")" || exit 2
. ./gate.sh

report=${LYNIS_REPORT:-lynis.xml}
min=${LYNIS_MIN_INDEX:-0}
dat=$(pwd)/lynis-report.dat
log=$(pwd)/lynis.log
gate_begin lynis "$report"

case $min in
'' | *[!0-9]*)
    gate_error "policy" "LYNIS_MIN_INDEX must be a number from 0 to 100, not '$min'"
    gate_end
    exit 1
    ;;
esac
if [ "$(id -u)" != 0 ]; then
    gate_error "lynis ran" "run the recipe as root (execute_command with sudo)"
    gate_end
    exit 1
fi
if ! out=$(gate_install lynis 2>&1); then
    gate_error "lynis installed" "could not install lynis" "$out"
    gate_end
    exit 1
fi

set -- audit system --quick --no-colors --report-file "$dat" --log-file "$log"
[ -n "${LYNIS_TESTS:-}" ] && set -- "$@" --tests "$LYNIS_TESTS"
[ -n "${LYNIS_GROUPS:-}" ] && set -- "$@" --tests-from-group "$LYNIS_GROUPS"
profile=${LYNIS_PROFILE:-}
if [ -n "${LYNIS_SKIP:-}" ]; then
    # A profile of our own: the chosen (or default) one plus a skip-test line per entry.
    base=${profile:-/etc/lynis/default.prf}
    profile=$(pwd)/lynis-gate.prf
    {
        cat "$base"
        for t in $(gate_words "$LYNIS_SKIP"); do
            echo "skip-test=$t"
        done
    } >"$profile" || {
        gate_error "lynis ran" "could not write a profile from $base"
        gate_end
        exit 1
    }
fi
[ -n "$profile" ] && set -- "$@" --profile "$profile"
rm -f "$dat" "$log"
echo "lynis $*"
lynis "$@" >lynis.out 2>&1
rc=$?
if [ ! -s "$dat" ]; then
    gate_error "lynis ran" "lynis wrote no report (exit status $rc)" "$(tail -n 50 lynis.out)"
    gate_end
    exit 1
fi

# The report: key=value lines; warning[]=ID|text|details|solution| and suggestion[]=... alike.
value() { sed -n "s/^$1=//p" "$dat" | tail -n 1; }
findings() {
    # ID|message|details|solution| (details may hold "|" themselves): "KIND ID message (details)".
    sed -n -e 's/^warning\[\]=/warning|/p' -e 's/^suggestion\[\]=/suggestion|/p' "$dat" | awk -F'|' '{
        details = ""
        for (i = 4; i <= NF - 2; i++) details = details (i > 4 ? "|" : "") $i
        line = $1 " " $2 " " $3
        if (details != "" && details != "-") line = line " (" details ")"
        print line
    }'
}
executed=$(value tests_executed | tr '|' ' ')

index=$(value hardening_index)
case $index in
'' | *[!0-9]*)
    gate_error "hardening index" "the report has no hardening index" ;;
*)
    if [ "$index" -ge "$min" ]; then
        gate_pass "hardening index" "$index (at least $min)"
    else
        gate_fail "hardening index" "hardening index $index is below $min (LYNIS_MIN_INDEX)"
    fi ;;
esac

# The test ids of interest: failed when Lynis found something, passed when it ran clean.
for id in $(gate_words "${LYNIS_FAIL_TESTS:-}"); do
    found=$(findings | awk -v id="$id" 'toupper($2) == toupper(id)')
    if [ -n "$found" ]; then
        gate_fail "$id" "$(printf '%s' "$found" | head -n 1)" "$found"
    elif gate_in "$id" "$executed"; then
        gate_pass "$id" "ran without a warning or suggestion"
    else
        gate_skip "$id" "Lynis did not run this test here (not applicable, or left out by LYNIS_TESTS/LYNIS_GROUPS)"
    fi
done

# Every other warning and suggestion: one case each.
findings >lynis-findings.txt
while read -r kind id text; do
    gate_in "$id" "${LYNIS_FAIL_TESTS:-}" && continue
    if [ "$kind" = warning ] && [ "${LYNIS_FAIL_WARNINGS:-0}" = 1 ]; then
        gate_fail "$id $kind: $text" "$text"
    else
        gate_skip "$id $kind: $text" "not enforced by the policy"
    fi
done <lynis-findings.txt
gate_end
