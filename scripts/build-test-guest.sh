#!/usr/bin/env bash
# Builds the VMM test guest (images/test-guest/guest.S, which includes net-agent.S) into OUT_DIR:
#   test-guest.elf      a static ELF64 loaded at 1 MiB whose entry point runs in 64-bit long
#                       mode, like a vmlinux;
#   test-guest.bzImage  the same program as a bzImage: a setup header (boot protocol 2.15,
#                       LOADED_HIGH, XLF_KERNEL_64) and a protected-mode payload loaded at
#                       1 MiB, entered at its 64-bit entry point (payload + 0x200).
# Needs gcc (the C preprocessor and assembler driver) and binutils (ld, objcopy). Prints
# the ELF's path.
set -euo pipefail
if [ $# -ne 1 ]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
src="$(cd "$(dirname "$0")/../images/test-guest" && pwd)"
out="$1"
for tool in gcc ld objcopy; do
  command -v "$tool" >/dev/null || { echo "error: $tool is not installed (Debian: gcc, binutils)" >&2; exit 1; }
done
mkdir -p "$out"
tmp="$(mktemp -d "$out/build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

gcc -c -nostdlib -ffreestanding -o "$tmp/guest.o" "$src/guest.S"
link() { ld -m elf_x86_64 -static -nostdlib -z noexecstack -z max-page-size=0x1000 -T "$src/link.ld" "$@"; }
link -o "$tmp/test-guest.elf" "$tmp/guest.o"

# bzImage: 2 sectors of setup (boot sector + 1), then the payload.
link --defsym=BASE=0x100200 -o "$tmp/payload.elf" "$tmp/guest.o"
objcopy -O binary "$tmp/payload.elf" "$tmp/payload.bin"
put() { # put OFFSET HEX-BYTES... : little-endian fields into the setup sectors
  local off=$1; shift
  printf "$(printf '\\x%s' "$@")" | dd of="$tmp/setup.bin" bs=1 seek=$((off)) conv=notrunc status=none
}
head -c 1024 /dev/zero > "$tmp/setup.bin"
put 0x1f1 01                      # setup_sects
put 0x1fe 55 aa                   # boot_flag
put 0x202 48 64 72 53             # header "HdrS"
put 0x206 0f 02                   # version 2.15
put 0x211 01                      # loadflags: LOADED_HIGH
put 0x214 00 00 10 00             # code32_start 0x100000
put 0x236 01 00                   # xloadflags: XLF_KERNEL_64
{ cat "$tmp/setup.bin"; head -c 512 /dev/zero; cat "$tmp/payload.bin"; } > "$tmp/test-guest.bzImage"

mv "$tmp/test-guest.elf" "$out/test-guest.elf"
mv "$tmp/test-guest.bzImage" "$out/test-guest.bzImage"
echo "$out/test-guest.elf"
