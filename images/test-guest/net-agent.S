/*
 * The test guest's virtio-net driver and guest-agent channel (included by guest.S, whose
 * #defines and helpers - putc, puts, puthex64, strstr, find_virtio - it uses; what it prints
 * is documented there). Polled: receive waits are bounded by the TSC (tsc_deadline, past).
 */

#define COM2            0x2f8                   /* the agent channel */
#define COM2_LSR        0x2fd
#define RXBUFS 4
#define RXBUF_SHIFT 11                          /* 2 KiB receive buffers */
#define FRAME_LEN 60                            /* the frame sent: the Ethernet minimum */
#define NET_HDR 12                              /* struct virtio_net_hdr (virtio 1.x) */
#define WAIT_TSC_SHIFT 35                       /* receive waits: 2^35 TSC cycles */

        .section .text
/*
 * setup_queue(%edi = index, %rsi = descriptor table, %rdx = avail ring, %rcx = used ring)
 * -> %eax = 1 when queue `index` of the device at %rbx takes QSIZE entries and is ready.
 */
setup_queue:
        mov     %edi, VIRTIO_QUEUE_SEL(%rbx)
        mov     VIRTIO_QUEUE_NUM_MAX(%rbx), %eax
        cmp     $QSIZE, %eax
        jb      1f
        movl    $QSIZE, VIRTIO_QUEUE_NUM(%rbx)
        mov     %rsi, %rax
        mov     %eax, VIRTIO_QUEUE_DESC_LO(%rbx)
        shr     $32, %rax
        mov     %eax, VIRTIO_QUEUE_DESC_HI(%rbx)
        mov     %rdx, %rax
        mov     %eax, VIRTIO_QUEUE_AVAIL_LO(%rbx)
        shr     $32, %rax
        mov     %eax, VIRTIO_QUEUE_AVAIL_HI(%rbx)
        mov     %rcx, %rax
        mov     %eax, VIRTIO_QUEUE_USED_LO(%rbx)
        shr     $32, %rax
        mov     %eax, VIRTIO_QUEUE_USED_HI(%rbx)
        movl    $1, VIRTIO_QUEUE_READY(%rbx)
        mov     VIRTIO_QUEUE_READY(%rbx), %eax
        ret
1:      xor     %eax, %eax
        ret

/* tsc_deadline -> %rax = the TSC 2^WAIT_TSC_SHIFT cycles from now */
tsc_deadline:
        rdtsc
        shl     $32, %rdx
        or      %rdx, %rax
        mov     $1, %rdx
        shl     $WAIT_TSC_SHIFT, %rdx
        add     %rdx, %rax
        ret

/* past(%rdi = deadline) -> ZF clear (jae taken) once the TSC reached it; clobbers rax, rdx */
past:
        rdtsc
        shl     $32, %rdx
        or      %rdx, %rax
        cmp     %rdi, %rax
        ret

/*
 * virtio_net (with "omnicloud.net"): find the net device, set up its two queues, print its
 * MAC, post RXBUFS receive buffers, send one frame, then wait for a frame of ethertype
 * 0x88b5 and print its payload. %rbx = MMIO base, %r12 = used index seen, %r13 = deadline.
 */
virtio_net:
        push    %rbx
        push    %r12
        push    %r13
        mov     %r14, %rdi
        lea     str_net(%rip), %rsi
        call    strstr
        test    %rax, %rax
        jz      .Lvn_out
        mov     $1, %edi                                 /* net */
        call    find_virtio
        test    %rax, %rax
        jz      .Lvn_none
        mov     %rax, %rbx

        movl    $0, VIRTIO_STATUS(%rbx)                  /* reset */
        movl    $1, VIRTIO_STATUS(%rbx)                  /* ACKNOWLEDGE */
        movl    $3, VIRTIO_STATUS(%rbx)                  /* | DRIVER */
        movl    $0, VIRTIO_DEV_FEAT_SEL(%rbx)
        mov     VIRTIO_DEV_FEATURES(%rbx), %eax
        test    $0x20, %eax                              /* VIRTIO_NET_F_MAC (bit 5) */
        jz      .Lvn_bad
        movl    $1, VIRTIO_DEV_FEAT_SEL(%rbx)
        mov     VIRTIO_DEV_FEATURES(%rbx), %eax
        test    $1, %eax                                 /* VIRTIO_F_VERSION_1 (bit 32) */
        jz      .Lvn_bad
        movl    $1, VIRTIO_DRV_FEAT_SEL(%rbx)
        movl    $1, VIRTIO_DRV_FEATURES(%rbx)
        movl    $0, VIRTIO_DRV_FEAT_SEL(%rbx)
        movl    $0x20, VIRTIO_DRV_FEATURES(%rbx)
        movl    $11, VIRTIO_STATUS(%rbx)                 /* | FEATURES_OK */
        mov     VIRTIO_STATUS(%rbx), %eax
        test    $8, %eax
        jz      .Lvn_bad
        xor     %edi, %edi                               /* queue 0: receive */
        lea     rxq_desc(%rip), %rsi
        lea     rxq_avail(%rip), %rdx
        lea     rxq_used(%rip), %rcx
        call    setup_queue
        test    %eax, %eax
        jz      .Lvn_bad
        mov     $1, %edi                                 /* queue 1: transmit */
        lea     txq_desc(%rip), %rsi
        lea     txq_avail(%rip), %rdx
        lea     txq_used(%rip), %rcx
        call    setup_queue
        test    %eax, %eax
        jz      .Lvn_bad
        movl    $15, VIRTIO_STATUS(%rbx)                 /* | DRIVER_OK */

        /* "virtio-net: <base> mac <mac>", keeping the MAC as the frame's source */
        lea     msg_vnet(%rip), %rdi
        call    puts
        mov     %rbx, %rdi
        call    puthex64
        lea     msg_mac(%rip), %rdi
        call    puts
        xor     %r12d, %r12d
1:      movzbl  VIRTIO_CONFIG(%rbx,%r12), %edi           /* config: mac[6] */
        lea     tx_buf+NET_HDR+6(%rip), %rax
        mov     %dil, (%rax,%r12)
        call    puthex8
        inc     %r12
        cmp     $6, %r12
        je      2f
        mov     $':', %edi
        call    putc
        jmp     1b
2:      call    newline

        /* receive buffers: descriptors 0..RXBUFS-1, all made available */
        lea     rxq_desc(%rip), %rsi
        lea     rx_bufs(%rip), %rax
        xor     %ecx, %ecx
3:      mov     %rax, 0(%rsi)
        movl    $(1 << RXBUF_SHIFT), 8(%rsi)
        movw    $2, 12(%rsi)                             /* WRITE */
        movw    $0, 14(%rsi)
        lea     rxq_avail+4(%rip), %rdx
        mov     %cx, (%rdx,%rcx,2)
        add     $(1 << RXBUF_SHIFT), %rax
        add     $16, %rsi
        inc     %ecx
        cmp     $RXBUFS, %ecx
        jb      3b
        mfence
        movw    $RXBUFS, rxq_avail+2(%rip)
        mfence
        movl    $0, VIRTIO_QUEUE_NOTIFY(%rbx)

        /* the frame: broadcast, from our MAC, ethertype 0x88b5, the payload */
        lea     tx_buf+NET_HDR(%rip), %rdi
        movl    $0xffffffff, (%rdi)
        movw    $0xffff, 4(%rdi)
        movw    $0xb588, 12(%rdi)                        /* 0x88 0xb5 on the wire */
        lea     14(%rdi), %rdi
        lea     str_net_hello(%rip), %rsi
4:      movzbl  (%rsi), %eax
        test    %eax, %eax
        jz      5f
        mov     %al, (%rdi)
        inc     %rsi
        inc     %rdi
        jmp     4b
5:      lea     txq_desc(%rip), %rsi
        lea     tx_buf(%rip), %rax
        mov     %rax, 0(%rsi)
        movl    $(NET_HDR + FRAME_LEN), 8(%rsi)
        movw    $0, 12(%rsi)
        movw    $0, 14(%rsi)
        movw    $0, txq_avail+4(%rip)                    /* ring[0] = descriptor 0 */
        mfence
        movw    $1, txq_avail+2(%rip)
        mfence
        movl    $1, VIRTIO_QUEUE_NOTIFY(%rbx)
        call    tsc_deadline
        mov     %rax, %r13
6:      movzwl  txq_used+2(%rip), %eax
        cmp     $1, %eax
        je      7f
        mov     %r13, %rdi
        call    past
        jae     .Lvn_bad
        pause
        jmp     6b
7:      lea     msg_net_tx(%rip), %rdi
        call    puts

        /* wait for a frame of ethertype 0x88b5; give any other buffer back */
        xor     %r12d, %r12d
        call    tsc_deadline
        mov     %rax, %r13
.Lvn_poll:
        movzwl  rxq_used+2(%rip), %eax
        cmp     %r12w, %ax
        jne     .Lvn_got
        mov     %r13, %rdi
        call    past
        jae     .Lvn_timeout
        pause
        jmp     .Lvn_poll
.Lvn_got:
        mov     %r12d, %eax
        and     $(QSIZE - 1), %eax
        lea     rxq_used+4(%rip), %rsi
        mov     (%rsi,%rax,8), %ecx                      /* id: the descriptor = buffer */
        mov     4(%rsi,%rax,8), %edx                     /* bytes written */
        inc     %r12d
        mov     %ecx, %eax
        shl     $RXBUF_SHIFT, %eax
        lea     rx_bufs(%rip), %rsi
        add     %rax, %rsi
        cmp     $(NET_HDR + 14), %edx
        jb      .Lvn_repost
        cmpw    $0xb588, NET_HDR+12(%rsi)
        jne     .Lvn_repost
        sub     $(NET_HDR + 14), %edx
        cmp     $64, %edx
        jbe     8f
        mov     $64, %edx
8:      push    %rsi
        push    %rdx
        lea     msg_net_rx(%rip), %rdi
        call    puts
        pop     %rdx
        pop     %rsi
        add     $(NET_HDR + 14), %rsi
        mov     %edx, %ecx
        call    put_line
        call    newline
        jmp     .Lvn_out
.Lvn_repost:
        movzwl  rxq_avail+2(%rip), %eax
        mov     %eax, %edx
        and     $(QSIZE - 1), %edx
        lea     rxq_avail+4(%rip), %rsi
        mov     %cx, (%rsi,%rdx,2)
        inc     %eax
        mfence
        mov     %ax, rxq_avail+2(%rip)
        mfence
        movl    $0, VIRTIO_QUEUE_NOTIFY(%rbx)
        jmp     .Lvn_poll
.Lvn_timeout:
        lea     msg_net_rx(%rip), %rdi
        call    puts
        lea     msg_timeout(%rip), %rdi
        call    puts
        jmp     .Lvn_out
.Lvn_bad:
        lea     msg_vnbad(%rip), %rdi
        call    puts
        jmp     .Lvn_out
.Lvn_none:
        lea     msg_vnnone(%rip), %rdi
        call    puts
.Lvn_out:
        pop     %r13
        pop     %r12
        pop     %rbx
        ret

/*
 * agent (with "omnicloud.agent"): one line out on COM2, one line back, echoed on COM1.
 * %r12 = bytes kept, %r13 = deadline.
 */
agent:
        push    %r12
        push    %r13
        mov     %r14, %rdi
        lea     str_agent(%rip), %rsi
        call    strstr
        test    %rax, %rax
        jz      .Lag_out
        lea     str_agent_hello(%rip), %rdi
        call    puts2
        xor     %r12d, %r12d
        call    tsc_deadline
        mov     %rax, %r13
1:      mov     $COM2_LSR, %dx
        in      %dx, %al
        test    $1, %al                                  /* data ready */
        jnz     2f
        mov     %r13, %rdi
        call    past
        jae     .Lag_timeout
        pause
        jmp     1b
2:      mov     $COM2, %dx
        in      %dx, %al
        cmp     $'\n', %al
        je      3f
        cmp     $120, %r12d
        jae     1b
        lea     agent_line(%rip), %rdx
        mov     %al, (%rdx,%r12)
        inc     %r12d
        jmp     1b
3:      lea     msg_agent_rx(%rip), %rdi
        call    puts
        lea     agent_line(%rip), %rsi
        mov     %r12d, %ecx
        call    put_line
        call    newline
        jmp     .Lag_out
.Lag_timeout:
        lea     msg_agent_rx(%rip), %rdi
        call    puts
        lea     msg_timeout(%rip), %rdi
        call    puts
.Lag_out:
        pop     %r13
        pop     %r12
        ret

/* put_line(%rsi = text, %ecx = at most this many bytes): prints up to a NUL or newline */
put_line:
        test    %ecx, %ecx
        jz      2f
1:      movzbl  (%rsi), %edi
        test    %edi, %edi
        jz      2f
        cmp     $'\n', %edi
        je      2f
        push    %rsi
        push    %rcx
        call    putc
        pop     %rcx
        pop     %rsi
        inc     %rsi
        dec     %ecx
        jnz     1b
2:      ret

/* puthex8(%dil): two hex digits */
puthex8:
        push    %rbx
        movzbl  %dil, %ebx
        mov     %ebx, %edi
        shr     $4, %edi
        lea     hexdigits(%rip), %rax
        movzbl  (%rax,%rdi), %edi
        call    putc
        mov     %ebx, %edi
        and     $0xf, %edi
        lea     hexdigits(%rip), %rax
        movzbl  (%rax,%rdi), %edi
        call    putc
        pop     %rbx
        ret

/* putc2(%dil): one byte to COM2, the agent channel */
putc2:
        mov     $COM2_LSR, %dx
1:      in      %dx, %al
        test    $0x20, %al                              /* THR empty */
        jz      1b
        mov     $COM2, %dx
        mov     %edi, %eax
        out     %al, %dx
        ret

/* puts2(%rdi = NUL-terminated string) to COM2 */
puts2:
        push    %rbx
        mov     %rdi, %rbx
1:      movzbl  (%rbx), %edi
        test    %edi, %edi
        jz      2f
        call    putc2
        inc     %rbx
        jmp     1b
2:      pop     %rbx
        ret


        .section .rodata
msg_vnet:       .asciz "virtio-net: "
msg_mac:        .asciz " mac "
msg_vnbad:      .asciz "\nvirtio-net: unusable device\n"
msg_vnnone:     .asciz "virtio-net: none\n"
msg_net_tx:     .asciz "net tx: 60 bytes\n"
msg_net_rx:     .asciz "net rx: "
msg_agent_rx:   .asciz "agent rx: "
msg_timeout:    .asciz "timeout\n"
str_net:        .asciz "omnicloud.net"
str_net_hello:  .asciz "hello from the test guest"
str_agent:      .asciz "omnicloud.agent"
str_agent_hello: .asciz "{\"hello\":\"test-guest\"}\n"

        .section .bss
        .balign 4096
rxq_desc:       .skip 16 * QSIZE
        .balign 4096
rxq_avail:      .skip 4 + 2 * QSIZE + 2
        .balign 4096
rxq_used:       .skip 4 + 8 * QSIZE + 2
        .balign 4096
txq_desc:       .skip 16 * QSIZE
        .balign 4096
txq_avail:      .skip 4 + 2 * QSIZE + 2
        .balign 4096
txq_used:       .skip 4 + 8 * QSIZE + 2
        .balign 4096
rx_bufs:        .skip RXBUFS << RXBUF_SHIFT
tx_buf:         .skip NET_HDR + FRAME_LEN
agent_line:     .skip 128
