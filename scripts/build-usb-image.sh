#!/bin/sh
# Builds the bootable USB image (issue #9): write it to a stick, edit one file, boot.
#
#   scripts/build-usb-image.sh OUT.img
#
# A raw disk image, GPT, booted by UEFI firmware (Secure Boot off):
#
#   1  ESP         FAT32  EFI/BOOT/BOOTX64.EFI = systemd-boot (Debian's systemd-boot-efi),
#                         loader/entries/*.conf, omnicloud/vmlinuz (Debian's kernel) and
#                         omnicloud/initramfs.cpio.gz (scripts/build-worker-image.sh: this
#                         binary as /init, busybox, mke2fs, the kernel modules).
#   2  OMNICONFIG  FAT    omnicloud.conf, the node's settings (name, join, token, roles,
#                         ip/gw/iface) as key=value lines; a "basic data" partition, so
#                         Windows and macOS show it for editing too. `omnicloud usb
#                         prepare` adds tls/ca.crt (and tls/ca.key on the seed stick).
#   3  OMNIDATA    none   the node's state; `omnicloud init` formats it ext4 on first boot
#                         (it starts with a "blank" marker) and mounts it on every boot.
#
# Why systemd-boot: it is one file from a Debian package, copied to the removable-media path
# (no grub-install, no NVRAM entry, no embedded config or modules to get right), its
# entries are plain text a user can read and edit (and edit at boot with `e`), and it
# hands the kernel its initrd through the EFI stub that Debian's kernel has. A unified
# kernel image would need the stub and objcopy section offsets; GRUB needs grub-mkimage
# with the right module list. Secure Boot would need shim + a signed GRUB (not done).
#
# Environment: OMNICLOUD_USB_DATA_MB (data partition size, default 1024),
# OMNICLOUD_WORKER_DIR (where build-worker-image.sh's outputs go, default target/worker),
# OMNICLOUD_BIN (the binary, as for build-worker-image.sh).
# Needs (Debian packages): systemd-boot-efi, dosfstools, mtools, fdisk (sfdisk), plus what
# build-worker-image.sh needs. No root, no loop devices: the FAT filesystems are made in
# files by mkfs.fat, filled by mtools and copied into the image with dd.
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
say() { echo "build-usb-image: $*" >&2; }
die() { say "error: $*"; exit 1; }

[ $# -eq 1 ] || die "usage: $0 OUT.img"
out=$1
data_mb=${OMNICLOUD_USB_DATA_MB:-1024}
case $data_mb in '' | *[!0-9]*) die "OMNICLOUD_USB_DATA_MB: \"$data_mb\" is not a number of MiB" ;; esac
[ "$data_mb" -ge 64 ] || die "OMNICLOUD_USB_DATA_MB: at least 64 (MiB), got $data_mb"

sdboot=/usr/lib/systemd/boot/efi/systemd-bootx64.efi
[ -f "$sdboot" ] || die "$sdboot not found (apt-get install systemd-boot-efi)"
for tool in mkfs.fat:dosfstools mcopy:mtools mmd:mtools sfdisk:fdisk; do
    command -v "${tool%%:*}" >/dev/null || die "${tool%%:*} not found (apt-get install ${tool#*:})"
done

worker=$("$here/scripts/build-worker-image.sh" "${OMNICLOUD_WORKER_DIR:-$here/target/worker}")
kernel=$worker/vmlinuz
initrd=$worker/initramfs.cpio.gz

work=$(mktemp -d "${TMPDIR:-/tmp}/omnicloud-usb.XXXXXX")
trap 'rm -rf "$work"' EXIT
export MTOOLS_SKIP_CHECK=1

# --- sizes (MiB) ---
mib() { echo $(( ($(stat -L -c %s "$1") + 1048575) / 1048576 )); }
esp_mb=$(( $(mib "$kernel") + $(mib "$initrd") + 32 ))
[ "$esp_mb" -ge 100 ] || esp_mb=100
cfg_mb=16
esp_at=1
cfg_at=$((esp_at + esp_mb))
data_at=$((cfg_at + cfg_mb))
total_mb=$((data_at + data_mb + 1)) # + the backup GPT

# --- ESP ---
cmdline="panic=10 omnicloud.confpart=LABEL=OMNICONFIG omnicloud.data=LABEL=OMNIDATA"
mkdir -p "$work/loader/entries"
cat >"$work/loader/loader.conf" <<EOF
default omnicloud.conf
timeout 3
editor yes
EOF
# The last console= is the one init and the node write to: the screen by default, the
# serial port with the second entry (servers with serial-over-LAN, qemu tests).
cat >"$work/loader/entries/omnicloud.conf" <<EOF
title   omnicloud
linux   /omnicloud/vmlinuz
initrd  /omnicloud/initramfs.cpio.gz
options console=ttyS0,115200 console=tty0 $cmdline
EOF
cat >"$work/loader/entries/omnicloud-serial.conf" <<EOF
title   omnicloud (serial console)
linux   /omnicloud/vmlinuz
initrd  /omnicloud/initramfs.cpio.gz
options console=tty0 console=ttyS0,115200 $cmdline
EOF
esp=$work/esp.img
mkfs.fat -F 32 -n OMNIBOOT -C "$esp" $((esp_mb * 1024)) >/dev/null
mmd -i "$esp" ::/EFI ::/EFI/BOOT ::/loader ::/loader/entries ::/omnicloud
mcopy -i "$esp" "$sdboot" ::/EFI/BOOT/BOOTX64.EFI
mcopy -i "$esp" "$work/loader/loader.conf" ::/loader/loader.conf
mcopy -i "$esp" "$work/loader/entries/omnicloud.conf" "$work/loader/entries/omnicloud-serial.conf" ::/loader/entries/
mcopy -i "$esp" "$kernel" ::/omnicloud/vmlinuz
mcopy -i "$esp" "$initrd" ::/omnicloud/initramfs.cpio.gz

# --- config partition ---
cat >"$work/omnicloud.conf" <<'EOF'
# omnicloud node settings, read at every boot by `omnicloud init`.
#
# One key=value a line; lines starting with # are comments. Uncomment what you need.
# With nothing set, this machine starts a NEW cluster (it is the seed) on DHCP.
# The keys are the same as the kernel command line's omnicloud.* keys (which win).

# Node name: lowercase letters, digits and '-'. Default: node-<last 6 hex digits of the
# network card's MAC address>.
#name=rack-1

# The cluster to join, as HOST:PORT of one or more running nodes (gossip port 7946),
# comma-separated. Leave it out on the first machine: that one seeds the cluster.
#join=192.168.1.10:7946

# The cluster's join token, K10<CA hash>::<secret>: `omnicloud usb prepare OUT` makes the
# cluster CA and the token for all sticks at once (copy OUT/seed/* onto the seed stick's
# partition, the CA key among them: keep it like a password; OUT/join/* onto the others').
# Or a joiner takes the seed's join.token (on its data partition, after its first boot).
# Needed with join=. A seed without one makes its own (in its data dir, join.token).
#token=

# Roles: auto (default: agent where containers run, director where /dev/kvm opens,
# orchestrator by election), or a list: orchestrator,director,agent.
#roles=auto

# Network: dhcp (default) or a static IPv4 address with its prefix, and then a gateway.
#ip=dhcp
#ip=192.168.1.10/24
#gw=192.168.1.1

# The network interface (default eth0, the first card the kernel found).
#iface=eth0

# A node config file (TOML, see config/node.toml in the source) on this partition.
#config=node.toml
EOF
cfg=$work/config.img
mkfs.fat -n OMNICONFIG -C "$cfg" $((cfg_mb * 1024)) >/dev/null
mcopy -i "$cfg" "$work/omnicloud.conf" ::/omnicloud.conf

# --- the disk ---
tmp_out=$out.tmp
rm -f "$tmp_out"
truncate -s "${total_mb}M" "$tmp_out"
sfdisk --quiet --no-reread --no-tell-kernel "$tmp_out" <<EOF
label: gpt
start=$((esp_at * 2048)), size=$((esp_mb * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name="EFI system"
start=$((cfg_at * 2048)), size=$((cfg_mb * 2048)), type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name="OMNICONFIG"
start=$((data_at * 2048)), size=$((data_mb * 2048)), type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name="OMNIDATA"
EOF
dd if="$esp" of="$tmp_out" bs=1M seek="$esp_at" conv=notrunc,sparse status=none
dd if="$cfg" of="$tmp_out" bs=1M seek="$cfg_at" conv=notrunc,sparse status=none
# init formats the data partition when it starts with this marker (or zeros) only: a stick
# written over old data never has that data formatted away by mistake.
printf 'OMNICLOUD BLANK DATA PARTITION\n' | dd of="$tmp_out" bs=1M seek="$data_at" conv=notrunc status=none
mv "$tmp_out" "$out"
say "$out: ${total_mb} MiB (ESP ${esp_mb}, OMNICONFIG ${cfg_mb}, OMNIDATA ${data_mb} MiB)"
echo "$out"
