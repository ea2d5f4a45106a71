/* One i386 site per rewriter situation of reference §4.3, each labelled (gcc -m32 -nostdlib
 * -static). Natively it prints "LITEBOX-PACK: I386 SITES OK" and exits 0, or exits 1 when two
 * getpid results disagree or the write comes up short.
 *
 *   site_ret     (c), N = ret:  P is a call target, only a ret follows the int
 *   site_c_next  (c), N falls through: P and the instruction after N are branch targets
 *   site_after   (b): the int itself is a branch target, a 3-byte cmp follows
 *   site_before  (a): the 5-byte mov before the int is displaced
 *   site_exit    (c), N = jmp back onto P: _exit's loop, copied raw (no jump back)
 *   site_fail    (a), at a branch target whose first displaced instruction is the target
 */
    .text
    .globl _start
_start:
    mov $20, %esi               /* getpid, for the helpers below */
    call getpid_ret
    mov %eax, %ebp
    test %esi, %esi
    jz c_after                  /* never taken: makes c_after a branch target */
    jmp c_next_p
c_next_p:
    mov %esi, %eax              /* P: a branch target, 2 bytes */
site_c_next:
    int $0x80
    mov %eax, %edi              /* N */
c_after:
    cmp %edi, %ebp
    jne fail
    mov $20, %eax
    jmp site_after              /* makes the int a branch target */
site_after:
    int $0x80
    cmp $0, %eax                /* 3 bytes: with the int, room for the jump */
    jle fail
    cmp %eax, %ebp
    jne fail

    mov $1, %ebx
    mov $msg, %ecx
    mov $len, %edx
    mov $4, %eax
site_before:
    int $0x80
    cmp $len, %eax
    jne fail
    xor %ebx, %ebx
    mov $1, %edx
exit_loop:
    mov %edx, %eax              /* P, the target of the jmp below */
site_exit:
    int $0x80
    jmp exit_loop

fail:
    mov $1, %eax
    mov %eax, %ebx
site_fail:
    int $0x80

getpid_ret:
    mov %esi, %eax
site_ret:
    int $0x80
    ret

    .section .rodata
msg:
    .ascii "LITEBOX-PACK: I386 SITES OK\n"
    len = . - msg
    .section .note.GNU-stack, "", @progbits
