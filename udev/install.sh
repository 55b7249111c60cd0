#!/usr/bin/env bash
# Install pivtool's udev rule (smart-card readers for pcscd and the seat user) and polkit
# rule (a group may use pcscd, also over SSH). Dry run unless --apply; idempotent.
#
#   udev/install.sh                      show what would change
#   sudo udev/install.sh --apply         install into /
#   udev/install.sh --apply --root DIR   install into DIR (packaging, tests)
#   udev/install.sh --group smartcard    let group "smartcard" use pcscd instead of "pivtool"
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=/
group=pivtool
apply=0

usage() {
    sed -n '2,8p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --apply) apply=1 ;;
        --root) [ $# -ge 2 ] || { echo "install.sh: --root needs a directory" >&2; exit 2; }
                root=$2; shift ;;
        --root=*) root=${1#--root=} ;;
        --group) [ $# -ge 2 ] || { echo "install.sh: --group needs a name" >&2; exit 2; }
                 group=$2; shift ;;
        --group=*) group=${1#--group=} ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# The group name goes into JavaScript: allow only what useradd/groupadd allow.
if ! [[ $group =~ ^[A-Za-z_][A-Za-z0-9_.-]{0,31}$ ]]; then
    echo "install.sh: invalid group name: $group" >&2
    exit 2
fi
if [ ! -d "$root" ]; then
    echo "install.sh: --root $root is not a directory" >&2
    exit 2
fi
root=$(cd "$root" && pwd)
prefix=${root%/}   # "" for /

udev_src=$here/70-pivtool-smartcard.rules
polkit_src=$here/50-pivtool-pcscd.rules
udev_dst=$prefix/etc/udev/rules.d/70-pivtool-smartcard.rules
polkit_dst=$prefix/etc/polkit-1/rules.d/50-pivtool-pcscd.rules

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$udev_src" "$tmp/udev"
sed "s/^\(    var PIVTOOL_GROUP = \)\"pivtool\";\$/\1\"$group\";/" "$polkit_src" >"$tmp/polkit"
if ! grep -q "^    var PIVTOOL_GROUP = \"$group\";\$" "$tmp/polkit"; then
    echo "install.sh: could not set the group in $polkit_src" >&2
    exit 1
fi

changes=0
udev_changed=0
verb() { if [ "$apply" = 1 ]; then echo "$1"; else echo "would $2"; fi; }

# install_file NEW DEST: make DEST (mode 0644, directories 0755) hold NEW's bytes.
install_file() {
    local new=$1 dst=$2 mode
    if [ -f "$dst" ] && cmp -s "$new" "$dst"; then
        mode=$(stat -c %a "$dst")
        if [ "$mode" = 644 ]; then
            echo "unchanged: $dst"
            return 1
        fi
        verb "fixed mode $mode -> 0644: $dst" "fix mode $mode -> 0644: $dst"
        [ "$apply" = 1 ] && chmod 0644 "$dst"
        changes=$((changes + 1))
        return 0
    fi
    if [ -e "$dst" ]; then
        verb "updated: $dst" "update: $dst"
        [ "$apply" = 0 ] && { diff -u "$dst" "$new" | sed '1,2d; s/^/    /' || true; }
    else
        verb "installed: $dst" "install: $dst"
    fi
    if [ "$apply" = 1 ]; then
        mkdir -p -m 0755 "$(dirname "$dst")"
        # Write next to the target and rename: udev and polkit never see half a file.
        install -m 0644 "$new" "$dst.pivtool-new"
        mv -f "$dst.pivtool-new" "$dst"
    fi
    changes=$((changes + 1))
    return 0
}

install_file "$tmp/udev" "$udev_dst" && udev_changed=1
install_file "$tmp/polkit" "$polkit_dst" || true

if ! grep -q "^$group:" "$prefix/etc/group" 2>/dev/null; then
    echo "note: group $group does not exist in $prefix/etc/group; create it and add the users:"
    echo "    groupadd --system $group && usermod -aG $group USER   (then log in again)"
fi

if [ "$changes" = 0 ]; then
    echo "no changes"
elif [ "$apply" = 0 ]; then
    echo "$changes change(s) to make; run again with --apply"
else
    echo "$changes change(s) made"
    if [ "$root" = / ] && [ "$udev_changed" = 1 ] && command -v udevadm >/dev/null; then
        udevadm control --reload-rules
        udevadm trigger --subsystem-match=usb --action=change
        echo "udev rules reloaded; polkit reads its rules.d by itself"
    fi
fi
