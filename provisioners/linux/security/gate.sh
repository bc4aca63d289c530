#!/bin/sh
# gate.sh — shared part of the security gate recipes (lynis.sh, openscap.sh, debsecan.sh): JUnit
# cases from parsed scan results, and installing the scanners only when they are missing.
# POSIX sh (dash). Sourced by the recipes; functions and variables start with gate_ / _gate_.
#
#   gate_begin SUITE REPORT            start a report (REPORT is written by gate_end, always)
#   gate_pass NAME [MESSAGE]           a case that passed
#   gate_fail NAME MESSAGE [DETAILS]   a case that failed the policy
#   gate_error NAME MESSAGE [DETAILS]  the scan itself went wrong (counts as a failure)
#   gate_skip NAME MESSAGE             a case recorded but not enforced (or not applicable)
#   gate_end                           write REPORT; return 1 when a case failed or errored
#   gate_words LIST                    LIST split on blanks and commas, one word per line
#   gate_in WORD LIST                  WORD is one of LIST's words (case-insensitive)
#   gate_install PACKAGE...            apt-get install the packages not installed yet
#   gate_os_release KEY                a value from /etc/os-release

_gate_escape() {
    # XML-escape stdin; drop the control characters XML 1.0 cannot carry.
    tr -d '\000-\010\013\014\016-\037' | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'
}

_gate_attr() {
    printf '%s' "$1" | _gate_escape | tr '\n\t' '  '
}

gate_begin() {
    gate_suite=$1
    gate_report=$2
    _gate_cases=$(mktemp "${TMPDIR:-/tmp}/gate-cases.XXXXXX") || return 2
    _gate_tests=0
    _gate_failures=0
    _gate_errors=0
    _gate_skipped=0
    # A report even when the recipe is stopped half-way.
    trap '_gate_trap' INT TERM
}

_gate_trap() {
    gate_error "interrupted" "the recipe was stopped before it finished"
    gate_end
    exit 1
}

# _gate_case KIND NAME MESSAGE [DETAILS]
_gate_case() {
    _gate_tests=$((_gate_tests + 1))
    _gate_n=$(_gate_attr "$2")
    _gate_c=$(_gate_attr "$gate_suite")
    _gate_m=$(_gate_attr "$3")
    case $1 in
    pass)
        if [ -n "$3" ]; then
            printf '    <testcase classname="%s" name="%s"><system-out>%s</system-out></testcase>\n' "$_gate_c" "$_gate_n" "$_gate_m" >>"$_gate_cases"
        else
            printf '    <testcase classname="%s" name="%s"/>\n' "$_gate_c" "$_gate_n" >>"$_gate_cases"
        fi
        echo "ok - $2${3:+: $3}"
        ;;
    skip)
        _gate_skipped=$((_gate_skipped + 1))
        printf '    <testcase classname="%s" name="%s">\n      <skipped message="%s"/>\n    </testcase>\n' "$_gate_c" "$_gate_n" "$_gate_m" >>"$_gate_cases"
        echo "skip - $2: $3"
        ;;
    fail | error)
        if [ "$1" = fail ]; then
            _gate_failures=$((_gate_failures + 1))
            _gate_el=failure
        else
            _gate_errors=$((_gate_errors + 1))
            _gate_el=error
        fi
        {
            printf '    <testcase classname="%s" name="%s">\n      <%s message="%s">' "$_gate_c" "$_gate_n" "$_gate_el" "$_gate_m"
            printf '%s\n' "${4:-$3}" | tail -n 100 | _gate_escape
            printf '</%s>\n    </testcase>\n' "$_gate_el"
        } >>"$_gate_cases"
        echo "not ok - $2: $3"
        ;;
    esac
}

gate_pass() { _gate_case pass "$1" "${2:-}"; }
gate_fail() { _gate_case fail "$1" "$2" "${3:-}"; }
gate_error() { _gate_case error "$1" "$2" "${3:-}"; }
gate_skip() { _gate_case skip "$1" "$2"; }

gate_end() {
    trap - INT TERM
    {
        printf '<?xml version="1.0" encoding="UTF-8"?>\n<testsuites>\n'
        printf '  <testsuite name="%s" tests="%s" failures="%s" errors="%s" skipped="%s">\n' \
            "$(_gate_attr "$gate_suite")" "$_gate_tests" "$_gate_failures" "$_gate_errors" "$_gate_skipped"
        cat "$_gate_cases"
        printf '  </testsuite>\n</testsuites>\n'
    } >"$gate_report"
    rm -f "$_gate_cases"
    echo "$gate_suite: $((_gate_tests - _gate_failures - _gate_errors - _gate_skipped)) passed, $_gate_failures failed, $_gate_errors errors, $_gate_skipped skipped (report: $gate_report)"
    [ "$_gate_failures" -eq 0 ] && [ "$_gate_errors" -eq 0 ]
}

gate_words() {
    printf '%s\n' "$1" | tr ', \t' '\n\n\n' | sed '/^$/d'
}

gate_in() {
    gate_words "$2" | grep -Fxqi -e "$1"
}

gate_os_release() {
    (
        # shellcheck disable=SC1091
        . /etc/os-release 2>/dev/null && eval "printf '%s' \"\${$1:-}\""
    )
}

# gate_install PACKAGE...: the missing ones only; apt-get update first when the lists are empty.
# GATE_NO_INSTALL=1 forbids installing (the recipe reports what is missing instead).
gate_install() {
    _gate_missing=
    for _gate_p in "$@"; do
        if ! dpkg-query -W -f '${Status}\n' "$_gate_p" 2>/dev/null | grep -q ' installed$'; then
            _gate_missing="$_gate_missing $_gate_p"
        fi
    done
    [ -n "$_gate_missing" ] || return 0
    if [ "${GATE_NO_INSTALL:-0}" = 1 ]; then
        echo "missing packages:$_gate_missing (GATE_NO_INSTALL=1)" >&2
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "missing packages:$_gate_missing, and no apt-get on this machine" >&2
        return 1
    fi
    echo "installing:$_gate_missing"
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get update -q -o Acquire::Languages=none >&2 || return 1
    fi
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $_gate_missing >&2
}
