/* arch_i386.h: what the i386 runtime needs to know about its ABI (included by rt.h only).
 * Syscalls use `int $0x80` with the number in EAX and EBX ECX EDX ESI EDI EBP as arguments; the
 * kernel structures are the i386 layouts (what a 64-bit kernel shows a 32-bit process). Built
 * with -fno-pic, so EBX is an ordinary register, and the runtime never touches GS: glibc keeps
 * its thread pointer there, and the callback runs on guest threads. */
#ifndef LITEBOX_ARCH_H
#define LITEBOX_ARCH_H

typedef unsigned long long u64;
typedef long long i64;

#define ARCH_NAME "i386"
#define ARCH_PLATFORM "i686" /* AT_PLATFORM, as the kernel gives a 32-bit process */
#define AUDIT_ARCH_SELF 0x40000003U
#define ELF_CLASS 1 /* ELFCLASS32 */
#define ELF_MACHINE 3 /* EM_386 */
#define TRAILER_SIZE 20
#define USER_ADDR_END (1ULL << 32)

/* --- syscall numbers (asm/unistd_32.h) --------------------------------------------------------- */
#define NR_exit 1
#define NR_fork 2
#define NR_read 3
#define NR_write 4
#define NR_open 5
#define NR_close 6
#define NR_execve 11
#define NR_oldstat 18
#define NR_getpid 20
#define NR_access 33
#define NR_brk 45
#define NR_signal 48
#define NR_getppid 64
#define NR_sigaction 67
#define NR_oldlstat 84
#define NR_readlink 85
#define NR_mmap 90 /* old_mmap: one pointer to the six arguments */
#define NR_munmap 91
#define NR_stat 106
#define NR_lstat 107
#define NR_sigreturn 119
#define NR_clone 120
#define NR_mprotect 125
#define NR_sigprocmask 126
#define NR_prctl 172
#define NR_rt_sigreturn 173
#define NR_rt_sigaction 174
#define NR_rt_sigprocmask 175
#define NR_pread64 180
#define NR_vfork 190
#define NR_mmap2 192 /* offset in pages */
#define NR_stat64 195
#define NR_lstat64 196
#define NR_fstat64 197
#define NR_gettid 224
#define NR_exit_group 252
#define NR_tgkill 270
#define NR_openat 295
#define NR_fstatat64 300
#define NR_readlinkat 305
#define NR_chdir 12
#define NR_getcwd 183
#define NR_faccessat 307
#define NR_process_vm_readv 347
#define NR_seccomp 354
#define NR_getrandom 355
#define NR_execveat 358
#define NR_statx 383
#define NR_clone3 435
#define NR_openat2 437
#define NR_faccessat2 439
#define NR_fstatat NR_fstatat64 /* the *at stat the runtime itself uses */

/* --- the LiteBox view (view.c) and the calls callback.c checks ------------------------------ */
#define NR_getuid 199 /* getuid32 */
#define NR_getgid 200 /* getgid32 */
#define NR_getrlimit 191 /* ugetrlimit */
#define NR_umask 60
#define NR_writev 146
#define NR_mount_setattr 442
#define NR_mount 21
#define NR_umount2 52
#define NR_pivot_root 217
#define NR_unshare 310
#define NR_capset 185
#define NR_mkdir 39
#define NR_rmdir 40
#define NR_creat 8
#define NR_link 9
#define NR_unlink 10
#define NR_symlink 83
#define NR_chmod 15
#define NR_fchmod 94
#define NR_chown 212 /* chown32 */
#define NR_lchown 198 /* lchown32 */
#define NR_chown16 182
#define NR_lchown16 16
#define NR_rename 38
#define NR_truncate 92
#define NR_truncate64 193
#define NR_mknod 14
#define NR_utime 30
#define NR_utimes 271
#define NR_dup 41
#define NR_dup2 63
#define NR_dup3 330
#define NR_fcntl 55
#define NR_fcntl64 221
#define NR_fchdir 133
#define NR_getdents 141
#define NR_getdents64 220
#define NR_mkdirat 296
#define NR_mknodat 297
#define NR_fchownat 298
#define NR_futimesat 299
#define NR_unlinkat 301
#define NR_renameat 302
#define NR_linkat 303
#define NR_symlinkat 304
#define NR_fchmodat 306
#define NR_utimensat 320
#define NR_name_to_handle_at 341
#define NR_renameat2 353
#define NR_open_tree 428
#define NR_move_mount 429
#define NR_close_range 436
#define NR_fchmodat2 452
#define NR_inotify_add_watch 292
#define NR_fanotify_mark 339

/* --- kernel structures (i386 layouts; long long is 4-aligned inside structs here) -------------- */
struct kstat { /* struct stat64, what fstat64/fstatat64 fill (96 bytes) */
    u64 st_dev;
    u32 pad0, st_ino32, st_mode, st_nlink, st_uid, st_gid;
    u64 st_rdev;
    u32 pad3;
    i64 st_size;
    u32 st_blksize;
    u64 st_blocks;
    u32 st_atime_, st_atime_ns, st_mtime_, st_mtime_ns, st_ctime_, st_ctime_ns;
    u64 st_ino;
};

struct ksiginfo { /* the SIGSYS view of siginfo_t */
    int si_signo, si_errno, si_code;
    u32 call_addr; /* address after the syscall instruction */
    int syscall;
    u32 arch;
    u8 rest[104];
};

struct sigcontext32 { /* uc_mcontext */
    u16 gs, gsh, fs, fsh, es, esh, ds, dsh;
    u32 edi, esi, ebp, esp, ebx, edx, ecx, eax, trapno, err, eip;
    u16 cs, csh;
    u32 eflags, esp_at_signal;
    u16 ss, ssh;
    u32 fpstate, oldmask, cr2;
};

struct kucontext {
    u32 uc_flags;
    void *uc_link;
    void *ss_sp;
    u32 ss_flags;
    u32 ss_size;
    struct sigcontext32 mc;
    u64 uc_sigmask;
};

struct phdr { /* Elf32_Phdr */
    u32 type, offset, vaddr, paddr, filesz, memsz, flags, align;
};

struct ehdr { /* Elf32_Ehdr */
    u8 ident[16];
    u16 type, machine;
    u32 version, entry, phoff, shoff, flags;
    u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};

/* --- the guest's registers at a syscall --------------------------------------------------------
 * The stub arrives with [ESP] = its continuation and [ESP+4] = the guest's EAX (the number);
 * entry32.S pushes EFLAGS and then PUSHAD's eight registers below them, so this is the frame
 * from ESP upwards. The guest's own ESP is &nr + 1. Also built from a ucontext by the SIGSYS
 * handler. */
struct regs {
    u32 edi, esi, ebp, esp_pushad, ebx, edx, ecx;
    u32 eax; /* the number on entry (copied from nr), the result on return (POPAD loads it) */
    u32 eflags;
    u32 eip; /* where the guest continues after the syscall */
    u32 nr;  /* the EAX the stub pushed; RET 4 drops it */
};
#define REG_NR(r) ((r)->eax)
#define REG_A0(r) ((r)->ebx)
#define REG_A1(r) ((r)->ecx)
#define REG_A2(r) ((r)->edx)
#define REG_A3(r) ((r)->esi)
#define REG_A4(r) ((r)->edi)
#define REG_A5(r) ((r)->ebp)

/* The site a trampolined syscall came from, for the report: the stub's CALL [EAX+d32] (6 bytes
 * before its continuation), one per patched syscall. */
#define REG_SITE(r) ((r)->eip - 6)

/* The SIGSYS handler's view of the guest: its stack pointer, where the result goes, and the
 * registers as a struct regs. */
#define IS_SIGRETURN(nr) ((nr) == NR_rt_sigreturn || (nr) == NR_sigreturn)
#define UC_SP(uc) ((uc)->mc.esp)
#define UC_RESULT(uc) ((uc)->mc.eax)
static inline void regs_from_uc(struct regs *r, const struct kucontext *uc, uptr nr) {
    const struct sigcontext32 *mc = &uc->mc;
    *r = (struct regs){mc->edi, mc->esi, mc->ebp,    0,       mc->ebx, mc->edx,
                       mc->ecx, (u32)nr, mc->eflags, mc->eip, (u32)nr};
}

/* The record a cloned child with a new stack starts on (see rt_clone_raw in entry32.S): it
 * lies right below the child's stack pointer, so after POPAD and POPFD the child's ESP points
 * at eip and a RET both jumps there and leaves ESP at exactly the guest's new stack pointer.
 * The guest's data lives at and above that pointer (glibc's clone stores its function there),
 * and without a red zone on i386 the words below it are free. */
struct child_start {
    u32 reset; /* nonzero: a new process (no CLONE_VM): clear the inherited counters */
    u32 edi, esi, ebp, esp_pushad, ebx, edx, ecx, eax;
    u32 eflags;
    u32 eip;
};

static inline struct child_start *child_record(const struct regs *r, uptr top, int reset) {
    struct child_start *cs = (struct child_start *)(top - sizeof *cs);
    *cs = (struct child_start){(u32)reset, r->edi, r->esi, r->ebp, 0,     r->ebx,
                               r->edx,     r->ecx, 0,      r->eflags, r->eip};
    return cs;
}

/* entry32.S */
void rt_callback_i386(void);
void rt_vsyscall(void); /* AT_SYSINFO */
void rt_restore(void);    /* signal restorers the runtime supplies */
void rt_restore_rt(void);
void rt_vsyscall_dispatch(struct regs *r); /* callback.c */
#define AT_SYSINFO 32
#define AT_SYSINFO_EHDR 33
#define PT_DYNAMIC 2


/* --- raw syscalls ------------------------------------------------------------------------------- */
/* Always int $0x80, from the runtime's own text, which is all the seccomp filter trusts. (The
 * vDSO's SYSENTER/SYSCALL is much faster on some hosts, but the kernel reports those syscalls
 * at the vDSO's landing pad wherever they came from, so trusting it would let a raw SYSENTER in
 * guest code through unseen.) Up to five arguments inline; EBP (the sixth) cannot be named in a
 * constraint, so six go through rt_syscall6 in entry32.S. */
static inline iptr sys5_(iptr n, iptr a, iptr b, iptr c, iptr d, iptr e) {
    iptr ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "a"(n), "b"(a), "c"(b), "d"(c), "S"(d), "D"(e)
                     : "memory");
    return ret;
}
iptr rt_syscall6(iptr n, iptr a, iptr b, iptr c, iptr d, iptr e, iptr f);
#define sys6(n, a, b, c, d, e, f) rt_syscall6((n), (a), (b), (c), (d), (e), (f))
#define sys0(n) sys5_((n), 0, 0, 0, 0, 0)
#define sys1(n, a) sys5_((n), (iptr)(a), 0, 0, 0, 0)
#define sys2(n, a, b) sys5_((n), (iptr)(a), (iptr)(b), 0, 0, 0)
#define sys3(n, a, b, c) sys5_((n), (iptr)(a), (iptr)(b), (iptr)(c), 0, 0)
#define sys4(n, a, b, c, d) sys5_((n), (iptr)(a), (iptr)(b), (iptr)(c), (iptr)(d), 0)
#define sys5(n, a, b, c, d, e) sys5_((n), (iptr)(a), (iptr)(b), (iptr)(c), (iptr)(d), (iptr)(e))

/* The calls whose form differs between the two ABIs, for the runtime's own use. */
static inline iptr rt_mmap(uptr addr, uptr len, int prot, int flags, int fd, u64 off) {
    if (off & (PAGE - 1))
        return -22; /* EINVAL, as mmap says for an unaligned offset */
    return sys6(NR_mmap2, (iptr)addr, (iptr)len, prot, flags, fd, (iptr)(off >> 12));
}
static inline iptr rt_pread(int fd, void *buf, size_t n, u64 off) {
    return sys5(NR_pread64, fd, buf, n, (u32)off, (u32)(off >> 32));
}
static inline iptr rt_fstat(int fd, struct kstat *st) { return sys2(NR_fstat64, fd, st); }
static inline iptr rt_fstatat(int dirfd, const char *path, struct kstat *st, int flags) {
    return sys4(NR_fstatat64, dirfd, path, st, flags);
}

#endif
