#!/bin/sh
# junit.sh — a small test library for shell-based image tests (POSIX sh: dash, busybox ash, bash).
# It runs checks, prints a line per check, and writes a JUnit XML report that imgbake's `test` step
# reads (so does any CI).
#
# In a test script (uploaded with it by the `test` step):
#
#     . ./junit.sh
#     junit_begin "web image" report.xml
#     check "nginx is installed" command -v nginx
#     check "nginx config is valid" nginx -t
#     check "port 80 listens" sh -c 'ss -ltn | grep -q ":80 "'
#     skip "IPv6" "not configured on this image"
#     junit_end
#
# and in tree.toml:
#
#     [[images.web.steps]]
#     test = { source = "tests/web", command = "sh ./run.sh", report = "report.xml" }
#
#   junit_begin SUITE [REPORT]   start a suite; REPORT defaults to junit.xml
#   check NAME CMD [ARG...]      run CMD; exit status 0 passes. A failing check's output (last 100
#                                lines) goes into the report.
#   skip NAME REASON             record a skipped check
#   junit_end                    write the report; returns 1 when a check failed, else 0
#
# Variables of the library start with _junit_; do not use such names in test scripts.

_junit_escape() {
    # XML-escape stdin; drop control characters XML 1.0 cannot carry.
    tr -d '\000-\010\013\014\016-\037' | sed -e 's/&/\&amp;/g' -e 's/</\&lt;/g' -e 's/>/\&gt;/g' -e 's/"/\&quot;/g'
}

_junit_attr() {
    printf '%s' "$1" | _junit_escape | tr '\n' ' '
}

_junit_now() {
    date +%s
}

junit_begin() {
    _junit_suite=${1:-tests}
    _junit_report=${2:-junit.xml}
    _junit_dir=$(mktemp -d "${TMPDIR:-/tmp}/junit.XXXXXX") || return 2
    : >"$_junit_dir/cases"
    _junit_tests=0
    _junit_failures=0
    _junit_skipped=0
    _junit_started=$(_junit_now)
}

check() {
    if [ -z "${_junit_dir:-}" ]; then
        echo "junit.sh: call junit_begin before check" >&2
        return 2
    fi
    _junit_name=$1
    shift
    _junit_tests=$((_junit_tests + 1))
    _junit_t0=$(_junit_now)
    if "$@" >"$_junit_dir/out" 2>&1; then
        _junit_rc=0
    else
        _junit_rc=$?
    fi
    _junit_time=$(($(_junit_now) - _junit_t0))
    _junit_n=$(_junit_attr "$_junit_name")
    _junit_c=$(_junit_attr "$_junit_suite")
    if [ "$_junit_rc" -eq 0 ]; then
        printf '    <testcase classname="%s" name="%s" time="%s"/>\n' "$_junit_c" "$_junit_n" "$_junit_time" >>"$_junit_dir/cases"
        echo "ok - $_junit_name"
    else
        _junit_failures=$((_junit_failures + 1))
        {
            printf '    <testcase classname="%s" name="%s" time="%s">\n' "$_junit_c" "$_junit_n" "$_junit_time"
            printf '      <failure message="exit status %s">' "$_junit_rc"
            tail -n 100 "$_junit_dir/out" | _junit_escape
            printf '</failure>\n    </testcase>\n'
        } >>"$_junit_dir/cases"
        echo "not ok - $_junit_name (exit status $_junit_rc)"
        sed 's/^/    /' "$_junit_dir/out"
    fi
    return 0
}

skip() {
    if [ -z "${_junit_dir:-}" ]; then
        echo "junit.sh: call junit_begin before skip" >&2
        return 2
    fi
    _junit_tests=$((_junit_tests + 1))
    _junit_skipped=$((_junit_skipped + 1))
    printf '    <testcase classname="%s" name="%s" time="0">\n      <skipped message="%s"/>\n    </testcase>\n' \
        "$(_junit_attr "$_junit_suite")" "$(_junit_attr "$1")" "$(_junit_attr "${2:-}")" >>"$_junit_dir/cases"
    echo "skip - $1${2:+: $2}"
}

junit_end() {
    if [ -z "${_junit_dir:-}" ]; then
        echo "junit.sh: call junit_begin before junit_end" >&2
        return 2
    fi
    _junit_time=$(($(_junit_now) - _junit_started))
    {
        printf '<?xml version="1.0" encoding="UTF-8"?>\n'
        printf '<testsuites>\n'
        printf '  <testsuite name="%s" tests="%s" failures="%s" errors="0" skipped="%s" time="%s">\n' \
            "$(_junit_attr "$_junit_suite")" "$_junit_tests" "$_junit_failures" "$_junit_skipped" "$_junit_time"
        cat "$_junit_dir/cases"
        printf '  </testsuite>\n</testsuites>\n'
    } >"$_junit_report"
    rm -rf "$_junit_dir"
    _junit_dir=
    echo "$_junit_suite: $((_junit_tests - _junit_failures - _junit_skipped)) checks passed, $_junit_failures failed, $_junit_skipped skipped (report: $_junit_report)"
    [ "$_junit_failures" -eq 0 ]
}
