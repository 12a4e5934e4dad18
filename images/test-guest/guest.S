/*
 * omnicloud test guest: a tiny x86-64 program that boots through the same Linux 64-bit boot
 * protocol as a vmlinux under omnicloud's VMM (src/vmm), and reports what it was given.
 *
 * Entry state (set by the VMM, as for a Linux kernel): 64-bit long mode, paging on with the
 * low 4 GiB identity-mapped, interrupts off, %rsi = the boot_params "zero page".
 *
 * It prints on the 16550 serial port (COM1, 0x3f8), polled:
 *   omnicloud test guest
 *   cmdline: <the command line at boot_params.hdr.cmd_line_ptr (0x228)>
 *   e820 entries: N                                (boot_params.e820_entries, 0x1e8)
 *   e820: 0x<addr 16 hex> 0x<size 16 hex> <type>   (one per entry of the table at 0x2d0)
 *   mptable: N cpus                                (processor entries of the MP table found
 *                                                   in the last KiB below 640 KiB)
 *   virtio-blk: 0x<mmio base> capacity <sectors>   (device from virtio_mmio.device=...@0x..)
 *   sector 0: <text of sector 0 up to the first newline or NUL, at most 64 bytes>
 *   sector 1: <same for sector 1>
 *   sector 2 written, status <n>                    (only with "omnicloud.write" on the cmdline:
 *                                                   writes "written by the test guest\n" there)
 *   initrd: 0x<addr> <size>: <its first line>      (only when the VMM loaded an initrd:
 *                                                   boot_params.hdr.ramdisk_image/_size)
 * with "omnicloud.net" on the command line (virtio-net, device id 1):
 *   virtio-net: 0x<mmio base> mac <aa:bb:cc:dd:ee:ff from config space>
 *   net tx: 60 bytes                                (one frame sent: to ff:ff:ff:ff:ff:ff from
 *                                                   its MAC, ethertype 0x88b5, payload
 *                                                   "hello from the test guest", zero-padded)
 *   net rx: <payload of the first frame received with ethertype 0x88b5, up to the first
 *           NUL or newline, at most 64 bytes; other frames are ignored>
 *           or "net rx: timeout" after about 2^35 TSC cycles (~10 s)
 *   (or "virtio-net: none" / "virtio-net: unusable device")
 * with "omnicloud.agent" (the guest-agent channel, COM2 at 0x2f8):
 *   writes {"hello":"test-guest"} and a newline to COM2, reads one line from COM2 and prints
 *   agent rx: <that line, at most 120 bytes>          (or "agent rx: timeout", ~10 s)
 * then, if the command line holds "omnicloud.hold", prints "holding" and halts with
 * interrupts off (the VM stays up, using no CPU, until its VMM is ended); if it holds
 * "omnicloud.wait", waits for one byte on the serial input
 * and prints "got <byte>"; finally it powers off (16-bit write of 0x2000 to port 0x604), or
 * with "omnicloud.reset" on the command line resets (0xfe to the i8042 command port 0x64).
 *
 * Devices are found by id among the virtio_mmio.device=4K@<base>:<irq> entries of the
 * command line (the VMM announces block first, then net). The virtio-blk device is driven
 * through virtio-mmio version 2 with one split virtqueue, virtio-net with two (receive,
 * transmit; 4 receive buffers of 2 KiB), all polled (no interrupts). The net driver and the
 * agent channel live in net-agent.S, included at the end.
 * Build: scripts/build-test-guest.sh OUT_DIR.
 */

#define COM1            0x3f8
#define COM1_LSR        0x3fd
#define POWEROFF_PORT   0x604
#define POWEROFF_VALUE  0x2000
#define I8042_COMMAND   0x64
#define I8042_RESET     0xfe

#define BP_E820_ENTRIES 0x1e8
#define BP_CMD_LINE_PTR 0x228
#define BP_RAMDISK_IMAGE 0x218
#define BP_RAMDISK_SIZE 0x21c
#define BP_E820_TABLE   0x2d0

#define VIRTIO_MAGIC          0x000
#define VIRTIO_VERSION        0x004
#define VIRTIO_DEVICE_ID      0x008
#define VIRTIO_DEV_FEATURES   0x010
#define VIRTIO_DEV_FEAT_SEL   0x014
#define VIRTIO_DRV_FEATURES   0x020
#define VIRTIO_DRV_FEAT_SEL   0x024
#define VIRTIO_QUEUE_SEL      0x030
#define VIRTIO_QUEUE_NUM_MAX  0x034
#define VIRTIO_QUEUE_NUM      0x038
#define VIRTIO_QUEUE_READY    0x044
#define VIRTIO_QUEUE_NOTIFY   0x050
#define VIRTIO_STATUS         0x070
#define VIRTIO_QUEUE_DESC_LO  0x080
#define VIRTIO_QUEUE_DESC_HI  0x084
#define VIRTIO_QUEUE_AVAIL_LO 0x090
#define VIRTIO_QUEUE_AVAIL_HI 0x094
#define VIRTIO_QUEUE_USED_LO  0x0a0
#define VIRTIO_QUEUE_USED_HI  0x0a4
#define VIRTIO_CONFIG         0x100

#define QSIZE 8

        .code64
        .section .text
        .globl _start
_start:
        cli
        cld
        lea     stack_top(%rip), %rsp
        mov     %rsi, %r15                      /* boot_params */

        lea     msg_banner(%rip), %rdi
        call    puts

        /* the command line */
        lea     msg_cmdline(%rip), %rdi
        call    puts
        mov     BP_CMD_LINE_PTR(%r15), %eax
        mov     %rax, %r14                      /* cmdline (physical = virtual) */
        mov     %rax, %rdi
        call    puts
        call    newline

        /* the e820 map */
        movzbl  BP_E820_ENTRIES(%r15), %r12d
        lea     msg_e820n(%rip), %rdi
        call    puts
        mov     %r12, %rdi
        call    putdec
        call    newline
        lea     BP_E820_TABLE(%r15), %r13
1:      test    %r12d, %r12d
        jz      2f
        lea     msg_e820(%rip), %rdi
        call    puts
        mov     0(%r13), %rdi
        call    puthex64
        call    space
        mov     8(%r13), %rdi
        call    puthex64
        call    space
        mov     16(%r13), %edi
        call    putdec
        call    newline
        add     $20, %r13
        dec     %r12d
        jmp     1b
2:
        call    mptable
        call    virtio_blk
        call    initrd
        call    virtio_net
        call    agent

        /* optional: stay up (halted, no CPU use) until the VMM is ended from outside */
        mov     %r14, %rdi
        lea     str_hold(%rip), %rsi
        call    strstr
        test    %rax, %rax
        jz      6f
        lea     msg_holding(%rip), %rdi
        call    puts
        jmp     halt
6:
        /* optional: wait for one byte of serial input */
        mov     %r14, %rdi
        lea     str_wait(%rip), %rsi
        call    strstr
        test    %rax, %rax
        jz      3f
        lea     msg_waiting(%rip), %rdi
        call    puts
        mov     $COM1_LSR, %dx
4:      in      %dx, %al
        test    $1, %al
        jnz     5f
        pause
        jmp     4b
5:      mov     $COM1, %dx
        in      %dx, %al
        movzbl  %al, %ebx
        lea     msg_got(%rip), %rdi
        call    puts
        mov     %ebx, %edi
        call    putc
        call    newline
3:
        mov     %r14, %rdi
        lea     str_reset(%rip), %rsi
        call    strstr
        test    %rax, %rax
        jnz     reset

        lea     msg_poweroff(%rip), %rdi
        call    puts
        mov     $POWEROFF_PORT, %dx
        mov     $POWEROFF_VALUE, %ax
        out     %ax, %dx
reset:
        lea     msg_reset(%rip), %rdi
        call    puts
        mov     $I8042_COMMAND, %dx
        mov     $I8042_RESET, %al
        out     %al, %dx
halt:
        cli
        hlt
        jmp     halt

/*
 * find_virtio(%edi = device id) -> %rax = MMIO base of the first virtio_mmio.device= entry
 * on the command line whose window holds a virtio-mmio v2 device of that id, or 0.
 */
find_virtio:
        push    %rbx
        push    %r12
        push    %r13
        mov     %edi, %r12d
        mov     %r14, %r13                               /* where the search goes on */
1:      mov     %r13, %rdi
        lea     str_vmmio(%rip), %rsi
        call    strstr
        test    %rax, %rax
        jz      3f
        lea     1(%rax), %r13
        mov     %rax, %rdi
        mov     $'@', %esi
        call    strchr
        test    %rax, %rax
        jz      3f
        lea     1(%rax), %rdi
        call    parse_hex
        mov     %rax, %rbx
        cmpl    $0x74726976, VIRTIO_MAGIC(%rbx)          /* "virt" */
        jne     1b
        cmpl    $2, VIRTIO_VERSION(%rbx)
        jne     1b
        cmp     VIRTIO_DEVICE_ID(%rbx), %r12d
        jne     1b
        mov     %rbx, %rax
        jmp     4f
3:      xor     %eax, %eax
4:      pop     %r13
        pop     %r12
        pop     %rbx
        ret

/*
 * virtio_blk: find the block device named on the command line, set it up, print its capacity and
 * the text at the start of sectors 0 and 1. Uses %rbx for the MMIO base.
 */
virtio_blk:
        push    %rbx
        push    %r12
        mov     $2, %edi                                 /* block */
        call    find_virtio
        test    %rax, %rax
        jz      .Lvb_none
        mov     %rax, %rbx

        lea     msg_vblk(%rip), %rdi
        call    puts
        mov     %rbx, %rdi
        call    puthex64

        movl    $0, VIRTIO_STATUS(%rbx)                  /* reset */
        movl    $1, VIRTIO_STATUS(%rbx)                  /* ACKNOWLEDGE */
        movl    $3, VIRTIO_STATUS(%rbx)                  /* | DRIVER */
        movl    $1, VIRTIO_DEV_FEAT_SEL(%rbx)
        mov     VIRTIO_DEV_FEATURES(%rbx), %eax
        test    $1, %eax                                 /* VIRTIO_F_VERSION_1 (bit 32) */
        jz      .Lvb_bad
        movl    $1, VIRTIO_DRV_FEAT_SEL(%rbx)
        movl    $1, VIRTIO_DRV_FEATURES(%rbx)
        movl    $0, VIRTIO_DRV_FEAT_SEL(%rbx)
        movl    $0, VIRTIO_DRV_FEATURES(%rbx)
        movl    $11, VIRTIO_STATUS(%rbx)                 /* | FEATURES_OK */
        mov     VIRTIO_STATUS(%rbx), %eax
        test    $8, %eax
        jz      .Lvb_bad

        movl    $0, VIRTIO_QUEUE_SEL(%rbx)
        mov     VIRTIO_QUEUE_NUM_MAX(%rbx), %eax
        cmp     $QSIZE, %eax
        jb      .Lvb_bad
        movl    $QSIZE, VIRTIO_QUEUE_NUM(%rbx)
        lea     vq_desc(%rip), %rax
        mov     %eax, VIRTIO_QUEUE_DESC_LO(%rbx)
        shr     $32, %rax
        mov     %eax, VIRTIO_QUEUE_DESC_HI(%rbx)
        lea     vq_avail(%rip), %rax
        mov     %eax, VIRTIO_QUEUE_AVAIL_LO(%rbx)
        shr     $32, %rax
        mov     %eax, VIRTIO_QUEUE_AVAIL_HI(%rbx)
        lea     vq_used(%rip), %rax
        mov     %eax, VIRTIO_QUEUE_USED_LO(%rbx)
        shr     $32, %rax
        mov     %eax, VIRTIO_QUEUE_USED_HI(%rbx)
        movl    $1, VIRTIO_QUEUE_READY(%rbx)
        movl    $15, VIRTIO_STATUS(%rbx)                 /* | DRIVER_OK */

        lea     msg_capacity(%rip), %rdi
        call    puts
        mov     VIRTIO_CONFIG+4(%rbx), %eax
        shl     $32, %rax
        mov     VIRTIO_CONFIG(%rbx), %ecx
        or      %rcx, %rax
        mov     %rax, %rdi
        call    putdec
        call    newline

        xor     %r12d, %r12d
.Lvb_sector:
        mov     %r12, %rdi
        xor     %esi, %esi                               /* VIRTIO_BLK_T_IN */
        call    blk_request
        test    %eax, %eax
        jnz     .Lvb_ioerr
        lea     msg_sector(%rip), %rdi
        call    puts
        mov     %r12, %rdi
        call    putdec
        lea     msg_colon(%rip), %rdi
        call    puts
        lea     sector_buf(%rip), %rsi
        mov     $64, %ecx
6:      movzbl  (%rsi), %edi
        test    %edi, %edi
        jz      7f
        cmp     $'\n', %edi
        je      7f
        push    %rsi
        push    %rcx
        call    putc
        pop     %rcx
        pop     %rsi
        inc     %rsi
        dec     %ecx
        jnz     6b
7:      call    newline
        inc     %r12
        cmp     $2, %r12
        jb      .Lvb_sector

        mov     %r14, %rdi
        lea     str_write(%rip), %rsi
        call    strstr
        test    %rax, %rax
        jz      .Lvb_out
        lea     sector_buf(%rip), %rdi                   /* sector_buf = the text, zero-padded */
        xor     %eax, %eax
        mov     $512, %ecx
        rep stosb
        lea     sector_buf(%rip), %rdi
        lea     str_written(%rip), %rsi
8:      movzbl  (%rsi), %eax
        test    %eax, %eax
        jz      9f
        mov     %al, (%rdi)
        inc     %rsi
        inc     %rdi
        jmp     8b
9:      mov     $2, %edi
        mov     $1, %esi                                 /* VIRTIO_BLK_T_OUT */
        call    blk_request
        mov     %eax, %r12d
        lea     msg_written(%rip), %rdi
        call    puts
        mov     %r12, %rdi
        call    putdec
        call    newline
        jmp     .Lvb_out

.Lvb_ioerr:
        mov     %eax, %r12d
        lea     msg_ioerr(%rip), %rdi
        call    puts
        mov     %r12, %rdi
        call    putdec
        call    newline
        jmp     .Lvb_out
.Lvb_bad:
        lea     msg_vbad(%rip), %rdi
        call    puts
        jmp     .Lvb_out
.Lvb_none:
        lea     msg_vnone(%rip), %rdi
        call    puts
.Lvb_out:
        pop     %r12
        pop     %rbx
        ret

/*
 * blk_request(%rdi = sector, %esi = type: 0 read, 1 write) -> %eax = 0 on success, else the
 * virtio status (or 0x100 when the device never answered). Moves 512 bytes between the
 * sector and sector_buf. %rbx = MMIO base.
 */
blk_request:
        mov     %esi, req_type(%rip)
        movl    $0, req_reserved(%rip)
        mov     %rdi, req_sector(%rip)
        movb    $0xff, req_status(%rip)
        lea     vq_desc(%rip), %rcx
        lea     req_type(%rip), %rax
        mov     %rax, 0(%rcx)
        movl    $16, 8(%rcx)
        movw    $1, 12(%rcx)                             /* NEXT */
        movw    $1, 14(%rcx)
        lea     sector_buf(%rip), %rax
        mov     %rax, 16(%rcx)
        movl    $512, 24(%rcx)
        mov     $3, %eax                                 /* read: NEXT | WRITE (device writes) */
        test    %esi, %esi
        jz      3f
        mov     $1, %eax                                 /* write: NEXT */
3:      movw    %ax, 28(%rcx)
        movw    $2, 30(%rcx)
        lea     req_status(%rip), %rax
        mov     %rax, 32(%rcx)
        movl    $1, 40(%rcx)
        movw    $2, 44(%rcx)                             /* WRITE */
        movw    $0, 46(%rcx)

        movzwl  vq_avail+2(%rip), %eax                   /* avail.idx */
        mov     %eax, %edx
        and     $(QSIZE - 1), %edx
        lea     vq_avail+4(%rip), %rsi
        movw    $0, (%rsi,%rdx,2)                        /* ring[idx % QSIZE] = head 0 */
        inc     %eax
        mfence
        movw    %ax, vq_avail+2(%rip)
        mfence
        movl    $0, VIRTIO_QUEUE_NOTIFY(%rbx)

        mov     $100000000, %ecx
1:      movzwl  vq_used+2(%rip), %edx                    /* used.idx */
        cmp     %ax, %dx
        je      2f
        pause
        dec     %ecx
        jnz     1b
        mov     $0x100, %eax
        ret
2:      movzbl  req_status(%rip), %eax
        ret

/* mptable: find the MP floating pointer in 0x9fc00..0xa0000, count processor entries. */
mptable:
        push    %rbx
        lea     msg_mptable(%rip), %rdi
        call    puts
        mov     $0x9fc00, %ebx
1:      cmpl    $0x5f504d5f, (%rbx)                      /* "_MP_" */
        je      2f
        add     $16, %ebx
        cmp     $0xa0000, %ebx
        jb      1b
        jmp     .Lmp_none
2:      mov     4(%rbx), %ebx                            /* physptr: the config table */
        test    %ebx, %ebx
        jz      .Lmp_none
        cmpl    $0x504d4350, (%rbx)                      /* "PCMP" */
        jne     .Lmp_none
        movzwl  34(%rbx), %ecx                           /* entry count */
        lea     44(%rbx), %rsi
        xor     %edi, %edi                               /* processors */
3:      test    %ecx, %ecx
        jz      5f
        cmpb    $0, (%rsi)
        jne     4f
        inc     %edi
        add     $20, %rsi
        dec     %ecx
        jmp     3b
4:      add     $8, %rsi
        dec     %ecx
        jmp     3b
5:      call    putdec
        lea     msg_cpus(%rip), %rdi
        call    puts
        pop     %rbx
        ret
.Lmp_none:
        lea     msg_none(%rip), %rdi
        call    puts
        pop     %rbx
        ret

/* initrd: if the VMM loaded one, print where, its size and its first line. */
initrd:
        push    %rbx
        mov     BP_RAMDISK_SIZE(%r15), %eax
        test    %eax, %eax
        jz      2f
        lea     msg_initrd(%rip), %rdi
        call    puts
        mov     BP_RAMDISK_IMAGE(%r15), %ebx
        mov     %rbx, %rdi
        call    puthex64
        call    space
        mov     BP_RAMDISK_SIZE(%r15), %edi
        call    putdec
        lea     msg_colon(%rip), %rdi
        call    puts
        mov     BP_RAMDISK_SIZE(%r15), %ecx
        cmp     $64, %ecx
        jbe     1f
        mov     $64, %ecx
1:      movzbl  (%rbx), %edi
        cmp     $'\n', %edi
        je      2f
        test    %edi, %edi
        jz      2f
        push    %rcx
        call    putc
        pop     %rcx
        inc     %rbx
        dec     %ecx
        jnz     1b
2:      mov     BP_RAMDISK_SIZE(%r15), %eax
        test    %eax, %eax
        jz      3f
        call    newline
3:      pop     %rbx
        ret

/* ---- string helpers (SysV: clobber rax, rcx, rdx, rsi, rdi, r8-r11) ---- */

/* putc(%dil) */
putc:
        mov     $COM1_LSR, %dx
1:      in      %dx, %al
        test    $0x20, %al                              /* THR empty */
        jz      1b
        mov     $COM1, %dx
        mov     %edi, %eax
        out     %al, %dx
        ret

newline:
        mov     $'\n', %edi
        jmp     putc

space:
        mov     $' ', %edi
        jmp     putc

/* puts(%rdi = NUL-terminated string) */
puts:
        push    %rbx
        mov     %rdi, %rbx
1:      movzbl  (%rbx), %edi
        test    %edi, %edi
        jz      2f
        call    putc
        inc     %rbx
        jmp     1b
2:      pop     %rbx
        ret

/* puthex64(%rdi): "0x" and 16 hex digits */
puthex64:
        push    %rbx
        push    %r12
        mov     %rdi, %rbx
        mov     $'0', %edi
        call    putc
        mov     $'x', %edi
        call    putc
        mov     $16, %r12d
1:      rol     $4, %rbx
        mov     %ebx, %edi
        and     $0xf, %edi
        lea     hexdigits(%rip), %rax
        movzbl  (%rax,%rdi), %edi
        call    putc
        dec     %r12d
        jnz     1b
        pop     %r12
        pop     %rbx
        ret

/* putdec(%rdi): unsigned decimal */
putdec:
        mov     %rdi, %rax
        lea     numbuf_end(%rip), %rsi
        movb    $0, (%rsi)
        mov     $10, %ecx
1:      xor     %edx, %edx
        div     %rcx
        add     $'0', %dl
        dec     %rsi
        mov     %dl, (%rsi)
        test    %rax, %rax
        jnz     1b
        mov     %rsi, %rdi
        jmp     puts

/* strstr(%rdi = haystack, %rsi = needle) -> %rax = first match or 0 */
strstr:
1:      xor     %ecx, %ecx
2:      movzbl  (%rsi,%rcx), %eax
        test    %eax, %eax
        jz      3f                                      /* whole needle matched */
        cmpb    %al, (%rdi,%rcx)
        jne     4f
        inc     %rcx
        jmp     2b
3:      mov     %rdi, %rax
        ret
4:      cmpb    $0, (%rdi)
        je      5f
        inc     %rdi
        jmp     1b
5:      xor     %eax, %eax
        ret

/* strchr(%rdi, %esi = byte) -> %rax = first match or 0 */
strchr:
1:      movzbl  (%rdi), %eax
        cmp     %esi, %eax
        je      2f
        test    %eax, %eax
        jz      3f
        inc     %rdi
        jmp     1b
2:      mov     %rdi, %rax
        ret
3:      xor     %eax, %eax
        ret

/* parse_hex(%rdi = text, an optional "0x" prefix) -> %rax */
parse_hex:
        xor     %eax, %eax
        cmpb    $'0', (%rdi)
        jne     1f
        cmpb    $'x', 1(%rdi)
        jne     1f
        add     $2, %rdi
1:      movzbl  (%rdi), %ecx
        cmp     $'0', %ecx
        jb      4f
        cmp     $'9', %ecx
        ja      2f
        sub     $'0', %ecx
        jmp     3f
2:      or      $0x20, %ecx                             /* lower case */
        cmp     $'a', %ecx
        jb      4f
        cmp     $'f', %ecx
        ja      4f
        sub     $('a' - 10), %ecx
3:      shl     $4, %rax
        or      %rcx, %rax
        inc     %rdi
        jmp     1b
4:      ret

        .section .rodata
msg_banner:     .asciz "omnicloud test guest\n"
msg_cmdline:    .asciz "cmdline: "
msg_e820n:      .asciz "e820 entries: "
msg_e820:       .asciz "e820: "
msg_vblk:       .asciz "virtio-blk: "
msg_capacity:   .asciz " capacity "
msg_sector:     .asciz "sector "
msg_colon:      .asciz ": "
msg_ioerr:      .asciz "virtio-blk: request failed, status "
msg_vbad:       .asciz "\nvirtio-blk: unusable device\n"
msg_vnone:      .asciz "virtio-blk: none\n"
msg_waiting:    .asciz "waiting for a serial byte\n"
msg_holding:    .asciz "holding\n"
msg_got:        .asciz "got "
msg_poweroff:   .asciz "powering off\n"
msg_reset:      .asciz "resetting\n"
str_vmmio:      .asciz "virtio_mmio.device="
str_wait:       .asciz "omnicloud.wait"
str_hold:       .asciz "omnicloud.hold"
str_reset:      .asciz "omnicloud.reset"
str_write:      .asciz "omnicloud.write"
str_written:    .asciz "written by the test guest\n"
msg_written:    .asciz "sector 2 written, status "
msg_initrd:     .asciz "initrd: "
msg_mptable:    .asciz "mptable: "
msg_cpus:       .asciz " cpus\n"
msg_none:       .asciz "none\n"
hexdigits:      .ascii "0123456789abcdef"

        .section .bss
        .balign 4096
vq_desc:        .skip 16 * QSIZE
        .balign 4096
vq_avail:       .skip 4 + 2 * QSIZE + 2
        .balign 4096
vq_used:        .skip 4 + 8 * QSIZE + 2
        .balign 16
req_type:       .skip 4
req_reserved:   .skip 4
req_sector:     .skip 8
req_status:     .skip 1
        .balign 512
sector_buf:     .skip 512
numbuf:         .skip 31
numbuf_end:     .skip 1
        .balign 16
stack:          .skip 16384
stack_top:

#include "net-agent.S"
