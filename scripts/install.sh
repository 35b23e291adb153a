#!/usr/bin/env bash
# Installs mpchat as a systemd service: the binary, the unit and the
# system user it runs as.
#
#   sudo scripts/install.sh                    build, then install
#   sudo MPCHAT_BIN=path scripts/install.sh    install a binary built before
#
# Settings, from the environment:
#   PREFIX      where the binary goes: $PREFIX/bin/mpchat (default /usr/local)
#   UNITDIR     where the unit goes (default /etc/systemd/system)
#   MPCHAT_BIN  a built mpchat binary; without it, cargo builds one
#   DESTDIR     stage everything under this directory instead, for a
#               package: no user is created and systemd is left alone
set -euo pipefail

readonly DEFAULT_PREFIX=/usr/local
PREFIX=${PREFIX:-$DEFAULT_PREFIX}
UNITDIR=${UNITDIR:-/etc/systemd/system}
DESTDIR=${DESTDIR:-}
MPCHAT_BIN=${MPCHAT_BIN:-}
readonly SERVICE_USER=mpchat

die() {
    echo "install.sh: $*" >&2
    exit 1
}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
unit_source=$here/mpchat.service
[[ -f $unit_source ]] || die "no unit file at $unit_source"

# Both paths are written into the unit or used under DESTDIR; systemd needs
# an absolute ExecStart and would expand '%' and '$' in it.
for setting in PREFIX UNITDIR; do
    value=${!setting}
    [[ $value == /* ]] || die "$setting must be an absolute path (got '$value')"
    [[ $value != *[[:space:]%\$\\\"\']* ]] ||
        die "$setting must not contain spaces, quotes, '%', '\$' or '\\' (got '$value')"
done
if [[ -n $DESTDIR && $DESTDIR != /* ]]; then
    DESTDIR=$PWD/$DESTDIR
fi

if [[ -z $DESTDIR && $EUID -ne 0 ]]; then
    die "installing to $PREFIX and $UNITDIR needs root: run it with sudo (or set DESTDIR to stage the files)"
fi

if [[ -z $MPCHAT_BIN ]]; then
    # Under sudo, root's PATH usually lacks the ~/.cargo/bin of a rustup
    # install; building as the user first is the way out.
    command -v cargo >/dev/null ||
        die "cargo not found: build as your user with 'cargo build --release --locked', then run 'sudo MPCHAT_BIN=target/release/mpchat $0'"
    echo "install.sh: building with cargo build --release --locked"
    (cd "$root" && cargo build --release --locked) || die "cargo build failed"
    target=${CARGO_TARGET_DIR:-target}
    [[ $target == /* ]] || target=$root/$target
    MPCHAT_BIN=$target/release/mpchat
fi
[[ -f $MPCHAT_BIN && -x $MPCHAT_BIN ]] || die "no executable mpchat binary at '$MPCHAT_BIN'"

bin_path=$PREFIX/bin/mpchat
unit_path=$UNITDIR/mpchat.service

# The unit names the default path; a different PREFIX has to show up in
# ExecStart or systemd would start a binary that is not there.
unit_text=
found_exec_start=no
while IFS= read -r line || [[ -n $line ]]; do
    if [[ $line == ExecStart=* ]]; then
        [[ $line == "ExecStart=$DEFAULT_PREFIX/bin/mpchat "* ]] ||
            die "$unit_source: ExecStart does not start with $DEFAULT_PREFIX/bin/mpchat"
        line=ExecStart=$bin_path${line#"ExecStart=$DEFAULT_PREFIX/bin/mpchat"}
        found_exec_start=yes
    fi
    unit_text+=$line$'\n'
done <"$unit_source"
[[ $found_exec_start == yes ]] || die "$unit_source has no ExecStart line"

install -d -m 0755 "$DESTDIR$PREFIX/bin" "$DESTDIR$UNITDIR" ||
    die "cannot create $DESTDIR$PREFIX/bin or $DESTDIR$UNITDIR"
install -m 0755 "$MPCHAT_BIN" "$DESTDIR$bin_path" ||
    die "cannot install the binary to $DESTDIR$bin_path"
echo "install.sh: installed $DESTDIR$bin_path"

# Written beside the target and renamed over it, so systemd never reads a
# half-written unit.
unit_tmp=$(mktemp "$DESTDIR$UNITDIR/.mpchat.service.XXXXXX") ||
    die "cannot write to $DESTDIR$UNITDIR"
trap 'rm -f "$unit_tmp"' EXIT
printf '%s' "$unit_text" >"$unit_tmp"
chmod 0644 "$unit_tmp"
mv -f "$unit_tmp" "$DESTDIR$unit_path" || die "cannot install the unit to $DESTDIR$unit_path"
trap - EXIT
echo "install.sh: installed $DESTDIR$unit_path"

if [[ -n $DESTDIR ]]; then
    echo "install.sh: staged under $DESTDIR; skipped creating user $SERVICE_USER and systemctl daemon-reload"
    exit 0
fi

if getent passwd "$SERVICE_USER" >/dev/null; then
    echo "install.sh: user $SERVICE_USER already exists"
else
    command -v useradd >/dev/null || die "useradd not found: create a system user named $SERVICE_USER by hand"
    useradd --system --user-group --no-create-home --home-dir /var/lib/mpchat \
        --shell /usr/sbin/nologin --comment "mpchat chat server" "$SERVICE_USER" ||
        die "could not create user $SERVICE_USER"
    echo "install.sh: created system user $SERVICE_USER"
fi

# /run/systemd/system exists only while systemd is PID 1: in a container or
# a chroot, systemctl would fail or talk to the wrong manager.
if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload || die "systemctl daemon-reload failed"
    echo "install.sh: ran systemctl daemon-reload"
    if systemctl is-active --quiet mpchat; then
        echo "install.sh: mpchat is running; 'systemctl restart mpchat' puts what was just installed to use"
    else
        echo "install.sh: start it now and at every boot with: systemctl enable --now mpchat"
    fi
else
    echo "install.sh: systemd is not running here; skipped systemctl daemon-reload"
    echo "install.sh: on a systemd machine: systemctl daemon-reload && systemctl enable --now mpchat"
fi
