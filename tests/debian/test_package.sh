#!/usr/bin/env bash
# The Debian package openxcap-xcapdiff, end to end (issue 7; `make test-debian`).
#
# On a Debian 12 machine, as root: installs the build dependencies, builds the source
# and binary packages from a copy of this tree (the work tree stays clean), runs
# lintian on both (any E: or W: fails), builds an equivs dummy `openxcap` 3.2.0 that
# provides empty xcap/ and xcap/backend/ packages, installs both with apt, checks
# where every file landed, the conffile and spool permissions, imports the backend
# module with Debian's python3, runs the xcapdiff command (help, diff, apply, and a
# publish over SIP to `xcapdiff monitor`), then purges and checks that nothing is
# left. A second round does the same with a system user "openxcap" present (the
# postinst then gives the conffile its group and the spool to it, by statoverride).
#
# Idempotent; whatever happens, the two packages are purged, a test user is removed,
# and the temporary directory is deleted on exit. Refuses to run when a real (not
# this script's dummy) openxcap package is installed.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 PYTHONDONTWRITEBYTECODE=1

start=$SECONDS
tree=$(cd "$(dirname "$0")/../.." && pwd)
pkg=openxcap-xcapdiff
dist=/usr/lib/python3/dist-packages
conffile=/etc/openxcap/xcapdiff.ini
spool=/var/lib/openxcap-xcapdiff
dummy_marker="dummy for tests/debian/test_package.sh"
user_marker="xcapdiff package test"
work=
monitor_pid=

step() { printf '\n== %s (%ds)\n' "$*" $((SECONDS - start)); }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
status_of() { dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || echo not-installed; }
is_dummy_openxcap() { dpkg-query -W -f='${Description}' openxcap 2>/dev/null | grep -qF "$dummy_marker"; }

purge_packages() {
    # Ours always; openxcap only when it is this script's dummy.
    local -a purge=()
    [[ $(status_of "$pkg") == not-installed ]] || purge+=("$pkg")
    if [[ $(status_of openxcap) != not-installed ]] && is_dummy_openxcap; then
        purge+=(openxcap)
    fi
    if ((${#purge[@]})); then
        apt-get purge -y -q "${purge[@]}"
    fi
}

remove_test_user() {
    if getent passwd openxcap | grep -qF "$user_marker"; then
        userdel openxcap
        ! getent group openxcap >/dev/null || groupdel openxcap
    fi
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT
    [[ -z $monitor_pid ]] || kill "$monitor_pid" 2>/dev/null
    purge_packages >/dev/null 2>&1 || echo "cleanup: purging $pkg/openxcap failed" >&2
    remove_test_user
    [[ -z $work ]] || rm -rf "$work"
    if ((rc == 0)); then
        printf '\nOK: Debian package test passed in %ds\n' $((SECONDS - start))
    else
        printf '\nFAILED (exit %d) after %ds\n' "$rc" $((SECONDS - start)) >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

[[ $(id -u) == 0 ]] || fail "run as root (installs and purges packages)"
if [[ $(status_of openxcap) != not-installed ]] && ! is_dummy_openxcap; then
    trap - EXIT
    fail "a real openxcap package is installed; this test would replace it (use a CI machine)"
fi
work=$(mktemp -d /tmp/xcapdiff-deb.XXXXXXXX)
chmod 0755 "$work" # apt reads the local .debs as user _apt

step "leftovers of an earlier run"
purge_packages
remove_test_user

step "build and test dependencies"
needed=(build-essential dpkg-dev debhelper dh-python python3-all python3-setuptools
    python3-lxml python3-twisted python3-openssl python3-service-identity
    lintian equivs fakeroot)
missing=()
for p in "${needed[@]}"; do
    [[ $(status_of "$p") == installed ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
else
    echo "all installed"
fi

step "copy of the tree"
src="$work/src/$pkg"
mkdir -p "$src" "$work/out"
tar -C "$tree" -cf - \
    --exclude=./.git --exclude='./.venv*' --exclude='./tests.*' --exclude='./*.egg-info' \
    --exclude=__pycache__ --exclude=./build --exclude=./dist --exclude=./.pybuild \
    --exclude=./.hypothesis --exclude=./.mypy_cache --exclude=./.pytest_cache \
    --exclude=./.ruff_cache --exclude=./.benchmarks --exclude=_trial_temp \
    --exclude=./debian/.debhelper --exclude="./debian/$pkg" --exclude=./debian/tmp \
    --exclude=./debian/files --exclude='./debian/*.substvars' \
    --exclude='./debian/*.debhelper' --exclude='./debian/*.debhelper.log' \
    . | tar -C "$src" -xf -

step "source package"
(cd "$src" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-source --build . >/dev/null)

step "binary package (dpkg-buildpackage -us -uc -b)"
if ! (cd "$src" && PATH=/usr/sbin:/usr/bin:/sbin:/bin dpkg-buildpackage -us -uc -b \
    >"$work/build.log" 2>&1); then
    tail -n 60 "$work/build.log"
    fail "dpkg-buildpackage failed (log above)"
fi
mv "$work"/src/*.deb "$work"/src/*.changes "$work"/src/*.buildinfo "$work"/src/*.dsc \
    "$work"/src/*.tar.* "$work/out/"
deb=$(echo "$work"/out/${pkg}_*_all.deb)
[[ -f $deb ]] || fail "no ${pkg}_*_all.deb built"

step "lintian"
lintian_out=$(cd "$work/out" && lintian -I --pedantic --show-overrides --fail-on none ./*.dsc ./*.changes 2>&1)
lintian_out=$(grep -v '^running with root privileges' <<<"$lintian_out" || true)
[[ -z $lintian_out ]] || echo "$lintian_out"
if grep -E '^[EW]: ' <<<"$lintian_out" >/dev/null; then
    fail "lintian reports errors or warnings"
fi
echo "lintian: no errors, no warnings"

step "dpkg -c"
dpkg -c "$deb"
dpkg -I "$deb" control

step "equivs dummy openxcap 3.2.0"
mkdir -p "$work/equivs/xcap" "$work/equivs/backend"
: >"$work/equivs/xcap/__init__.py"
: >"$work/equivs/backend/__init__.py"
cat >"$work/equivs/openxcap.ctl" <<EOF
Section: net
Priority: optional
Standards-Version: 4.6.2

Package: openxcap
Version: 3.2.0
Maintainer: xcapdiff_ext developers <xcapdiff@example.org>
Architecture: all
Files: xcap/__init__.py $dist/xcap/
 backend/__init__.py $dist/xcap/backend/
Description: $dummy_marker
 Provides empty xcap and xcap.backend packages where OpenXCAP's Debian package
 installs them, so that openxcap-xcapdiff can be installed and tested.
EOF
(cd "$work/equivs" && equivs-build openxcap.ctl >"$work/equivs.log" 2>&1) ||
    { cat "$work/equivs.log"; fail "equivs-build failed"; }
dummy="$work/equivs/openxcap_3.2.0_all.deb"
[[ -f $dummy ]] || fail "no dummy openxcap .deb"

# What exists before installing, to compare after the purge (paths only; dpkg's and
# apt's own databases and logs change, by design).
snapshot() {
    find /etc /usr /var/lib /opt /srv \
        \( -path /var/lib/dpkg -o -path /var/lib/apt -o -path /var/lib/systemd \
        -o -path /var/lib/ucf -o -path /usr/local \) -prune -o -print 2>/dev/null | sort
}

check_installed() {
    # check_installed CONFFILE_OWNER SPOOL_OWNER (as stat prints %U:%G)
    local conf_owner=$1 spool_owner=$2 files top mode
    files=$(dpkg -L "$pkg")
    for f in /usr/bin/xcapdiff "$dist/xcap/backend/xcapdiff.py" "$dist/xcapdiff_ext/__init__.py" \
        "$dist/xcapdiff_ext/openxcap/backend.py" "$dist/xcapdiff_ext/py.typed" \
        "$dist/xcapdiff_ext/schemas/xcap-diff.local.xsd" "$dist/xcapdiff_ext/schemas/patch-ops.xsd" \
        "$conffile" "$spool" /usr/share/man/man1/xcapdiff.1.gz \
        /usr/share/doc/$pkg/copyright; do
        grep -qxF "$f" <<<"$files" || fail "$pkg does not ship $f"
        [[ -e $f ]] || fail "$f is not on disk"
    done
    for doc in README.Debian README.md install.md configuration.md opensips.md operations.md \
        openxcap.md architecture.md \
        examples/resource-lists-old.xml; do
        grep -qxE "/usr/share/doc/$pkg/$doc(\.gz)?" <<<"$files" || fail "$pkg lacks doc $doc"
    done
    # OpenXCAP's own package files are never ours; pip's import hook is not shipped.
    for f in "$dist/xcap/__init__.py" "$dist/xcap/backend/__init__.py"; do
        ! grep -qxF "$f" <<<"$files" || fail "$pkg ships OpenXCAP's $f"
    done
    ! grep -E '\.pth$|_xcapdiff_ext_hook' <<<"$files" || fail "$pkg ships the pip import hook"
    top=$(grep -E "^$dist/[^/]+$" <<<"$files" | sed "s|^$dist/||" | sort | tr '\n' ' ')
    [[ $top =~ ^xcap\ xcapdiff_ext\ xcapdiff_ext-[0-9.]+\.(egg|dist)-info\ $ ]] ||
        fail "unexpected top-level entries in $dist: $top"
    dpkg-query -W -f='${Conffiles}\n' "$pkg" | grep -qE "^ $conffile [0-9a-f]{32}$" ||
        fail "$conffile is not a conffile"
    [[ $(stat -c '%U:%G %a' "$conffile") == "$conf_owner 640" ]] ||
        fail "$conffile is $(stat -c '%U:%G %a' "$conffile"), want $conf_owner 640"
    [[ $(stat -c '%U:%G %a' "$spool") == "$spool_owner 750" ]] ||
        fail "$spool is $(stat -c '%U:%G %a' "$spool"), want $spool_owner 750"
    mode=$(stat -c '%a' /usr/bin/xcapdiff)
    [[ $mode == 755 ]] || fail "/usr/bin/xcapdiff mode $mode"
    head -n 1 /usr/bin/xcapdiff | grep -qx '#!/usr/bin/python3' ||
        fail "/usr/bin/xcapdiff does not run Debian's python3"
    cmp -s "$tree/debian/xcapdiff.ini" "$conffile" || fail "$conffile differs from debian/xcapdiff.ini"
    echo "files, conffile ($conf_owner 640) and spool ($spool_owner 750): as intended"
}

exercise() {
    # The backend module, from Debian's python3 (-I: no PYTHONPATH, no user site,
    # not the work tree). No config.ini: it warns and reads the installed
    # xcapdiff.ini beside it, which must parse as the defaults.
    (cd / && /usr/bin/python3 -I -B -c '
import xcap.backend.xcapdiff as m
from xcapdiff_ext.configfile import read_settings
from xcapdiff_ext.config import Settings
assert m.__file__ == "'"$dist"'/xcap/backend/xcapdiff.py", m.__file__
assert callable(m.Storage) and callable(m.PasswordChecker), m
assert m.installSignalHandlers is False
assert read_settings() == Settings()
print("import xcap.backend.xcapdiff: ok")
') || fail "the backend module does not import from /usr/bin/python3"

    (cd / && xcapdiff --help) >"$work/help.txt" || fail "xcapdiff --help failed"
    grep -q 'diff' "$work/help.txt" || fail "xcapdiff --help does not list diff"
    local old="$tree/examples/resource-lists-old.xml" new="$tree/examples/resource-lists-new.xml"
    (cd / && xcapdiff diff "$old" "$new" --previous-etag e1 --new-etag e2) \
        >"$work/diff.xml" 2>"$work/diff.err" || { cat "$work/diff.err"; fail "xcapdiff diff failed"; }
    cat "$work/diff.xml"
    # A correct patch, not the etag-only fallback: no warning, and applying it to the
    # old document gives the new one (as canonical XML).
    [[ ! -s $work/diff.err ]] || { cat "$work/diff.err"; fail "xcapdiff diff warned (above)"; }
    (cd / && xcapdiff apply "$old" "$work/diff.xml") >"$work/patched.xml" ||
        fail "xcapdiff apply failed"
    /usr/bin/python3 -I -B - "$work/patched.xml" "$new" <<'EOF' || fail "apply(old, diff) != new"
import sys
from lxml import etree
got, want = (etree.tostring(etree.parse(p), method="c14n") for p in sys.argv[1:])
sys.exit(got != want)
EOF
    echo "xcapdiff diff and apply: ok"

    # Twisted at run time: publish the diff by SIP to xcapdiff monitor (UDP, and TCP
    # for requests over 1300 bytes, RFC 3261 18.1.1) on a port free for both.
    local port
    port=$(/usr/bin/python3 -I -B -c '
import socket
while True:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
        tcp.bind(("127.0.0.1", 0))
        port = tcp.getsockname()[1]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
    print(port)
    break
')
    mkdir -p "$work/etc"
    printf '[XCAPDiff]\ntransport = sip\nsip_proxy = sip:127.0.0.1:%s;transport=udp\nspool_dir = %s\n' \
        "$port" "$work/spool" >"$work/etc/config.ini"
    timeout 30 xcapdiff monitor --listen "udp:127.0.0.1:$port" --listen "tcp:127.0.0.1:$port" \
        --count 1 >"$work/monitor.out" 2>&1 &
    monitor_pid=$!
    local tries=0
    until grep -q "tcp:127.0.0.1:$port" "$work/monitor.out" 2>/dev/null ||
        ((tries++ >= 20)); do
        sleep 0.25
    done
    (cd / && timeout 30 xcapdiff publish "$work/diff.xml" --owner sip:alice@example.com \
        --config "$work/etc/config.ini") || { cat "$work/monitor.out"; fail "xcapdiff publish failed"; }
    wait "$monitor_pid" || { cat "$work/monitor.out"; fail "xcapdiff monitor failed"; }
    monitor_pid=
    grep -q 'valid' "$work/monitor.out" || { cat "$work/monitor.out"; fail "monitor saw no valid body"; }
    ! grep -q 'INVALID' "$work/monitor.out" || { cat "$work/monitor.out"; fail "monitor: invalid body"; }
    echo "xcapdiff publish (sip) -> xcapdiff monitor: ok"
}

check_purged() {
    local before=$1 after
    for p in "$pkg" openxcap; do
        [[ $(status_of "$p") == not-installed ]] || fail "$p is still $(status_of "$p") after purge"
    done
    # $dist/xcap: both packages are gone, and nothing may leave byte code behind.
    for f in "$conffile" "$spool" "$dist/xcapdiff_ext" "$dist/xcap" \
        "$dist"/xcapdiff_ext-*-info /usr/bin/xcapdiff /usr/share/doc/$pkg \
        /usr/share/man/man1/xcapdiff.1.gz; do
        [[ ! -e $f ]] || fail "$f is left after purge"
    done
    for f in "$conffile" "$spool"; do
        ! dpkg-statoverride --list "$f" >/dev/null || fail "statoverride for $f left after purge"
    done
    ! pgrep -f '^/usr/bin/python3 /usr/bin/xcapdiff( |$)' >/dev/null ||
        fail "an xcapdiff process is still running"
    after=$(snapshot)
    if [[ $after != "$before" ]]; then
        diff <(echo "$before") <(echo "$after") || true
        fail "the file system differs from before the install (above)"
    fi
    echo "purged: no package state, no files, no statoverrides, no processes"
}

round() {
    # round NAME CONFFILE_OWNER SPOOL_OWNER
    local name=$1 before
    before=$(snapshot)
    step "$name: apt-get install ./openxcap_*.deb ./${pkg}_*.deb"
    (cd "$work" && cp "$dummy" "$deb" . && apt-get install -y -q ./openxcap_3.2.0_all.deb \
        "./$(basename "$deb")" >"$work/install.log" 2>&1) || { cat "$work/install.log"; fail "install failed"; }
    grep -E "^(Unpacking|Setting up) ($pkg|openxcap) " "$work/install.log"
    # The postinst prints nothing (run again as dpkg would on a reconfigure).
    /var/lib/dpkg/info/$pkg.postinst configure "$(dpkg-query -W -f='${Version}' "$pkg")" \
        >"$work/postinst.out" 2>&1 || { cat "$work/postinst.out"; fail "postinst configure failed"; }
    [[ ! -s $work/postinst.out ]] || { cat "$work/postinst.out"; fail "the postinst printed (above)"; }
    step "$name: files"
    check_installed "$2" "$3"
    step "$name: the installed package at work"
    exercise
    step "$name: remove keeps the conffile and the spool"
    touch "$spool/journal"
    apt-get remove -y -q "$pkg" >/dev/null
    [[ $(status_of "$pkg") == config-files ]] || fail "after remove: $(status_of "$pkg")"
    [[ -f $conffile && -d $spool ]] || fail "remove deleted the conffile or the spool"
    step "$name: apt-get purge -y $pkg openxcap"
    apt-get purge -y -q "$pkg" openxcap >/dev/null
    check_purged "$before"
}

if getent passwd openxcap >/dev/null; then
    echo "a user openxcap exists (not created by this test): skipping the root round"
else
    round "OpenXCAP as root" root:root root:root
    step "a system user openxcap"
    useradd --system --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "$user_marker" openxcap
fi
group=$(id -gn openxcap)
round "OpenXCAP as user openxcap" "root:$group" "openxcap:$group"
remove_test_user

step "done"
