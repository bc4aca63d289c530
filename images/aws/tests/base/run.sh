#!/bin/sh
# On-box tests of the base image, as JUnit XML (no test framework needed on the machine).
out=report.xml; pass=0; fail=0; cases=""
check() { name=$1; shift
  if "$@" >/dev/null 2>&1; then pass=$((pass+1)); cases="$cases<testcase classname=\"base\" name=\"$name\"/>"
  else fail=$((fail+1)); cases="$cases<testcase classname=\"base\" name=\"$name\"><failure message=\"$*\"/></testcase>"; fi
}
check "no pending reboot" test ! -f /var/run/reboot-required
check "no upgradable packages" sh -c '[ -z "$(apt list --upgradable 2>/dev/null | tail -n +2)" ]'
check "sshd config is valid" sudo -n sshd -t
check "password login is off" grep -q '^PasswordAuthentication no' /etc/ssh/sshd_config.d/50-hardening.conf
echo "<testsuite name=\"base\" tests=\"$((pass+fail))\" failures=\"$fail\">$cases</testsuite>" > "$out"
[ "$fail" -eq 0 ]
