#!/bin/sh
# Security gate: run several recipes in one `test` step and merge their reports into one JUnit file
# (one <testsuite> per recipe), so a failing scan does not keep the others from running:
#
#   test = { source = "provisioners/linux/security", command = "sh ./all.sh", report = "security.xml",
#            env = { LYNIS_MIN_INDEX = "60", OSCAP_FAIL_SEVERITIES = "high", DEBSECAN_FAIL = "high" } }
#
# SECURITY_GATE     the recipes to run, in order (default "lynis openscap debsecan")
# SECURITY_REPORT   the merged JUnit file (default security.xml)
# Every recipe's own keys apply (docs/security-gate.md). Exits 1 when any recipe failed.
cd "$(dirname "$0")" || exit 2
. ./gate.sh

report=${SECURITY_REPORT:-security.xml}
status=0
parts=
for recipe in $(gate_words "${SECURITY_GATE:-lynis openscap debsecan}"); do
    case $recipe in
    lynis | openscap | debsecan) ;;
    *)
        echo "all.sh: unknown recipe '$recipe' in SECURITY_GATE (lynis, openscap, debsecan)" >&2
        status=1
        continue
        ;;
    esac
    echo "== $recipe"
    part=$recipe.xml
    rm -f "$part"
    upper=$(printf '%s' "$recipe" | tr a-z A-Z)
    [ "$upper" = OPENSCAP ] && upper=OSCAP
    env "${upper}_REPORT=$part" sh "./$recipe.sh" || status=1
    if [ -s "$part" ]; then
        parts="$parts $part"
    else
        gate_begin "$recipe" "$part"
        gate_error "$recipe ran" "the recipe wrote no report"
        gate_end
        parts="$parts $part"
    fi
done
{
    printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n'
    for part in $parts; do
        sed -e '/^<?xml /d' -e '/^<testsuites>$/d' -e '/^<\/testsuites>$/d' "$part"
    done
    printf '</testsuites>\n'
} >"$report"
exit "$status"
