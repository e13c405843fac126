#!/usr/bin/env bash
# Install Siheyi on Raspberry Pi OS (bookworm) or Debian as a systemd service.
#
#   sudo deploy/install.sh --kiosk            # the kiosk agent (siheyi-agent.service)
#   sudo deploy/install.sh --server           # the server (siheyi-server.service)
#
# Run from a clone or an unpacked release; it builds the wheel from the source beside it, or
# takes one with --wheel FILE. Re-running it is safe: what is in place is kept, a new version
# is installed beside the old one and `current` switched to it. Layout, units, options:
# docs/install.md. `--root DIR` writes everything below DIR and touches nothing else (no
# apt, no udevadm, no systemctl): the tests install into a temporary root that way.
set -euo pipefail

SELF_DIR=$(cd "$(dirname "$0")" && pwd)
SOURCE=$(dirname "$SELF_DIR")
USER_NAME=siheyi
KIOSK_GROUPS=(dialout gpio audio video)
# USB serial adapters a SAM reader usually sits behind: CH340, CH341, CP210x, PL2303.
DEFAULT_READERS=(1a86:7523 1a86:5523 10c4:ea60 067b:2303)
KIOSK_APT=(python3-venv libzbar0 espeak-ng alsa-utils)
SERVER_APT=(python3-venv)
MARKER=siheyi-release.json

KIOSK=0
SERVER=0
ROOT=""
WHEEL=""
PYTHON=/usr/bin/python3
DEPS=1
OFFLINE=0
APT=1
START=1
FORCE=0
BOOT_GUARD=""
READERS=()
PIP=""

usage() {
    cat <<'EOF'
usage: install.sh (--kiosk | --server | both) [options]

  --kiosk               install the agent: siheyi-agent.service, udev rule, device groups
  --server              install the server: siheyi-server.service
  --wheel FILE          install this siheyi wheel instead of building one from the source
  --source DIR          the source tree to build from (default: this script's parent)
  --reader-usb VID:PID  the reader's USB serial adapter, repeatable (default: CH340 1a86:7523,
                        CH341 1a86:5523, CP210x 10c4:ea60, PL2303 067b:2303)
  --boot-guard FILE     the boot guard script (default: SOURCE/device/update/bootguard.py)
  --python PATH         the Python the venvs are made with (default /usr/bin/python3)
  --pip COMMAND         a pip (22.3+) to install with through --python, the venv then gets
                        none of its own (tests: saves bootstrapping pip into every venv)
  --offline             take every dependency from /opt/siheyi/wheelhouse, download nothing
  --no-deps             install the wheel alone, without its dependencies (tests)
  --no-apt              do not install Debian packages
  --no-start            enable the units but do not start them
  --force               rebuild a release in use whose version the new wheel repeats
  --root DIR            install below DIR; no apt, udevadm or systemctl (tests, images)
  -h, --help            this text
EOF
}

say() { printf 'install.sh: %s\n' "$*"; }
warn() { printf 'install.sh: WARNING: %s\n' "$*" >&2; }
die() {
    printf 'install.sh: error: %s\n' "$*" >&2
    exit 2
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --kiosk) KIOSK=1 ;;
            --server) SERVER=1 ;;
            --wheel) WHEEL=${2:?--wheel needs a file}; shift ;;
            --source) SOURCE=${2:?--source needs a directory}; shift ;;
            --reader-usb) READERS+=("${2:?--reader-usb needs VID:PID}"); shift ;;
            --boot-guard) BOOT_GUARD=${2:?--boot-guard needs a file}; shift ;;
            --python) PYTHON=${2:?--python needs a path}; shift ;;
            --pip) PIP=${2:?--pip needs a command}; shift ;;
            --offline) OFFLINE=1 ;;
            --no-deps) DEPS=0 ;;
            --no-apt) APT=0 ;;
            --no-start) START=0 ;;
            --force) FORCE=1 ;;
            --root) ROOT=${2:?--root needs a directory}; shift ;;
            -h | --help) usage; exit 0 ;;
            *) usage >&2; die "unknown option: $1" ;;
        esac
        shift
    done
    [ "$KIOSK" = 1 ] || [ "$SERVER" = 1 ] || { usage >&2; die "say --kiosk, --server or both"; }
    [ ${#READERS[@]} -gt 0 ] || READERS=("${DEFAULT_READERS[@]}")
    BOOT_GUARD=${BOOT_GUARD:-$SOURCE/device/update/bootguard.py}
    if [ -n "$ROOT" ]; then
        [ -d "$ROOT" ] || die "--root $ROOT is not a directory"
        ROOT=$(cd "$ROOT" && pwd)
        APT=0
        START=0
    elif [ "$(id -u)" -ne 0 ]; then
        die "run as root (sudo $0 ...), or with --root DIR"
    fi
    OPT=$ROOT/opt/siheyi
}

# -- Debian packages, user, groups, directories ------------------------------------------

install_packages() {
    [ "$APT" = 1 ] || return 0
    local packages=()
    [ "$KIOSK" = 1 ] && packages+=("${KIOSK_APT[@]}")
    [ "$SERVER" = 1 ] && packages+=("${SERVER_APT[@]}")
    local missing=() package
    for package in "${packages[@]}"; do
        dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
    done
    [ ${#missing[@]} -gt 0 ] || return 0
    say "Debian packages: ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# useradd/groupadd/usermod --prefix edit ROOT/etc directly (no chroot), the same tools either way.
account_tool() {
    local tool=$1
    shift
    if [ -n "$ROOT" ]; then
        "$tool" --prefix "$ROOT" "$@"
    else
        "$tool" "$@"
    fi
}

has_entry() { grep -q "^$2:" "$ROOT/etc/$1" 2>/dev/null; }

ensure_account() {
    local groups=()
    [ "$KIOSK" = 1 ] && groups=("${KIOSK_GROUPS[@]}")
    for group in "${groups[@]}"; do
        has_entry group "$group" || { say "group $group"; account_tool groupadd --system "$group"; }
    done
    local list
    list=$(IFS=,; printf '%s' "${groups[*]}")
    if ! has_entry passwd "$USER_NAME"; then
        say "system user $USER_NAME"
        account_tool useradd --system --user-group --home-dir /var/lib/siheyi --no-create-home \
            --shell /usr/sbin/nologin ${list:+--groups "$list"} "$USER_NAME"
    elif [ -n "$list" ]; then
        account_tool usermod --append --groups "$list" "$USER_NAME"
    fi
    # Numbers, not names: under --root the host's user database does not know siheyi.
    OWNER=$(awk -F: -v u="$USER_NAME" '$1 == u { print $3 ":" $4 }' "$ROOT/etc/passwd")
    [ -n "$OWNER" ] || die "no $USER_NAME in $ROOT/etc/passwd"
    GID=${OWNER#*:}
}

# The agent installs updates itself (device/update): it makes releases/<version> and switches
# the current and previous links by renaming current.new over them, so /opt/siheyi (where the
# links are) and releases/ are its own. The boot guard (bin/) and the wheelhouse, which it only
# runs and reads, stay root's. Root never follows a link the agent could have put there.
make_directories() {
    local dir link
    for dir in "$OPT/bin" "$OPT/wheelhouse" "$OPT/releases"; do
        [ -L "$dir" ] && die "$dir is a symbolic link: remove it and run this again"
    done
    install -d -m 0755 -o "${OWNER%:*}" -g "$GID" "$OPT" "$OPT/releases"
    install -d -m 0755 -o 0 -g 0 "$OPT/bin" "$OPT/wheelhouse"
    chown -R 0:0 "$OPT/wheelhouse"  # an older install gave it to siheyi
    for link in current previous; do  # a link switched by hand as root: the agent's again
        [ -L "$OPT/$link" ] && chown -h "$OWNER" "$OPT/$link"
    done
    install -d -m 0750 -o "${OWNER%:*}" -g "$GID" "$ROOT/var/lib/siheyi"
    install -d -m 0750 -o 0 -g "$GID" "$ROOT/etc/siheyi"
    [ "$KIOSK" = 1 ] && move_bundle
    # The kiosk's key, if enrolled as root: the agent's alone (kiosk doctor checks 0600).
    local file
    for file in bundle.json bundle.json.next-key; do
        [ -f "$ROOT/var/lib/siheyi/$file" ] || continue
        chown "$OWNER" "$ROOT/var/lib/siheyi/$file"
        chmod 0600 "$ROOT/var/lib/siheyi/$file"
    done
    [ "$KIOSK" = 1 ] && env_file agent
    [ "$SERVER" = 1 ] && env_file server
    return 0
}

# A bundle enrolled into /etc/siheyi (before its default moved) goes to the state directory:
# /etc is read-only to the agent, and key rotation writes its next key beside the bundle.
move_bundle() {
    local old=$ROOT/etc/siheyi new=$ROOT/var/lib/siheyi config=$ROOT/etc/siheyi/kiosk.toml file
    [ -f "$old/bundle.json" ] || return 0
    if [ -e "$new/bundle.json" ]; then
        warn "/etc/siheyi/bundle.json and /var/lib/siheyi/bundle.json both exist; the agent \
cannot rotate a key in /etc: make kiosk.toml say bundle = \"/var/lib/siheyi/bundle.json\" and \
delete the other one"
        return 0
    fi
    for file in bundle.json bundle.json.next-key; do
        [ -f "$old/$file" ] && mv "$old/$file" "$new/$file"
    done
    say "moved /etc/siheyi/bundle.json to /var/lib/siheyi/bundle.json (key rotation writes there)"
    [ -f "$config" ] || return 0
    sed -i 's|^\([[:space:]]*bundle[[:space:]]*=[[:space:]]*\)"/etc/siheyi/bundle.json"|\1"/var/lib/siheyi/bundle.json"|' \
        "$config"
    if grep -q '/etc/siheyi/bundle\.json' "$config"; then
        warn "/etc/siheyi/kiosk.toml still names /etc/siheyi/bundle.json: make it say \
bundle = \"/var/lib/siheyi/bundle.json\""
    fi
}

env_file() {
    local file=$ROOT/etc/siheyi/$1.env
    [ -e "$file" ] && return 0
    cat >"$file" <<EOF
# Environment of siheyi-$1.service (read at each start; docs/install.md "Logs").
# SIHEYI_LOG_FORMAT=json
# SIHEYI_LOG_FILE=/var/log/siheyi/$1.log
# SIHEYI_LOG_MAX_BYTES=10485760      (0: rotated by logrotate, not by the process)
# SIHEYI_LOG_BACKUPS=5
EOF
    chown "0:$GID" "$file"
    chmod 0640 "$file"
}

# -- the release: wheel, wheelhouse, venv, links -------------------------------------------

build_wheel() {
    [ -f "$SOURCE/pyproject.toml" ] || die "no wheel given and no source at $SOURCE (--wheel FILE)"
    say "building the wheel from $SOURCE"
    "$PYTHON" -m venv "$WORK/build"
    # A fixed timestamp makes the build reproducible: the same source gives the same wheel
    # (same sha256), so running this again finds the release already installed.
    SOURCE_DATE_EPOCH=315532800 \
        "$WORK/build/bin/python" -m pip wheel -q --no-deps --wheel-dir "$WORK/dist" "$SOURCE"
    WHEEL=$(find "$WORK/dist" -name 'siheyi-*.whl' -print -quit)
    [ -n "$WHEEL" ] || die "the build made no wheel"
}

read_version() {
    local name
    name=$(basename "$WHEEL")
    case "$name" in
        siheyi-*-*.whl) ;;
        *) die "$WHEEL is not a siheyi wheel" ;;
    esac
    VERSION=${name#siheyi-}
    VERSION=${VERSION%%-*}
    case "$VERSION" in
        '' | *[!0-9A-Za-z.+_]*) die "odd version '$VERSION' in $name" ;;
    esac
    SHA256=$(sha256sum "$WHEEL" | cut -d' ' -f1)
}

extras() {
    local list=()
    [ "$KIOSK" = 1 ] && list+=(device)
    [ "$KIOSK" = 1 ] && zxing_wheels && list+=(zxing)
    [ "$SERVER" = 1 ] && list+=(server)
    (IFS=,; printf '%s' "${list[*]}")
}

# zxing-cpp (the first QR decoder) has wheels for 64-bit x86_64 and aarch64 only. Asked of
# the Python itself: 32-bit Raspberry Pi OS on a Pi 4 or 5 runs a 64-bit kernel (uname and
# pip's platform_machine say aarch64), and there pip would try to build it from source.
zxing_wheels() {
    "$PYTHON" -c 'import platform, sys
sys.exit(not (sys.maxsize > 2**32 and platform.machine() in ("x86_64", "aarch64")))'
}

# Built in place, the marker written last: a release without it is half-built and redone.
# (The updater's own marker; it reuses a release whose marker names the same wheel.)
install_release() {
    RELEASE=$OPT/releases/$VERSION
    REBUILT=0
    local name wheel
    name=$(basename "$WHEEL")
    if grep -qs "\"sha256\": \"$SHA256\"" "$RELEASE/$MARKER"; then
        say "release $VERSION already installed"
        return 0
    fi
    if in_use "$VERSION" && [ -d "$RELEASE" ]; then
        [ "$FORCE" = 1 ] || die "$RELEASE is in use and was built from another wheel: \
give the new build another version, or --force to rebuild it in place"
        REBUILT=1
    fi
    rm -rf "$RELEASE" "$RELEASE.partial"
    # Copied first: pip then reads and writes the wheelhouse, never the file it was given.
    cp "$WHEEL" "$WORK/$name"
    wheel=$WORK/$name
    install -m 0644 -o 0 -g 0 "$WHEEL" "$OPT/wheelhouse/$name"
    say "release $VERSION into $RELEASE"
    local pip
    if [ -n "$PIP" ]; then
        "$PYTHON" -m venv --without-pip "$RELEASE"
        read -r -a pip <<<"$PIP"
        pip+=(--python "$RELEASE/bin/python")
    else
        "$PYTHON" -m venv "$RELEASE"
        pip=("$RELEASE/bin/python" -m pip)
    fi
    pip+=(--no-input --disable-pip-version-check)
    if [ "$DEPS" = 0 ]; then
        "${pip[@]}" install -q --no-deps --no-index "$wheel"
    else
        if [ "$OFFLINE" = 0 ]; then  # the wheelhouse: every dependency, for offline updates
            "${pip[@]}" wheel -q --wheel-dir "$OPT/wheelhouse" "${wheel}[$(extras)]"
        fi
        "${pip[@]}" install -q --no-index --find-links "$OPT/wheelhouse" "${wheel}[$(extras)]"
    fi
    [ -x "$RELEASE/bin/kiosk" ] || die "the wheel installed no kiosk command"
    printf '{"sha256": "%s", "version": "%s"}' "$SHA256" "$VERSION" >"$RELEASE/$MARKER"
    chown -R "$OWNER" "$RELEASE"
    chown -R 0:0 "$OPT/wheelhouse"
    sync
}

in_use() {
    local link
    for link in current previous; do
        [ "$(readlink "$OPT/$link" 2>/dev/null)" = "releases/$1" ] && return 0
    done
    return 1
}

# A relative link made under a temporary name and renamed over the old one: never missing.
switch_link() {
    ln -sfn "$2" "$OPT/$1.new"
    chown -h "$OWNER" "$OPT/$1.new"
    mv -T "$OPT/$1.new" "$OPT/$1"
}

switch_current() {
    local old
    old=$(readlink "$OPT/current" 2>/dev/null || true)
    CHANGED=0
    [ "$old" = "releases/$VERSION" ] && { CHANGED=$REBUILT; return 0; }
    [ -n "$old" ] && switch_link previous "$old"
    switch_link current "releases/$VERSION"
    CHANGED=1
    say "current -> releases/$VERSION${old:+ (previous -> $old)}"
}

# `kiosk` on the PATH (sudo's too): whatever release `current` is. A kiosk command that is
# not this link (another install) is left alone.
install_command() {
    local link=$ROOT/usr/local/bin/kiosk target=/opt/siheyi/current/bin/kiosk
    install -d -m 0755 "$ROOT/usr/local/bin"
    if [ -e "$link" ] && [ ! -L "$link" ]; then
        warn "$link exists and is not a link: run $target instead of kiosk"
        return 0
    fi
    [ "$(readlink "$link" 2>/dev/null)" = "$target" ] || ln -sfn "$target" "$link"
}

# -- kiosk pieces: boot guard, udev rule ---------------------------------------------------

install_boot_guard() {
    [ -f "$BOOT_GUARD" ] || die "no boot guard at $BOOT_GUARD (--boot-guard FILE)"
    [ "$BOOT_GUARD" -ef "$OPT/bin/siheyi-boot-guard" ] && return 0
    install -m 0755 -o 0 -g 0 "$BOOT_GUARD" "$OPT/bin/siheyi-boot-guard"
}

reader_rules() {
    cat <<'EOF'
# Siheyi: the ID-card reader's USB serial adapter as /dev/siheyi-reader, writable by the
# dialout group; ModemManager keeps off it (its probing would talk to the SAM).
# Written by deploy/install.sh (--reader-usb VID:PID); see docs/install.md.
EOF
    local pair vid pid
    for pair in "${READERS[@]}"; do
        vid=${pair%%:*}
        pid=${pair#*:}
        printf 'SUBSYSTEM=="tty", ATTRS{idVendor}=="%s", ATTRS{idProduct}=="%s", ' "$vid" "$pid"
        printf 'SYMLINK+="siheyi-reader", GROUP="dialout", MODE="0660", '
        printf 'ENV{ID_MM_DEVICE_IGNORE}="1"\n'
    done
}

check_readers() {
    local pair
    for pair in "${READERS[@]}"; do
        [[ "$pair" =~ ^[0-9a-fA-F]{4}:[0-9a-fA-F]{4}$ ]] || die "--reader-usb $pair: want VID:PID in hex"
    done
    READERS=("${READERS[@],,}")
}

install_udev_rule() {
    install -d -m 0755 "$ROOT/etc/udev/rules.d"
    reader_rules >"$ROOT/etc/udev/rules.d/99-siheyi-reader.rules"
    chmod 0644 "$ROOT/etc/udev/rules.d/99-siheyi-reader.rules"
    [ -n "$ROOT" ] && return 0
    udevadm control --reload-rules
    udevadm trigger --subsystem-match=tty --action=add || true
}

# -- units ---------------------------------------------------------------------------------

# A unit whose file changed is restarted below, so that its new settings apply.
install_unit() {
    local target=$ROOT/etc/systemd/system/$1.service
    install -d -m 0755 "$ROOT/etc/systemd/system"
    cmp -s "$SELF_DIR/systemd/$1.service" "$target" && return 0
    install -m 0644 "$SELF_DIR/systemd/$1.service" "$target"
    CHANGED=1
}

start_unit() {
    local unit=$1 config=$2
    [ -n "$ROOT" ] && return 0
    systemctl enable "$unit.service"
    if [ ! -f "$config" ]; then
        say "$unit enabled; write $config, then: systemctl start $unit"
    elif [ "$START" = 0 ]; then
        say "$unit enabled, not started (--no-start)"
    elif [ "$CHANGED" = 1 ]; then
        systemctl restart "$unit.service"
    else
        systemctl start "$unit.service"
    fi
}

main() {
    parse_args "$@"
    check_readers
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
        || die "$PYTHON is older than Python 3.11"
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    install_packages
    ensure_account
    make_directories
    [ -n "$WHEEL" ] || build_wheel
    [ -f "$WHEEL" ] || die "no wheel at $WHEEL"
    read_version
    install_release
    switch_current
    install_command
    [ "$KIOSK" = 1 ] && { install_boot_guard; install_udev_rule; install_unit siheyi-agent; }
    [ "$SERVER" = 1 ] && install_unit siheyi-server
    [ -z "$ROOT" ] && systemctl daemon-reload
    [ "$KIOSK" = 1 ] && start_unit siheyi-agent /etc/siheyi/kiosk.toml
    [ "$SERVER" = 1 ] && start_unit siheyi-server /etc/siheyi/server.toml
    say "siheyi $VERSION installed in $OPT"
}

main "$@"
