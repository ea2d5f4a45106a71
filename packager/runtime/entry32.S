/* entry32.S: the i386 runtime's hand-written edges (the counterpart of entry.S): process entry,
 * the callback entered from the i386 trampoline stubs, the AT_SYSINFO entry, six-argument
 * syscalls, the clone child start, the signal restorers, sigreturn and the jump into the guest.
 *
 * Everything that runs on the guest's behalf starts here, on the guest's stack, with the guest's
 * GS (glibc's thread pointer): nothing in this file touches a segment register, and the C it
 * calls is freestanding. i386 has no red zone, so the callback may push below the guest's ESP. */
    .intel_syntax noprefix
    .text

/* Process entry: the kernel's initial stack pointer goes to rt_main (runtime.c), cdecl. */
    .globl _start
    .type _start, @function
_start:
    xor ebp, ebp
    mov eax, esp
    and esp, -16
    sub esp, 12
    push eax
    call rt_main
    ud2

/* The callback. A stub (reference §4.2: PUSH EAX; CALL +0; POP EAX; CALL [EAX+d32]) enters
 * here with [ESP] = its continuation (the byte after that call), [ESP+4] = the guest's EAX,
 * i.e. the syscall number, and EBX ECX EDX ESI EDI EBP = the arguments. EAX itself holds the
 * stub's own address and is not the guest's. On return EAX is the result, every other register
 * and the flags are the guest's, ESP is the guest's ESP (both pushed words dropped) and
 * execution continues at the continuation: exactly what `int $0x80` (or a call through
 * gs:[0x10] to __kernel_vsyscall) leaves.
 *
 * The frame is struct regs (arch_i386.h): PUSHFD, then PUSHAD below it. */
    .globl rt_callback_i386
    .type rt_callback_i386, @function
rt_callback_i386:
    pushfd
    cmp dword ptr [esp + 8], 173 /* rt_sigreturn and sigreturn: the kernel reads the frame */
    je 9f                        /* at the guest's ESP, so they are issued right there */
    cmp dword ptr [esp + 8], 119
    je 9f
    pushad
    mov eax, [esp + 40]         /* regs.nr: the number the stub saved */
    mov [esp + 28], eax         /* regs.eax */
    mov ebx, esp                /* callee-saved: survives the call */
    and esp, -16
    sub esp, 12
    push ebx                    /* struct regs * */
    cld
    call rt_dispatch
    mov esp, ebx
    popad                       /* EAX = regs.eax, the result */
    popfd
    ret 4                       /* to the continuation, dropping the saved EAX */
9:
    mov eax, [esp + 8]
    lock inc dword ptr [rt_counts + eax * 4] /* counted here: they never reach rt_dispatch */
    lea esp, [esp + 12]         /* back to the guest's exact ESP */
    int 0x80
    ud2

/* AT_SYSINFO (what glibc puts in gs:[0x10]): entered by a CALL with EAX = number and EBX ECX
 * EDX ESI EDI EBP = arguments, like the kernel's __kernel_vsyscall; returns with EAX = result
 * and every other register and the flags as they were. Only code the rewriter missed gets here
 * (rewritten calls enter stubs instead): rt_vsyscall_dispatch (callback.c) records the escape
 * and performs the syscall. The frame is struct regs up to eip (the return address); its nr
 * word is the caller's and is not used. */
    .globl rt_vsyscall
    .type rt_vsyscall, @function
rt_vsyscall:
    pushfd
    pushad
    mov ebx, esp
    and esp, -16
    sub esp, 12
    push ebx
    cld
    call rt_vsyscall_dispatch
    mov esp, ebx
    popad
    popfd
    ret

/* iptr rt_syscall6(nr, a0, a1, a2, a3, a4, a5): a syscall with all six argument registers
 * (EBP included), for the guest's pass-through syscalls and mmap2. Interrupted with SA_RESTART,
 * the kernel restarts the int 0x80 right here with the same registers. */
    .globl rt_syscall6
    .type rt_syscall6, @function
rt_syscall6:
    push ebp
    push edi
    push esi
    push ebx
    mov eax, [esp + 20]
    mov ebx, [esp + 24]
    mov ecx, [esp + 28]
    mov edx, [esp + 32]
    mov esi, [esp + 36]
    mov edi, [esp + 40]
    mov ebp, [esp + 44]
    int 0x80
    pop ebx
    pop esi
    pop edi
    pop ebp
    ret

/* iptr rt_clone_raw(nr, a0, a1, a2, a3, a4): clone/clone3 whose child stack pointer points at
 * a struct child_start. The parent returns the result; the child never returns: it optionally
 * clears the counters it inherited (a new process), loads the guest registers and flags from
 * the record (its EAX is 0 there: the child's clone result) and RETs to the guest's
 * continuation, which leaves ESP at the guest's new stack pointer. */
    .globl rt_clone_raw
    .type rt_clone_raw, @function
rt_clone_raw:
    push ebp
    push edi
    push esi
    push ebx
    mov eax, [esp + 20]
    mov ebx, [esp + 24]
    mov ecx, [esp + 28]
    mov edx, [esp + 32]
    mov esi, [esp + 36]
    mov edi, [esp + 40]
    int 0x80
    test eax, eax
    jz 1f
    pop ebx
    pop esi
    pop edi
    pop ebp
    ret
1:
    cmp dword ptr [esp], 0      /* child_start.reset */
    je 2f
    call rt_child_after_fork
2:
    add esp, 4
    popad
    popfd
    ret

/* The SIGSYS handler returns through this (SA_RESTORER): it lies in the runtime's text, so the
 * seccomp filter lets its rt_sigreturn through. */
    .globl rt_sigrestorer
    .type rt_sigrestorer, @function
rt_sigrestorer:
    mov eax, 173
    int 0x80
    ud2

/* The restorers the runtime gives guest signal handlers installed without one (see
 * sigaction_i386 in callback.c), as the kernel gives its vDSO's: byte-for-byte
 * __kernel_sigreturn (58 B8 77 00 00 00 CD 80) and __kernel_rt_sigreturn (B8 AD 00 00 00 CD 80),
 * the sequences libgcc's unwinder looks for to step through a signal frame. In the runtime's
 * text, so their sigreturns pass the seccomp filter. */
    .globl rt_restore
    .type rt_restore, @function
rt_restore:
    pop eax
    mov eax, 119
    int 0x80
    .globl rt_restore_rt
    .type rt_restore_rt, @function
rt_restore_rt:
    mov eax, 173
    int 0x80

/* void rt_sigreturn_at(uptr esp, uptr nr): an escaped sigreturn or rt_sigreturn, performed from
 * the runtime's text with the guest's ESP so the kernel finds the guest's signal frame. */
    .globl rt_sigreturn_at
    .type rt_sigreturn_at, @function
rt_sigreturn_at:
    mov eax, [esp + 8]
    mov esp, [esp + 4]
    int 0x80
    ud2

/* void rt_enter_guest(uptr entry, uptr sp): start the guest as the kernel would, with a clean
 * register file (EDX = 0: no function for atexit) and ESP at argc. */
    .globl rt_enter_guest
    .type rt_enter_guest, @function
rt_enter_guest:
    mov eax, [esp + 4]
    mov esp, [esp + 8]
    push eax
    xor eax, eax
    xor ebx, ebx
    xor ecx, ecx
    xor edx, edx
    xor esi, esi
    xor edi, edi
    xor ebp, ebp
    ret

    .section .note.GNU-stack, "", @progbits
