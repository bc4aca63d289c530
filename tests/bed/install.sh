#!/usr/bin/env bash
# Installs imgbake's local test bed: Debian packages (OpenSSH, QEMU, guest parts, network tools, Go
# and govmomi), moto server in a private venv, ansible-core in another, vcsim (VMware's simulator,
# built here from tests/bed/vcsim/main.go) and the QEMU test guest. Idempotent: a second run only checks
# (a few seconds, no network). Prints one line per component.
#
#   IMGBAKE_CACHE   cache dir (default ~/.cache/imgbake): venv/, ansible/, vcsim/, guest/
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${IMGBAKE_CACHE:-$HOME/.cache/imgbake}
venv=$cache/venv
moto_version=5.2.5
# Ansible (ansible and ansible_local step tests): its own venv, so its pins never fight moto's.
ansible_venv=$cache/ansible
ansible_version=2.17.14

sudo=()
[ "$(id -u)" = 0 ] || sudo=(sudo)

die() { echo "install.sh: $*" >&2; exit 1; }

# --- Debian packages: one transaction for the bed and the base image, then a command check ---
"$here/../../scripts/install-packages.sh" bed

# --- moto server (PyPI) in a private venv ---
moto_ok() {
    [ -x "$venv/bin/moto_server" ] &&
        "$venv/bin/python" - "$moto_version" >/dev/null 2>&1 <<'EOF'
import sys
from importlib.metadata import version
import moto.server  # the server extra (flask etc.) must import, not only moto itself
sys.exit(0 if version("moto") == sys.argv[1] else 1)
EOF
}
if moto_ok; then
    echo "moto: ok ($moto_version in $venv)"
else
    mkdir -p "$cache"
    # A venv whose python or pip no longer runs (python upgraded, half-written) is rebuilt.
    if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$venv"
        python3 -m venv "$venv"
    fi
    log=$(mktemp)
    if ! "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$moto_version" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "pip install moto[server]==$moto_version into $venv failed"
    fi
    rm -f "$log"
    moto_ok || die "moto $moto_version in $venv does not import after install"
    echo "moto: installed $moto_version in $venv"
fi

# --- Ansible (PyPI ansible-core) in a private venv; tests run its ansible-playbook by path ---
ansible_ok() {
    [ -x "$ansible_venv/bin/ansible-playbook" ] && [ -x "$ansible_venv/bin/ansible-galaxy" ] &&
        "$ansible_venv/bin/ansible-playbook" --version 2>/dev/null | head -n 1 | grep -qF "[core $ansible_version]"
}
if ansible_ok; then
    echo "ansible: ok (ansible-core $ansible_version in $ansible_venv)"
else
    mkdir -p "$cache"
    if ! "$ansible_venv/bin/python" -m pip --version >/dev/null 2>&1; then
        rm -rf "$ansible_venv"
        python3 -m venv "$ansible_venv"
    fi
    log=$(mktemp)
    if ! "$ansible_venv/bin/pip" install -q --disable-pip-version-check "ansible-core==$ansible_version" >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "pip install ansible-core==$ansible_version into $ansible_venv failed"
    fi
    rm -f "$log"
    ansible_ok || die "ansible-playbook $ansible_version in $ansible_venv does not run after install"
    echo "ansible: installed ansible-core $ansible_version in $ansible_venv"
fi

# --- vcsim: our main.go around govmomi's simulator, built offline (GOPATH mode, Debian's source) ---
# Rebuilt only when main.go changes (its sha256 is stored beside the binary) or the binary is gone.
vcsim_dir=$cache/vcsim
vcsim_src=$here/vcsim
vcsim_sum=$(sha256sum "$vcsim_src/main.go" | cut -d' ' -f1)
if [ -x "$vcsim_dir/vcsim" ] && [ "$(cat "$vcsim_dir/main.go.sha256" 2>/dev/null)" = "$vcsim_sum" ]; then
    echo "vcsim: ok ($vcsim_dir/vcsim)"
else
    mkdir -p "$vcsim_dir/gopath"
    rm -f "$vcsim_dir/main.go.sha256"
    log=$(mktemp)
    started=$(date +%s)
    # GOPATH mode: imports come from /usr/share/gocode (golang-github-vmware-govmomi-dev), nothing
    # is downloaded. CGO off: no C compiler needed, a static binary.
    if ! (cd "$vcsim_src" && env GO111MODULE=off GOPROXY=off GOFLAGS= CGO_ENABLED=0 \
        GOPATH="$vcsim_dir/gopath:/usr/share/gocode" GOCACHE="$vcsim_dir/gocache" \
        go build -o "$vcsim_dir/vcsim.new" .) >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        die "building vcsim from $vcsim_src failed"
    fi
    rm -f "$log"
    mv -f "$vcsim_dir/vcsim.new" "$vcsim_dir/vcsim"
    echo "$vcsim_sum" >"$vcsim_dir/main.go.sha256"
    echo "vcsim: built ($vcsim_dir/vcsim in $(($(date +%s) - started)) s)"
fi

# --- QEMU guest ---
if guest=$(IMGBAKE_CACHE=$cache "$here/guest/build.sh" --check 2>/dev/null); then
    state=ok
else
    guest=$(IMGBAKE_CACHE=$cache "$here/guest/build.sh") || die "guest build failed"
    state=built
fi
echo "guest: $state ($guest, kernel $(cat "$guest/kernel-version"))"

# --- the local base image (QEMU builder tests, the quick start; ~1.5 min once, then cached) ---
repo=$(cd "$here/../.." && pwd)
if base=$(IMGBAKE_CACHE=$cache "$repo/scripts/make-base-image.sh" --check 2>/dev/null); then
    echo "base image: ok ($base)"
else
    log=$(mktemp)
    if ! base=$(IMGBAKE_CACHE=$cache "$repo/scripts/make-base-image.sh" 2>"$log"); then
        tail -n 40 "$log" >&2
        rm -f "$log"
        die "scripts/make-base-image.sh failed"
    fi
    rm -f "$log"
    echo "base image: built ($base)"
fi

# --- the SCAP Security Guide for the security-gate test (tests/e2e/tests/qemu_security_gate.rs) ---
# trixie's ssg-base and ssg-debian (0.1.76: the first with ssg-debian12-ds.xml; bookworm's 0.1.65
# has Debian 10 and 11 only), downloaded with apt-get from a private apt state: the host's apt
# configuration and package lists are not touched. The test uploads them to its guest.
ssg=$cache/security-gate/ssg
if [ "$(find "$ssg" -maxdepth 1 -name '*.deb' 2>/dev/null | wc -l)" = 2 ]; then
    echo "scap security guide: ok ($ssg)"
else
    apt_state=$cache/security-gate/apt
    rm -rf "$apt_state" "$ssg"
    mkdir -p "$apt_state/etc" "$apt_state/lists/partial" "$apt_state/cache/archives/partial" "$ssg.new"
    printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "${IMGBAKE_DEBIAN_MIRROR:-http://deb.debian.org/debian}" >"$apt_state/etc/trixie.sources"
    apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt_state/etc"
        -o "Dir::State::Lists=$apt_state/lists" -o "Dir::Cache=$apt_state/cache" -o Dir::State::status=/dev/null
        -o Acquire::Languages=none -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update -qq >/dev/null || die "apt-get update (trixie, for the SCAP Security Guide) failed"
    (cd "$ssg.new" && apt-get "${apt_opts[@]}" download -qq ssg-base ssg-debian) ||
        die "downloading ssg-base and ssg-debian from trixie failed"
    rm -rf "$apt_state"
    mv "$ssg.new" "$ssg"
    echo "scap security guide: downloaded ($ssg: $(cd "$ssg" && ls))"
fi
