#!/usr/bin/env bash
# Installs the Debian 12 packages mnd needs to build, test and run.
# Idempotent: asks apt-get only for what is missing (and runs as root or via sudo).
set -euo pipefail

packages=(
        # build
        build-essential cmake ninja-build pkg-config
        # libraries
        libusb-1.0-0-dev libserialport-dev libsystemd-dev libglib2.0-dev libinih-dev libsqlite3-dev libsodium-dev
        libumockdev-dev umockdev dbus-daemon scdoc
        # tests: unit framework, memory checking, fuzzing (clang + libFuzzer runtime)
        libcmocka-dev valgrind clang libclang-rt-14-dev python3
        # mnctl: its shell completion's install directory and tests, busctl for its benchmark
        bash-completion systemd
        # system integration tests: udevadm and udev.pc, a D-Bus client acting as another
        # user, the sqlite3 shell for tampering with an audit database on purpose, a fake
        # polkitd (python3-dbusmock's polkitd template) for the polkit test
        udev python3-dbus python3-gi sqlite3 python3-dbusmock
        # tests that slow a process down (strace), make a file immutable (chattr), watch the
        # bus (dbus-monitor) or find a child process (pgrep)
        strace e2fsprogs dbus-bin procps
)

missing=()
for p in "${packages[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
                missing+=("$p")
        fi
done

if [ ${#missing[@]} -eq 0 ]; then
        echo "install-deps: all ${#packages[@]} packages present"
        exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
        sudo="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
