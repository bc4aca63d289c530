#!/bin/sh
# On-box tests of the app image, in plain sh (the image has no test framework): each check is one
# JUnit test case in report.xml, which imgbake fetches and summarises. Exits non-zero on a failure.
cd "$(dirname "$0")"
failures=0
cases=""
check() {
    name=$1
    shift
    if out=$("$@" 2>&1); then
        cases="$cases<testcase classname=\"app\" name=\"$name\"/>"
    else
        failures=$((failures + 1))
        out=$(printf '%s' "$out" | sed 's/&/\&amp;/g; s/</\&lt;/g; s/"/\&quot;/g')
        cases="$cases<testcase classname=\"app\" name=\"$name\"><failure message=\"failed\">$out</failure></testcase>"
    fi
}
check chain-recorded-every-image sh -c 'test "$(tr "\n" " " </etc/imgbake/images)" = "base tools app "'
check motd-from-base grep -q imgbake /etc/motd
check tool-from-tools sh -c 'imgbake-hello | grep -q "hello from tools"'
check swappiness-after-reboot sh -c 'test "$(cat /proc/sys/vm/swappiness)" = 10'
check service-enabled systemctl is-enabled imgbake-app.service
check app-runs sh -c '/opt/app/app.sh | grep -q "app ok: base tools app"'
check sshd-host-key-not-baked sh -c '! ls /etc/ssh/ssh_host_*_key 2>/dev/null | grep -q .'
count=$(printf '%s' "$cases" | grep -o '<testcase ' | wc -l)
printf '<?xml version="1.0"?>\n<testsuite name="app" tests="%s" failures="%s">%s</testsuite>\n' \
    "$count" "$failures" "$cases" >report.xml
[ "$failures" -eq 0 ]
