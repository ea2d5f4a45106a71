/* arch_x86_64.h: what the x86-64 runtime needs to know about its ABI (included by rt.h only).
 * Syscalls use the `syscall` instruction with RDI RSI RDX R10 R8 R9; the kernel structures are
 * the x86-64 layouts. */
#ifndef LITEBOX_ARCH_H
#define LITEBOX_ARCH_H

typedef unsigned long u64;
typedef long i64;

#define ARCH_NAME "x86-64"
#define ARCH_PLATFORM "x86_64" /* AT_PLATFORM */
#define AUDIT_ARCH_SELF 0xC000003EU
#define ELF_CLASS 2 /* ELFCLASS64 */
#define ELF_MACHINE 62 /* EM_X86_64 */
#define TRAILER_SIZE 32
#define USER_ADDR_END (1UL << 47) /* a trampoline must end below this */

/* --- syscall numbers ------------------------------------------------------------------------ */
#define NR_read 0
#define NR_write 1
#define NR_open 2
#define NR_close 3
#define NR_stat 4
#define NR_fstat 5
#define NR_lstat 6
#define NR_mmap 9
#define NR_mprotect 10
#define NR_munmap 11
#define NR_brk 12
#define NR_rt_sigaction 13
#define NR_rt_sigprocmask 14
#define NR_rt_sigreturn 15
#define NR_pread64 17
#define NR_access 21
#define NR_getpid 39
#define NR_clone 56
#define NR_fork 57
#define NR_vfork 58
#define NR_execve 59
#define NR_exit 60
#define NR_getppid 110
#define NR_readlink 89
#define NR_prctl 157
#define NR_gettid 186
#define NR_tgkill 234
#define NR_exit_group 231
#define NR_openat 257
#define NR_newfstatat 262
#define NR_readlinkat 267
#define NR_chdir 80
#define NR_getcwd 79
#define NR_faccessat 269
#define NR_getrandom 318
#define NR_seccomp 317
#define NR_execveat 322
#define NR_statx 332
#define NR_clone3 435
#define NR_openat2 437
#define NR_faccessat2 439
#define NR_fstatat NR_newfstatat /* the *at stat the runtime itself uses */

/* --- the LiteBox view (view.c) and the calls callback.c checks ------------------------------ */
#define NR_getuid 102
#define NR_getgid 104
#define NR_getrlimit 97
#define NR_umask 95
#define NR_writev 20
#define NR_process_vm_readv 310
#define NR_mount_setattr 442
#define NR_mount 165
#define NR_umount2 166
#define NR_pivot_root 155
#define NR_unshare 272
#define NR_capset 126
#define NR_mkdir 83
#define NR_rmdir 84
#define NR_creat 85
#define NR_link 86
#define NR_unlink 87
#define NR_symlink 88
#define NR_chmod 90
#define NR_fchmod 91
#define NR_chown 92
#define NR_lchown 94
#define NR_rename 82
#define NR_truncate 76
#define NR_mknod 133
#define NR_utime 132
#define NR_utimes 235
#define NR_dup 32
#define NR_dup2 33
#define NR_dup3 292
#define NR_fcntl 72
#define NR_fchdir 81
#define NR_getdents 78
#define NR_getdents64 217
#define NR_mkdirat 258
#define NR_mknodat 259
#define NR_fchownat 260
#define NR_futimesat 261
#define NR_unlinkat 263
#define NR_renameat 264
#define NR_linkat 265
#define NR_symlinkat 266
#define NR_fchmodat 268
#define NR_utimensat 280
#define NR_name_to_handle_at 303
#define NR_renameat2 316
#define NR_open_tree 428
#define NR_move_mount 429
#define NR_close_range 436
#define NR_fchmodat2 452
#define NR_inotify_add_watch 254
#define NR_fanotify_mark 301

/* --- kernel structures (x86-64 layouts) -------------------------------------------------------- */
struct kstat { /* struct stat as the kernel fills it on x86-64 (144 bytes) */
    u64 st_dev, st_ino, st_nlink;
    u32 st_mode, st_uid, st_gid, pad0;
    u64 st_rdev;
    i64 st_size, st_blksize, st_blocks;
    u64 st_atime_, st_atime_ns, st_mtime_, st_mtime_ns, st_ctime_, st_ctime_ns;
    i64 reserved[3];
};

struct ksiginfo { /* the SIGSYS view of siginfo_t */
    int si_signo, si_errno, si_code, pad;
    u64 call_addr; /* address after the syscall instruction */
    int syscall;
    u32 arch;
    u8 rest[96];
};

struct sigcontext64 { /* uc_mcontext */
    u64 r8, r9, r10, r11, r12, r13, r14, r15, rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp, rip, eflags;
    u16 cs, gs, fs, ss;
    u64 err, trapno, oldmask, cr2, fpstate, reserved[8];
};

struct kucontext {
    u64 uc_flags;
    void *uc_link;
    void *ss_sp;
    u64 ss_flags_pad;
    u64 ss_size;
    struct sigcontext64 mc;
    u64 uc_sigmask;
};

struct phdr { /* Elf64_Phdr */
    u32 type, flags;
    u64 offset, vaddr, paddr, filesz, memsz, align;
};

struct ehdr { /* Elf64_Ehdr */
    u8 ident[16];
    u16 type, machine;
    u32 version;
    u64 entry, phoff, shoff;
    u32 flags;
    u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};

/* --- the guest's registers at a syscall --------------------------------------------------------
 * Pushed by the callback entry in entry.S (lowest address first) and also built from a ucontext
 * by the SIGSYS handler. rip is where the guest continues after the syscall. */
struct regs {
    u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rbx, rax, rip, rflags;
};
#define REG_NR(r) ((r)->rax) /* the syscall number on entry, the result on return */
#define REG_A0(r) ((r)->rdi)
#define REG_A1(r) ((r)->rsi)
#define REG_A2(r) ((r)->rdx)
#define REG_A3(r) ((r)->r10)
#define REG_A4(r) ((r)->r8)
#define REG_A5(r) ((r)->r9)

/* The site a trampolined syscall came from, for the report: the restart address (the call-site
 * jump) with redzone stubs, the stub's slot jump with resume stubs; one per patched syscall. */
#define REG_SITE(r) (rt_cfg.abi_resume ? (r)->rip - 6 : (r)->r11)

/* The SIGSYS handler's view of the guest: its stack pointer, where the result goes, and the
 * registers as a struct regs. */
#define IS_SIGRETURN(nr) ((nr) == NR_rt_sigreturn)
#define UC_SP(uc) ((uc)->mc.rsp)
#define UC_RESULT(uc) ((uc)->mc.rax)
static inline void regs_from_uc(struct regs *r, const struct kucontext *uc, uptr nr) {
    const struct sigcontext64 *mc = &uc->mc;
    *r = (struct regs){mc->r15, mc->r14, mc->r13, mc->r12, mc->r11, mc->r10, mc->r9, mc->r8,
                       mc->rbp, mc->rdi, mc->rsi, mc->rdx, mc->rbx, nr,      mc->rip, mc->eflags};
}

/* The record a cloned child with a new stack starts on (see rt_clone_raw in entry.S). */
struct child_start {
    u64 reset; /* nonzero: a new process (no CLONE_VM): clear the inherited counters */
    struct regs r;
    u64 rsp;
};

/* Where the record for a child whose stack pointer will be `top` goes (16-aligned, below it). */
static inline struct child_start *child_record(const struct regs *r, uptr top, int reset) {
    struct child_start *cs = (struct child_start *)((top - sizeof *cs) & ~15UL);
    cs->reset = (u64)reset;
    cs->r = *r;
    cs->rsp = top;
    return cs;
}

/* entry.S */
void rt_callback_redzone(void);
void rt_callback_resume(void);

/* --- raw syscalls ------------------------------------------------------------------------------- */
static inline iptr sys6(iptr n, iptr a, iptr b, iptr c, iptr d, iptr e, iptr f) {
    register iptr r10 __asm__("r10") = d;
    register iptr r8 __asm__("r8") = e;
    register iptr r9 __asm__("r9") = f;
    iptr ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define sys0(n) sys6((n), 0, 0, 0, 0, 0, 0)
#define sys1(n, a) sys6((n), (iptr)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6((n), (iptr)(a), (iptr)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6((n), (iptr)(a), (iptr)(b), (iptr)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6((n), (iptr)(a), (iptr)(b), (iptr)(c), (iptr)(d), 0, 0)
#define sys5(n, a, b, c, d, e) sys6((n), (iptr)(a), (iptr)(b), (iptr)(c), (iptr)(d), (iptr)(e), 0)

/* The calls whose form differs between the two ABIs, for the runtime's own use. */
static inline iptr rt_mmap(uptr addr, uptr len, int prot, int flags, int fd, u64 off) {
    return sys6(NR_mmap, (iptr)addr, (iptr)len, prot, flags, fd, (iptr)off);
}
static inline iptr rt_pread(int fd, void *buf, size_t n, u64 off) {
    return sys4(NR_pread64, fd, buf, n, off);
}
static inline iptr rt_fstat(int fd, struct kstat *st) { return sys2(NR_fstat, fd, st); }
static inline iptr rt_fstatat(int dirfd, const char *path, struct kstat *st, int flags) {
    return sys4(NR_newfstatat, dirfd, path, st, flags);
}

#endif
