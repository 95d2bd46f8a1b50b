#!/usr/bin/env bash
# `cmake --install BUILD --prefix /usr` into a DESTDIR: exactly the files in
# EXPECTED (see install-files.txt), each where Debian looks for it, plus
# checks of what the system files say once installed.
#
#     test-install.sh BUILD EXPECTED LIBDIR VERSION WORKDIR
set -euo pipefail

fail() { printf 'test-install: FAIL: %s\n' "$*" >&2; exit 1; }

if [ $# -ne 5 ]; then
        echo "usage: $0 BUILD EXPECTED LIBDIR VERSION WORKDIR" >&2
        exit 2
fi
build=$1 expected=$2 libdir=$3 version=$4 workdir=$5

mkdir -p "$workdir"
tmp=$(mktemp -d "$workdir/install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
dest=$tmp/dest

if ! DESTDIR=$dest cmake --install "$build" --prefix /usr >"$tmp/log" 2>&1; then
        cat "$tmp/log" >&2
        fail "cmake --install $build --prefix /usr failed (above)"
fi

# Everything the install wrote, as CMake records it (without DESTDIR), must be
# below the prefix /usr, and must be in DESTDIR.
manifest=$build/install_manifest.txt
[ -f "$manifest" ] || fail "cmake --install wrote no $manifest"
outside=$(grep -v '^/usr/' "$manifest" || true)
[ -z "$outside" ] || fail "the install wrote outside the prefix /usr:"$'\n'"$outside"
while IFS= read -r f; do
        [ -e "$dest$f" ] || fail "$f was installed, but not into DESTDIR"
done <"$manifest"

sed -e 's/#.*//' -e 's/[[:space:]]*$//' -e '/^$/d' \
    -e "s|@LIBDIR@|$libdir|g" -e "s|@VERSION@|$version|g" "$expected" | LC_ALL=C sort >"$tmp/expected"
dups=$(uniq -d "$tmp/expected")
[ -z "$dups" ] || fail "$expected lists these twice: $dups"
(cd "$dest" && find . \( -type f -o -type l \) -printf '%P\n') | LC_ALL=C sort >"$tmp/installed"
# Directories that hold no file at all would be clutter too.
empty=$(cd "$dest" && find . -mindepth 1 -type d -empty -printf '%P\n')
[ -z "$empty" ] || fail "the install created empty directories: $empty"

missing=$(LC_ALL=C comm -23 "$tmp/expected" "$tmp/installed")
extra=$(LC_ALL=C comm -13 "$tmp/expected" "$tmp/installed")
if [ -n "$missing" ] || [ -n "$extra" ]; then
        [ -z "$missing" ] || printf 'expected but not installed (not built yet, or installed elsewhere):\n%s\n' "$missing" >&2
        [ -z "$extra" ] || printf 'installed but not in %s (add it there if it belongs):\n%s\n' "$expected" "$extra" >&2
        fail "the installed files differ from $expected (above)"
fi

# Modes: programs executable, data files 0644, nothing group- or world-writable.
for f in usr/sbin/mnd usr/bin/mnsim usr/bin/mnctl; do
        [ -x "$dest/$f" ] || fail "$f is not executable"
done
writable=$(cd "$dest" && find . -perm /022 ! -type l -printf '%P %m\n')
[ -z "$writable" ] || fail "group- or world-writable after install: $writable"
for f in usr/lib/udev/rules.d/70-mnd-pens.rules usr/lib/udev/hwdb.d/70-mnd-pens.hwdb \
         usr/lib/systemd/system/mnd.service usr/lib/sysusers.d/mnd.conf \
         usr/share/dbus-1/system.d/org.microneedle.Mnd1.conf \
         usr/share/dbus-1/system-services/org.microneedle.Mnd1.service \
         usr/share/polkit-1/actions/org.microneedle.mnd.policy; do
        m=$(stat -c %a "$dest/$f")
        [ "$m" = 644 ] || fail "$f has mode $m, expected 644"
done

# The unit and the activation file name the daemon where it was installed.
grep -qx 'ExecStart=/usr/sbin/mnd' "$dest/usr/lib/systemd/system/mnd.service" ||
        fail "the installed unit does not say ExecStart=/usr/sbin/mnd: $(grep ExecStart "$dest/usr/lib/systemd/system/mnd.service")"
act=$dest/usr/share/dbus-1/system-services/org.microneedle.Mnd1.service
for line in 'Name=org.microneedle.Mnd1' 'Exec=/usr/sbin/mnd' 'User=mnd' 'SystemdService=mnd.service'; do
        grep -qx "$line" "$act" || fail "the installed activation file lacks '$line'"
done
if grep -q '@[A-Z_]*@' "$dest/usr/lib/systemd/system/mnd.service" "$act"; then
        fail "unsubstituted @VARIABLES@ in the installed unit or activation file"
fi

echo "test-install: $(wc -l <"$tmp/installed") files installed, exactly as listed in $(basename "$expected")"
