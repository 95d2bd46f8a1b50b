#!/usr/bin/env bash
# The generated udev rules and hwdb against mnsim's emulated pens.
#
#     test-udev-rules.sh MNSIM RULES HWDB SYSUSERS WORKDIR
#
# Runs in a private mount namespace (as root, or with unshare -r otherwise):
# a tmpfs over /etc/udev holds only our rules and hwdb (the distribution's
# rules in /usr/lib/udev/rules.d still run, as on a real system), the hwdb is
# compiled there with --strict, and the user and group mnd come from our
# sysusers file (systemd-sysusers --root) bind-mounted over /etc/passwd and
# /etc/group, so GROUP="mnd" resolves.  Nothing outside the namespace changes.
#
# Then, under mnsim (umockdev), `udevadm test` on every emulated device, and:
#   - no diagnostics for our rules file (parse errors come as FILE:LINE,
#     with exit status 0), proved not to be vacuous with a broken copy;
#   - the pen nodes (usbfs node of the vendor-class pen, tty of the CDC-ACM
#     pen): last GROUP = mnd's gid and last MODE = 0660 (no world access),
#     tag systemd and no uaccess, SYSTEMD_WANTS=mnd.service, the link
#     /dev/mnd/pen-SERIAL to the node, ID_MM_DEVICE_IGNORE=1, the model and
#     transport, and the hwdb names;
#   - every other device of a pen (interfaces, the CDC pen's usbfs node):
#     ID_MM_DEVICE_IGNORE=1 and nothing else from our rules;
#   - a device that is not a pen: nothing from our rules.
set -euo pipefail

fail() { printf 'test-udev-rules: FAIL: %s\n' "$*" >&2; exit 1; }

if [ $# -ne 5 ]; then
        echo "usage: $0 MNSIM RULES HWDB SYSUSERS WORKDIR" >&2
        exit 2
fi
mnsim=$1 rules=$2 hwdb=$3 sysusers=$4 workdir=$5

for f in "$mnsim" "$rules" "$hwdb" "$sysusers"; do
        [ -e "$f" ] || fail "$f does not exist (build first)"
done
for tool in udevadm systemd-hwdb systemd-sysusers unshare getent; do
        command -v "$tool" >/dev/null ||
                fail "$tool is not installed: this test needs the udev and systemd packages (apt-get install udev systemd)"
done

# ---- enter a private mount namespace -------------------------------------
if [ "${MND_UDEV_TEST_IN_NAMESPACE:-}" != 1 ]; then
        if [ "$(id -u)" -eq 0 ]; then
                ns=(unshare --mount --propagation private)
        else
                ns=(unshare --map-root-user --mount --propagation private)
        fi
        if ! err=$("${ns[@]}" true 2>&1); then
                fail "cannot create a private mount namespace (${ns[*]}: $err);" \
                     "run as root (CI does) or allow unprivileged user namespaces"
        fi
        MND_UDEV_TEST_IN_NAMESPACE=1 exec "${ns[@]}" "$0" "$@"
fi

mkdir -p "$workdir"
tmp=$(mktemp -d "$workdir/udev.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
our=/etc/udev/rules.d/$(basename "$rules")

# ---- our rules and hwdb only, in a tmpfs over /etc/udev -------------------
[ -d /etc/udev ] || fail "/etc/udev does not exist: is udev installed?"
conf=""
[ -f /etc/udev/udev.conf ] && conf=$(cat /etc/udev/udev.conf)
mount -t tmpfs -o mode=0755 mnd-udev-test /etc/udev || fail "cannot mount a tmpfs over /etc/udev"
mkdir /etc/udev/rules.d /etc/udev/hwdb.d
printf '%s\n' "$conf" >/etc/udev/udev.conf
cp "$rules" /etc/udev/rules.d/
cp "$hwdb" /etc/udev/hwdb.d/

# The compiled hwdb (/etc/udev/hwdb.bin, first in udev's search order) holds
# the distribution's entries and ours; --strict fails on any parse error.
if ! out=$(systemd-hwdb update --strict 2>&1); then
        printf '%s\n' "$out" >&2
        fail "systemd-hwdb update --strict rejected the hwdb files (above)"
fi
if grep -F "$(basename "$hwdb")" <<<"$out"; then
        fail "systemd-hwdb reported problems in $(basename "$hwdb") (above)"
fi
[ -s /etc/udev/hwdb.bin ] || fail "systemd-hwdb wrote no /etc/udev/hwdb.bin"

# ---- user and group mnd from our sysusers file ---------------------------
mkdir -p "$tmp/root/etc"
cp /etc/passwd /etc/group "$tmp/root/etc/"
if ! out=$(systemd-sysusers --root="$tmp/root" "$sysusers" 2>&1); then
        printf '%s\n' "$out" >&2
        fail "systemd-sysusers rejected $sysusers (above)"
fi
grep -q '^mnd:' "$tmp/root/etc/group" || fail "$sysusers does not create group mnd"
grep -q '^mnd:[^:]*:[0-9]*:[0-9]*:[^:]*:/var/lib/mnd:' "$tmp/root/etc/passwd" ||
        fail "$sysusers does not create user mnd with home /var/lib/mnd: $(grep '^mnd:' "$tmp/root/etc/passwd" || echo none)"
mount --bind "$tmp/root/etc/passwd" /etc/passwd
mount --bind "$tmp/root/etc/group" /etc/group
gid=$(getent group mnd | cut -d: -f3)
[ -n "$gid" ] || fail "group mnd does not resolve after bind-mounting the sysusers result over /etc/group"

# ---- udevadm test on every emulated device, under mnsim -------------------
cat >"$tmp/inside.sh" <<'EOF'
set -eu
out=$1 our=$2
: >"$out/devices"
for d in /sys/bus/usb/devices/*; do
        name=${d##*/}
        if [ -f "$d/idVendor" ]; then
                echo "$name device $(cat "$d/idVendor") $(cat "$d/idProduct")" >>"$out/devices"
        elif [ -f "$d/bInterfaceNumber" ]; then
                echo "$name interface" >>"$out/devices"
        fi
        udevadm test --action=add "$d" >"$out/$name.out" 2>&1
done
for t in /sys/class/tty/*; do
        udevadm test --action=add "$t" >"$out/${t##*/}.out" 2>&1
done
for l in /dev/mnd/*; do
        # One level only: under umockdev the tty itself is a link to a pty.
        [ -L "$l" ] && echo "${l##*/} $(realpath --no-symlinks -m "/dev/mnd/$(readlink "$l")")" >>"$out/links"
done
: >>"$out/links"
# The check below must see a broken rule: a key udev does not know.
printf 'KERNEL=="ttyACM*", MND_NO_SUCH_KEY="1"\n' >>"$our"
udevadm test --action=add /sys/class/tty/ttyACM0 >"$out/broken.out" 2>&1
EOF
mkdir "$tmp/out" "$tmp/sim"
TMPDIR=$tmp/sim "$mnsim" --usb 1 --serial 1 --seed 7 -- sh "$tmp/inside.sh" "$tmp/out" "$our" ||
        fail "mnsim or udevadm test failed (exit $?)"
out=$tmp/out

# ---- assertions ----------------------------------------------------------
checks=0
ok() { checks=$((checks + 1)); }

# Diagnostics about our file: "FILE:LINE message" (parsing) or
# "DEV: FILE:LINE Failed/Invalid/..." (applying).
diagnostics() {
        grep -E "(^|: )$our:[0-9]+ " "$1" |
                grep -E "^$our:|Fail|fail|Invalid|invalid|Unknown|unknown|error|Error|ignoring" |
                grep -v "Skipping builtin" || true
}
d=$(diagnostics "$out/broken.out")
[ -n "$d" ] || fail "a broken rule produced no diagnostic from udevadm test: the syntax check would see nothing; output: $(cat "$out/broken.out")"
ok

prop() { sed -n "s/^$2=//p" "$1" | tail -n 1; }
# The last GROUP or MODE that any rule assigned: "DEV: FILE:LINE GROUP 995".
last_assign() { grep -E "^[^ ]+: [^ ]+:[0-9]+ $2 " "$1" | tail -n 1 | sed -E "s/.* $2 //"; }
assigned_by_us() { grep -E "^[^ ]+: $our:[0-9]+ $2( |$)" "$1" || true; }

expect_prop() { # FILE WHAT KEY VALUE
        local v
        v=$(prop "$1" "$3")
        [ "$v" = "$4" ] || fail "$2: $3 is '$v', expected '$4'"
        ok
}
expect_no_prop() { # FILE WHAT KEY
        local v
        v=$(prop "$1" "$3")
        [ -z "$v" ] || fail "$2: $3 is '$v', expected it unset"
        ok
}
expect_clean() { # FILE WHAT
        local d
        d=$(diagnostics "$1")
        [ -z "$d" ] || fail "$2: udevadm reported problems with $our:"$'\n'"$d"
        [ -s "$1" ] && grep -q '^DEVPATH=' "$1" || fail "$2: udevadm test printed no properties: $(tail -n 20 "$1")"
        ok
}

pen_node() { # FILE WHAT SERIAL MODEL TRANSPORT DB_MODEL
        local f=$1 what=$2 serial=$3 v devname link
        expect_clean "$f" "$what"
        v=$(last_assign "$f" GROUP)
        [ "$v" = "$gid" ] || fail "$what: the last GROUP assigned is '$v', expected mnd's gid $gid"
        [ -n "$(assigned_by_us "$f" GROUP)" ] || fail "$what: GROUP does not come from $our"
        ok
        v=$(last_assign "$f" MODE)
        [ "$v" = 0660 ] || fail "$what: the last MODE assigned is '$v', expected 0660 (group mnd only, no world access)"
        [ -n "$(assigned_by_us "$f" MODE)" ] || fail "$what: MODE does not come from $our"
        ok
        v=$(prop "$f" TAGS)
        case $v in *:systemd:*) ok ;; *) fail "$what: TAGS '$v' lack systemd" ;; esac
        case $v in *:uaccess:*) fail "$what: TAGS '$v' include uaccess: session users would get the pen" ;; *) ok ;; esac
        v=$(prop "$f" SYSTEMD_WANTS)
        case " $v " in *" mnd.service "*) ok ;; *) fail "$what: SYSTEMD_WANTS is '$v', expected it to include mnd.service" ;; esac
        v=$(prop "$f" DEVLINKS)
        case " $v " in *" /dev/mnd/pen-$serial "*) ok ;; *) fail "$what: DEVLINKS '$v' lack /dev/mnd/pen-$serial" ;; esac
        devname=$(prop "$f" DEVNAME)
        link=$(sed -n "s|^pen-$serial ||p" "$out/links")
        [ -n "$devname" ] && [ "$link" = "$devname" ] ||
                fail "$what: /dev/mnd/pen-$serial points to '$link', expected the node '$devname'"
        ok
        expect_prop "$f" "$what" ID_MM_DEVICE_IGNORE 1
        expect_prop "$f" "$what" MND_PEN_SERIAL "$serial"
        expect_prop "$f" "$what" MND_PEN_MODEL "$4"
        expect_prop "$f" "$what" MND_PEN_TRANSPORT "$5"
        expect_prop "$f" "$what" ID_VENDOR_FROM_DATABASE "Microneedle Devices"
        expect_prop "$f" "$what" ID_MODEL_FROM_DATABASE "$6"
}

not_a_pen_node() { # FILE WHAT MM_IGNORE(1|"")
        local f=$1 what=$2
        expect_clean "$f" "$what"
        for key in GROUP MODE LINK; do
                [ -z "$(assigned_by_us "$f" "$key")" ] || fail "$what: $our assigns $key: $(assigned_by_us "$f" "$key")"
                ok
        done
        expect_no_prop "$f" "$what" MND_PEN_TRANSPORT
        expect_no_prop "$f" "$what" MND_PEN_SERIAL
        case " $(prop "$f" SYSTEMD_WANTS) " in
        *" mnd.service "*) fail "$what: SYSTEMD_WANTS includes mnd.service" ;;
        *) ok ;;
        esac
        if [ -n "$3" ]; then
                expect_prop "$f" "$what" ID_MM_DEVICE_IGNORE 1
        else
                expect_no_prop "$f" "$what" ID_MM_DEVICE_IGNORE
        fi
}

usb_pen=$(awk '$2 == "device" && $3 == "1209" && $4 == "0001" { print $1 }' "$out/devices")
cdc_pen=$(awk '$2 == "device" && $3 == "1209" && $4 == "0002" { print $1 }' "$out/devices")
[ -n "$usb_pen" ] && [ -n "$cdc_pen" ] ||
        fail "mnsim's testbed lacks the two pens (1209:0001 and 1209:0002): $(cat "$out/devices")"
[ -f "$out/ttyACM0.out" ] || fail "mnsim's testbed has no ttyACM0"

pen_node "$out/$usb_pen.out" "vendor-class pen $usb_pen (usbfs node)" MNU-0001 MN-1 usb "MN-1 Microneedling Pen"
pen_node "$out/ttyACM0.out" "CDC-ACM pen ttyACM0" MNS-0001 MN-1S serial "MN-1S Microneedling Pen (serial)"
not_a_pen_node "$out/$cdc_pen.out" "CDC-ACM pen's usbfs node $cdc_pen (mnd opens the tty, not this)" 1
for i in $(awk '$2 == "interface" { print $1 }' "$out/devices"); do
        not_a_pen_node "$out/$i.out" "pen interface $i" 1
done
not_a_pen_node "$out/tty.out" "the virtual tty /sys/class/tty/tty (not a pen)" ""

echo "test-udev-rules: $checks checks passed (group mnd = gid $gid)"
