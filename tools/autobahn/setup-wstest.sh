#!/usr/bin/env bash
# Install Autobahn|Testsuite's wstest (Python 2.7 based) without docker and without
# touching the system, into a per-user cache dir that survives between CI runs:
#
#   tools/autobahn/setup-wstest.sh            # -> $WSTEST_PREFIX/wstest
#   "$WSTEST_PREFIX/wstest" -m fuzzingclient -s spec.json
#
# WSTEST_PREFIX defaults to ${SWITCHBOARD_TOOLS:-$HOME/.cache/switchboard-tools}/wstest.
# Idempotent: does nothing when "$WSTEST_PREFIX/wstest --autobahnversion" already works.
#
# How (Debian 12 / amd64; adapted from a tested recipe):
#  1. fetch CPython 2.7.18 .debs from Debian *bullseye* with a private apt state
#     (no root needed, /etc/apt and /var/lib/apt untouched, nothing installed),
#  2. extract them under $WSTEST_PREFIX/root and run the interpreter relocated
#     (PYTHONHOME; libssl1.1/libffi7 via LD_LIBRARY_PATH),
#  3. bootstrap pip 20.3.4 (wheel fetched from PyPI by the Python 3 pip) and
#     install autobahntestsuite (pinned, transitive deps pinned by constraints-py27.txt)
#     into $WSTEST_PREFIX/site.
# Needs: apt-get + dpkg-deb and a reachable Debian mirror (taken from this machine's apt
# sources), python3 with pip, gcc (Twisted/wsaccel/ujson C extensions), network access
# to PyPI, ~100 MB of disk.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PREFIX=${WSTEST_PREFIX:-${SWITCHBOARD_TOOLS:-$HOME/.cache/switchboard-tools}/wstest}
AUTOBAHNTESTSUITE_VERSION=25.10.1
CONSTRAINTS=$HERE/constraints-py27.txt

log() { printf 'setup-wstest: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case $PREFIX in
    /*) ;;
    *) die "WSTEST_PREFIX must be an absolute path (got '$PREFIX')" ;;
esac
case $PREFIX in
    *[[:space:]\'\"\\\$\`]*) die "WSTEST_PREFIX must not contain whitespace, quotes, \\, \$ or \` (got '$PREFIX')" ;;
esac
[ "$PREFIX" != / ] || die "refusing to use / as WSTEST_PREFIX"

works() { [ -x "$PREFIX/wstest" ] && "$PREFIX/wstest" --autobahnversion >/dev/null 2>&1; }

if works; then
    log "wstest already installed: $PREFIX/wstest"
    exit 0
fi

mkdir -p "$PREFIX"
# serialize concurrent installs (several CI jobs on one machine share the cache dir)
exec 9>"$PREFIX/.lock"
flock 9
if works; then
    log "wstest already installed (by a concurrent run): $PREFIX/wstest"
    exit 0
fi

# --- preconditions
[ "$(dpkg --print-architecture 2>/dev/null)" = amd64 ] || die "only Debian amd64 is supported (x86_64 .debs / manylinux wheels)"
for c in apt-get dpkg-deb python3 gcc; do
    command -v "$c" >/dev/null || die "'$c' not found"
done
python3 -m pip --version >/dev/null 2>&1 || die "python3 -m pip not available"
[ -r /usr/share/keyrings/debian-archive-keyring.gpg ] || die "/usr/share/keyrings/debian-archive-keyring.gpg missing (package debian-archive-keyring)"

# --- start from scratch: remove only what a previous (broken/partial) run of this script created
log "installing into $PREFIX"
rm -rf "${PREFIX:?}"/{debs,root,site,wheels,apt} "$PREFIX/python2" "$PREFIX/wstest"
mkdir -p "$PREFIX"/{debs,root,site,wheels,apt/lists/partial,apt/cache/archives/partial,apt/empty.d}
cd "$PREFIX"

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_REQUIRE_VIRTUALENV=0
unset PYTHONPATH PYTHONHOME PIP_USER PIP_TARGET PIP_PREFIX

# --- 1. private apt config pointing at bullseye (does not touch /etc/apt or /var/lib/apt)
# the Debian mirror is read from this machine's own apt sources (bookworm -> bullseye)
MIRROR=$(grep -hoE '^URIs: *[^ ]+/debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1 | sed -e 's/^URIs: *//' -e 's#/$##' || true)
[ -n "$MIRROR" ] || MIRROR=$(grep -hoE '^deb +(\[[^]]*\] +)?[^ ]+/debian/? ' /etc/apt/sources.list 2>/dev/null | head -1 | awk '{print $NF}' | sed 's#/$##' || true)
[ -n "$MIRROR" ] || die "no Debian mirror found in this machine's apt sources"
log "Debian mirror: $MIRROR (suite bullseye)"
{
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s bullseye main\n' "$MIRROR"
    printf 'deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] %s-security bullseye-security main\n' "$MIRROR"
} > apt/sources.list
cat > apt/apt.conf <<APTCONF
Dir::Etc::SourceList "$PREFIX/apt/sources.list";
Dir::Etc::SourceParts "$PREFIX/apt/empty.d";
Dir::Etc::Preferences "$PREFIX/apt/empty.d/preferences";
Dir::Etc::PreferencesParts "$PREFIX/apt/empty.d";
Dir::State::Lists "$PREFIX/apt/lists";
Dir::Cache "$PREFIX/apt/cache";
Dir::State::status "$PREFIX/apt/status";
APTCONF
# as root, apt would try to drop to _apt, which cannot enter a private $HOME
[ "$(id -u)" != 0 ] || echo 'APT::Sandbox::User "root";' >> apt/apt.conf
touch apt/status
export APT_CONFIG="$PREFIX/apt/apt.conf"
apt-get -q update
(cd debs && apt-get -q download python2.7 python2.7-minimal libpython2.7-minimal libpython2.7-stdlib \
    python2.7-dev libpython2.7-dev libpython2.7 libssl1.1 libffi7)
unset APT_CONFIG
for d in debs/*.deb; do dpkg-deb -x "$d" root; done

# --- 2. interpreter wrapper (relocated via PYTHONHOME; libssl1.1/libffi7 via LD_LIBRARY_PATH;
#        isolated from the caller's PYTHONPATH and ~/.local user site)
cat > python2.tmp <<WRAP
#!/bin/sh
unset PYTHONPATH PYTHONSTARTUP
export PYTHONNOUSERSITE=1
export PYTHONHOME=$PREFIX/root/usr
export LD_LIBRARY_PATH=$PREFIX/root/usr/lib/x86_64-linux-gnu\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}
exec $PREFIX/root/usr/bin/python2.7 "\$@"
WRAP
chmod +x python2.tmp && mv python2.tmp python2
# make $PREFIX/site a real site dir (so zope's *-nspkg.pth is processed; PYTHONPATH would not do that)
mkdir -p root/usr/local/lib/python2.7/dist-packages
echo "import site; site.addsitedir('$PREFIX/site')" > root/usr/local/lib/python2.7/dist-packages/tooling-site.pth
./python2 -c 'import ssl, ctypes, sqlite3; print("python2 ok: " + ssl.OPENSSL_VERSION)'

# --- 3. pip for Python 2 (+ setuptools 44.0.0, the version autobahntestsuite pins), then
#        autobahntestsuite (its metadata pins the direct dependencies;
#        constraints-py27.txt pins the transitive ones so that installs are reproducible)
python3 -m pip download -q -d wheels --no-deps --only-binary=:all: --python-version 2.7 --implementation cp \
    --abi cp27mu --platform manylinux1_x86_64 pip==20.3.4 setuptools==44.0.0 wheel==0.37.1
./python2 wheels/pip-20.3.4-py2.py3-none-any.whl/pip install -q --no-index --target site wheels/*.whl
constraint_args=()
[ -f "$CONSTRAINTS" ] && constraint_args=(-c "$CONSTRAINTS")
CFLAGS="-I$PREFIX/root/usr/include -I$PREFIX/root/usr/include/python2.7" \
    ./python2 -m pip install -q --no-warn-script-location --target site "${constraint_args[@]}" \
    "autobahntestsuite==$AUTOBAHNTESTSUITE_VERSION"

# the wrapper is written last: its presence + a working --autobahnversion means "installed"
cat > wstest.tmp <<WRAP
#!/bin/sh
exec $PREFIX/python2 -c 'import sys; from autobahntestsuite.wstest import run; sys.argv[0]="wstest"; sys.exit(run())' "\$@"
WRAP
chmod +x wstest.tmp
./wstest.tmp --autobahnversion
mv wstest.tmp wstest
rm -rf debs apt wheels   # only needed during the install
log "installed: $PREFIX/wstest"
