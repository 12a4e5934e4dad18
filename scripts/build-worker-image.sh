#!/bin/sh
# Builds the worker VM image the director boots (issue #6, the bootstrapped model):
#
#   scripts/build-worker-image.sh [OUT_DIR]      (default: target/worker)
#
#   OUT_DIR/initramfs.cpio.gz  /init = the omnicloud binary ($OMNICLOUD_BIN, default
#                              target/release/omnicloud, else target/debug/omnicloud) and its
#                              shared libraries; busybox (ip, udhcpc, sh for a rescue shell);
#                              /etc/udhcpc.script. As PID 1 the binary runs `omnicloud init`:
#                              it reads omnicloud.* keys from the kernel command line, brings
#                              the network up and starts `omnicloud node` (joining as an agent).
#   OUT_DIR/vmlinuz            Debian's linux-image-amd64 kernel (a bzImage), fetched with
#                              `apt-get download` unless OMNICLOUD_WORKER_KERNEL names one.
#   OUT_DIR/contents.txt       the initramfs file list.
#   The initramfs also carries the kernel modules a worker needs (virtio, ext4, vfat,
#   bridge/veth/netfilter for containers, common NICs and disks, USB storage for the USB
#   image) and /etc/modules, which /init loads first; and e2fsprogs' mke2fs (with its
#   libraries), which formats the USB image's data partition on first boot; and for the
#   agent's container networking iproute2's `ip` (busybox's has no -batch), util-linux's
#   nsenter (busybox's would run its own ip applet inside) and iptables
#   (the legacy backend: the image carries ip_tables/iptable_nat, not nf_tables), in /bin,
#   the search path of a process started without PATH.
#   scripts/build-usb-image.sh puts this kernel and initramfs on a bootable disk image.
#
# The initramfs is rebuilt only when the binary changed. Needs sh, cpio (busybox's), gzip,
# ldd, dpkg-deb and apt-get (for the kernel), mke2fs (e2fsprogs), ip (iproute2),
# xtables-legacy-multi (iptables), nsenter (util-linux).
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/target/worker}
mkdir -p "$out/.build"
out=$(cd "$out" && pwd)
build=$out/.build

say() { echo "build-worker-image: $*" >&2; }
die() { say "error: $*"; exit 1; }
. "$here/scripts/lib/busybox.sh"

bin=${OMNICLOUD_BIN:-}
if [ -z "$bin" ]; then
    for c in "$here/target/release/omnicloud" "$here/target/debug/omnicloud"; do
        [ -x "$c" ] && { bin=$c; break; }
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] || die "omnicloud binary not found (cargo build, or set OMNICLOUD_BIN)"
busybox=$(find_busybox)

# --- kernel and its modules ---
# Debian's kernel has its disk, filesystem, network and netfilter drivers as modules: the
# initramfs carries the ones a worker needs (WORKER_MODULES and their dependencies) and
# /init loads them (omnicloud init, /etc/modules).
# ext4 asks for crc32c through the crypto API (not in modules.dep); vfat mounts with the
# kernel's default iocharset (ascii on Debian).
WORKER_MODULES="virtio_mmio virtio_pci virtio_blk virtio_net virtio_console crc32c_generic
crc32c_intel ext4 vfat nls_cp437 nls_ascii nls_iso8859_1 nls_utf8 overlay bridge br_netfilter veth tun
nf_nat nf_conntrack iptable_nat iptable_filter ip_tables xt_MASQUERADE xt_conntrack
xt_addrtype e1000 e1000e igb r8169 ahci sd_mod nvme usb_storage uas xhci_pci ehci_pci
usbhid hid_generic"
tree=$build/kernel-tree
if [ -n "${OMNICLOUD_WORKER_KERNEL:-}" ]; then
    cp "$OMNICLOUD_WORKER_KERNEL" "$out/vmlinuz"
elif [ ! -d "$tree/lib/modules" ] || [ ! -f "$out/vmlinuz" ]; then
    deb_dir=$build/kernel
    rm -rf "$deb_dir" "$tree" && mkdir -p "$deb_dir" "$tree"
    kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/{print $2; exit}'; }
    pkg=$(kernel_pkg)
    if [ -z "$pkg" ] && [ "$(id -u)" = 0 ]; then
        apt-get update -qq >/dev/null 2>&1 || true
        pkg=$(kernel_pkg)
    fi
    [ -n "$pkg" ] || die "apt-cache knows no linux-image-amd64 (run apt-get update)"
    (cd "$deb_dir" && apt-get download "$pkg" >/dev/null 2>&1) || die "apt-get download $pkg failed"
    dpkg-deb -x "$deb_dir"/*.deb "$tree"
    cp "$tree"/boot/vmlinuz-* "$out/vmlinuz"
    rm -rf "$deb_dir"
    say "kernel $pkg"
fi
kver=$(ls "$tree/lib/modules" 2>/dev/null | head -n1)
if [ -n "$kver" ] && [ ! -f "$tree/lib/modules/$kver/modules.dep" ]; then
    "$busybox" depmod -b "$tree" "$kver"
fi

# --- initramfs ---
mke2fs=$(command -v mke2fs || echo /sbin/mke2fs)
[ -x "$mke2fs" ] || die "mke2fs not found (apt-get install e2fsprogs)"
iproute=/bin/ip
[ -x "$iproute" ] && ! [ -L "$iproute" ] || iproute=/usr/bin/ip
[ -x "$iproute" ] || die "ip not found (apt-get install iproute2)"
xtables=/usr/sbin/xtables-legacy-multi
[ -x "$xtables" ] || die "$xtables not found (apt-get install iptables)"
nsenter=$(command -v nsenter || echo /usr/bin/nsenter)
[ -x "$nsenter" ] || die "nsenter not found (apt-get install util-linux)"
xt_ext=$(readlink -f "$(dirname "$(ldd "$xtables" | awk '/libxtables/{print $3}')")/xtables")
libs=$(ldd "$bin" "$mke2fs" "$iproute" "$xtables" "$nsenter" 2>/dev/null | awk '/=> \//{print $3} /^[ \t]*\// && !/:$/{print $1}' | sort -u)
stamp="$(stat -L -c '%s %Y %i' "$bin") $bin $(stat -L -c '%s %Y' "$busybox") $(cat "$0" | cksum) $kver"
if [ -f "$out/initramfs.cpio.gz" ] && [ -f "$build/initramfs.stamp" ] \
    && [ "$(cat "$build/initramfs.stamp")" = "$stamp" ]; then
    say "initramfs unchanged"
else
    root=$build/root
    rm -rf "$root"
    mkdir -p "$root/bin" "$root/sbin" "$root/etc" "$root/dev" "$root/proc" "$root/sys" \
        "$root/run" "$root/tmp" "$root/var/lib/omnicloud" "$root/root"
    cp "$bin" "$root/init"
    chmod 755 "$root/init"
    ln -s /init "$root/bin/omnicloud"
    for l in $libs; do
        mkdir -p "$root$(dirname "$l")"
        cp -L "$l" "$root$l"
    done
    cp "$busybox" "$root/bin/busybox"
    cp "$mke2fs" "$root/sbin/mke2fs"
    [ -f /etc/mke2fs.conf ] && cp /etc/mke2fs.conf "$root/etc/mke2fs.conf"
    for applet in sh udhcpc mount umount ls cat ps modprobe insmod lsmod; do
        ln -s busybox "$root/bin/$applet"
    done
    cp "$iproute" "$root/bin/ip"
    cp "$nsenter" "$root/bin/nsenter"
    cp "$xtables" "$root/bin/xtables-legacy-multi"
    for t in iptables iptables-save iptables-restore; do
        ln -s xtables-legacy-multi "$root/bin/$t"
    done
    if [ -d "$xt_ext" ]; then
        mkdir -p "$root$xt_ext"
        cp "$xt_ext"/*.so "$root$xt_ext/"
    fi
    # udhcpc calls this with the lease in the environment.
    cat >"$root/etc/udhcpc.script" <<'SCRIPT'
#!/bin/busybox sh
case "$1" in
  deconfig) /bin/busybox ip addr flush dev "$interface"; /bin/busybox ip link set "$interface" up ;;
  bound|renew)
    /bin/busybox ip addr flush dev "$interface"
    /bin/busybox ip addr add "$ip/${mask:-24}" dev "$interface"
    for r in $router; do /bin/busybox ip route add default via "$r" dev "$interface"; break; done
    : >/etc/resolv.conf
    for d in $dns; do echo "nameserver $d" >>/etc/resolv.conf; done ;;
esac
SCRIPT
    chmod 755 "$root/etc/udhcpc.script"
    if [ -n "$kver" ]; then
        # The modules and everything they depend on, by modules.dep; then /etc/modules.
        mdir=lib/modules/$kver
        need=
        for m in $WORKER_MODULES; do
            pattern=$(echo "$m" | sed 's/[-_]/[-_]/g')
            line=$(grep -E "/$pattern\.ko:" "$tree/$mdir/modules.dep" | head -n1)
            [ -n "$line" ] || { say "no module $m in $kver (built in?)"; continue; }
            need="$need ${line%%:*} ${line#*:}"
            echo "$m" >>"$root/etc/modules"
        done
        for f in $(echo $need | tr ' ' '\n' | sort -u); do
            mkdir -p "$root/$mdir/$(dirname "$f")"
            cp "$tree/$mdir/$f" "$root/$mdir/$f"
        done
        cp "$tree/$mdir/modules.order" "$tree/$mdir/modules.builtin" "$root/$mdir/" 2>/dev/null || true
        "$busybox" depmod -b "$root" "$kver"
    fi
    printf 'root:x:0:0:root:/root:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    (cd "$root" && find . | sort) >"$out/contents.txt"
    (cd "$root" && find . | sort | "$busybox" cpio -o -H newc 2>/dev/null) | gzip -n -1 >"$build/initramfs.cpio.gz"
    mv "$build/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
    rm -rf "$root"
    echo "$stamp" >"$build/initramfs.stamp"
    say "initramfs $(du -h "$out/initramfs.cpio.gz" | cut -f1) ($(wc -l <"$out/contents.txt") entries)"
fi

echo "$out"
