#!/bin/sh
# Security gate: OpenSCAP with the SCAP Security Guide. Evaluates an XCCDF profile of the OS's data
# stream (`oscap xccdf eval --results`) and turns every rule result into a JUnit case with a policy
# (see docs/security-gate.md). Run as root, from this directory:
#
#   test = { source = "provisioners/linux/security", command = "sh ./openscap.sh", report = "openscap.xml",
#            env = { OSCAP_FAIL_SEVERITIES = "high medium" } }
#
# OSCAP_PROFILE          XCCDF profile id, full or short (default "standard" =
#                        xccdf_org.ssgproject.content_profile_standard)
# OSCAP_DATASTREAM       the SCAP source data stream (default: the SSG one for this OS,
#                        /usr/share/xml/scap/ssg/content/ssg-<id><version>-ds.xml, e.g. ssg-debian12-ds.xml)
# OSCAP_RULES            evaluate only these rules (full ids or short ones: sshd_disable_root_login)
# OSCAP_TAILORING        an XCCDF tailoring file (oscap --tailoring-file)
# OSCAP_FAIL_SEVERITIES  severities whose failing rules fail the gate (default "high"; any of
#                        high medium low unknown, or "all")
# OSCAP_VALIDATE         1: let oscap validate the content against its schemas first (default 0:
#                        --skip-validation; slow on big data streams, and the packaged content is valid)
# OSCAP_PACKAGES         packages the recipe installs when missing (default "openscap-scanner ssg-debian",
#                        Ubuntu: "openscap-scanner ssg-debderived")
# OSCAP_REPORT           the JUnit file (default openscap.xml); oscap's results go beside it
#                        (oscap-results.xml)
# GATE_NO_INSTALL        1: never install packages (fail when they are missing)
cd "$(dirname "$0")" || exit 2
. ./gate.sh

report=${OSCAP_REPORT:-openscap.xml}
results=$(pwd)/oscap-results.xml
severities=${OSCAP_FAIL_SEVERITIES:-high}
prefix=xccdf_org.ssgproject.content_
gate_begin openscap "$report"

finish() {
    gate_end
    exit $?
}
if [ "$(id -u)" != 0 ]; then
    gate_error "oscap ran" "run the recipe as root (execute_command with sudo)"
    finish
fi

os_id=$(gate_os_release ID)
os_version=$(gate_os_release VERSION_ID)
case $os_id in
ubuntu) default_packages="openscap-scanner ssg-debderived" ;;
*) default_packages="openscap-scanner ssg-debian" ;;
esac
# shellcheck disable=SC2086
if ! out=$(gate_install ${OSCAP_PACKAGES:-$default_packages} 2>&1); then
    gate_error "oscap installed" "could not install ${OSCAP_PACKAGES:-$default_packages}" "$out"
    finish
fi

ds=${OSCAP_DATASTREAM:-/usr/share/xml/scap/ssg/content/ssg-$os_id$(printf '%s' "$os_version" | tr -d .)-ds.xml}
if [ ! -f "$ds" ]; then
    gate_error "SCAP content" "no data stream $ds: the installed SCAP Security Guide has no content for $os_id $os_version; install one that has (or upload it) and set OSCAP_DATASTREAM" \
        "$(ls /usr/share/xml/scap/ssg/content/ 2>&1)"
    finish
fi

profile=${OSCAP_PROFILE:-standard}
case $profile in
xccdf_*) ;;
*) profile=${prefix}profile_$profile ;;
esac
set -- xccdf eval --profile "$profile" --results "$results"
[ "${OSCAP_VALIDATE:-0}" = 1 ] || set -- "$@" --skip-validation
[ -n "${OSCAP_TAILORING:-}" ] && set -- "$@" --tailoring-file "$OSCAP_TAILORING"
for rule in $(gate_words "${OSCAP_RULES:-}"); do
    case $rule in
    xccdf_*) ;;
    *) rule=${prefix}rule_$rule ;;
    esac
    set -- "$@" --rule "$rule"
done
rm -f "$results"
echo "oscap $* $ds"
oscap "$@" "$ds" >oscap.out 2>&1
rc=$?
# 0: every rule passed, 2: a rule failed, anything else: oscap could not evaluate.
if [ "$rc" -ne 0 ] && [ "$rc" -ne 2 ]; then
    gate_error "oscap ran" "oscap exited with status $rc" "$(tail -n 50 oscap.out)"
fi
if [ ! -s "$results" ]; then
    [ "$rc" -eq 0 ] || [ "$rc" -eq 2 ] && gate_error "oscap ran" "oscap wrote no results file"
    finish
fi

# One line per <rule-result>: RESULT SEVERITY RULE-ID (a not-selected rule is left out).
tr '\n' ' ' <"$results" | sed 's/<\([a-z0-9-]*:\)\{0,1\}rule-result /\n&/g' | sed -n '/^<\([a-z0-9-]*:\)\{0,1\}rule-result /p' |
    sed 's/<\/\([a-z0-9-]*:\)\{0,1\}rule-result>.*//' |
    awk '{
        id = $0; sub(/.* idref="/, "", id); sub(/".*/, "", id)
        sev = "unknown"; if ($0 ~ / severity="/) { sev = $0; sub(/.* severity="/, "", sev); sub(/".*/, "", sev) }
        res = $0; sub(/.*<([a-z0-9-]*:)?result>/, "", res); sub(/<.*/, "", res)
        print res, sev, id
    }' | grep -v '^notselected ' >oscap-rules.txt

if [ ! -s oscap-rules.txt ]; then
    gate_error "oscap ran" "the results file has no evaluated rule (check OSCAP_PROFILE and OSCAP_RULES)" "$(tail -n 20 oscap.out)"
fi
while read -r result severity id; do
    name=${id#"${prefix}rule_"}
    enforced=no
    if gate_in all "$severities" || gate_in "$severity" "$severities"; then
        enforced=yes
    fi
    case $result in
    pass | fixed) gate_pass "$name" "$result ($severity)" ;;
    fail | error | unknown)
        if [ "$enforced" = yes ]; then
            gate_fail "$name" "$result: $severity severity rule $id"
        else
            gate_skip "$name" "$result, not enforced: $severity severity"
        fi
        ;;
    *) gate_skip "$name" "$result ($severity)" ;;
    esac
done <oscap-rules.txt
finish
