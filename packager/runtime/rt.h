/* rt.h: declarations shared by the litebox-pack runtime's C files (see loader.c for the design).
 *
 * Everything here is freestanding: no libc headers, no errno, no TLS. The constants below are
 * the x86-64 Linux ABI values; they are spelled out so the runtime builds with a bare compiler
 * (no libc6-dev, no linux-libc-dev). */
#ifndef LITEBOX_RT_H
#define LITEBOX_RT_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long u64;
typedef long i64;
typedef unsigned long size_t;

#define NULL ((void *)0)
#define PAGE 4096UL
#define PAGE_DOWN(x) ((u64)(x) & ~(PAGE - 1))
#define PAGE_UP(x) (((u64)(x) + PAGE - 1) & ~(PAGE - 1))
#define RT_PATH_MAX 4096
#define STRICT_STATUS 125 /* exit status of a --strict stop; documented in run.py */
#define LAUNCH_STATUS 127 /* the runtime could not load a program after an execve */

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
#define NR_faccessat 269
#define NR_getrandom 318
#define NR_seccomp 317
#define NR_execveat 322
#define NR_statx 332
#define NR_clone3 435
#define NR_openat2 437
#define NR_faccessat2 439

/* --- ABI constants ---------------------------------------------------------------------------- */
#define AT_FDCWD (-100)
#define AT_SYMLINK_NOFOLLOW 0x100
#define AT_EMPTY_PATH 0x1000
#define O_RDONLY 0
#define O_WRONLY 1
#define O_CREAT 0100
#define O_APPEND 02000
#define O_DIRECTORY 0200000
#define O_CLOEXEC 02000000
#define O_PATH 010000000
#define PROT_NONE 0
#define PROT_READ 1
#define PROT_WRITE 2
#define PROT_EXEC 4
#define MAP_SHARED 0x01
#define MAP_PRIVATE 0x02
#define MAP_FIXED 0x10
#define MAP_ANONYMOUS 0x20
#define MAP_NORESERVE 0x4000
#define MAP_FIXED_NOREPLACE 0x100000
#define MAP_FAILED_MAX (-4096UL) /* raw mmap results above this are -errno */
#define CLONE_VM 0x100
#define CLONE_VFORK 0x4000
#define CLONE_THREAD 0x10000
#define SIGCHLD 17
#define SIGSYS 31
#define SIG_BLOCK 0
#define SIG_UNBLOCK 1
#define SIG_SETMASK 2
#define SIGBIT(s) (1UL << ((s)-1))
#define SA_SIGINFO 4
#define SA_RESTORER 0x04000000
#define SA_NODEFER 0x40000000
#define SYS_SECCOMP 1 /* si_code of a seccomp SIGSYS */
#define X_OK 1
#define S_IFMT 0170000
#define S_IFDIR 0040000
#define S_IFREG 0100000

#define EPERM 1
#define ENOENT 2
#define EINTR 4
#define E2BIG 7
#define ENOEXEC 8
#define EBADF 9
#define ENOMEM 12
#define EACCES 13
#define EFAULT 14
#define EEXIST 17
#define ENOTDIR 20
#define EISDIR 21
#define EINVAL 22
#define ENAMETOOLONG 36
#define ELOOP 40

/* --- kernel structures (x86-64 layouts) -------------------------------------------------------- */
struct kstat { /* struct stat as the kernel fills it on x86-64 (144 bytes) */
    u64 st_dev, st_ino, st_nlink;
    u32 st_mode, st_uid, st_gid, pad0;
    u64 st_rdev;
    i64 st_size, st_blksize, st_blocks;
    u64 st_atime_, st_atime_ns, st_mtime_, st_mtime_ns, st_ctime_, st_ctime_ns;
    i64 reserved[3];
};

struct ksigaction { /* what rt_sigaction reads and writes */
    void *handler;
    u64 flags;
    void *restorer;
    u64 mask;
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

/* --- the guest's registers at a syscall --------------------------------------------------------
 * Pushed by the callback entry in entry.S (lowest address first) and also built from a ucontext
 * by the SIGSYS handler. rip is where the guest continues after the syscall. */
struct regs {
    u64 r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rbx, rax, rip, rflags;
};

/* The record a cloned child with a new stack starts on (see rt_clone_raw in entry.S). */
struct child_start {
    u64 reset; /* nonzero: a new process (no CLONE_VM): clear the inherited counters */
    struct regs r;
    u64 rsp;
};

/* --- raw syscalls ------------------------------------------------------------------------------- */
static inline i64 sys6(i64 n, i64 a, i64 b, i64 c, i64 d, i64 e, i64 f) {
    register i64 r10 __asm__("r10") = d;
    register i64 r8 __asm__("r8") = e;
    register i64 r9 __asm__("r9") = f;
    i64 ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                     : "rcx", "r11", "memory");
    return ret;
}
#define sys0(n) sys6((n), 0, 0, 0, 0, 0, 0)
#define sys1(n, a) sys6((n), (i64)(a), 0, 0, 0, 0, 0)
#define sys2(n, a, b) sys6((n), (i64)(a), (i64)(b), 0, 0, 0, 0)
#define sys3(n, a, b, c) sys6((n), (i64)(a), (i64)(b), (i64)(c), 0, 0, 0)
#define sys4(n, a, b, c, d) sys6((n), (i64)(a), (i64)(b), (i64)(c), (i64)(d), 0, 0)
#define sys5(n, a, b, c, d, e) sys6((n), (i64)(a), (i64)(b), (i64)(c), (i64)(d), (i64)(e), 0)

static inline int is_err(u64 r) { return r > MAP_FAILED_MAX; }

/* --- lib.c: freestanding helpers ----------------------------------------------------------------- */
void *memcpy(void *d, const void *s, size_t n);
void *memmove(void *d, const void *s, size_t n);
void *memset(void *d, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t rt_strlen(const char *s);
int rt_streq(const char *a, const char *b);
int rt_startswith(const char *s, const char *prefix);
/* Copies at most cap-1 bytes and always terminates; returns the full length of src. */
size_t rt_strlcpy(char *d, const char *s, size_t cap);
/* snprintf subset: %s %c %d %u %x %ld %lu %lx %% (and %p). Returns the length written. */
int rt_fmt(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void rt_write_all(int fd, const char *s, size_t n);
/* One line on the runtime's stderr, prefixed with "litebox-pack run: ". */
void rt_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void rt_exit(int status);
/* Fresh zeroed private memory (lazily backed), or NULL. */
void *rt_map_anon(u64 len);
/* Reads exactly n bytes at off; returns 0 on success. */
int rt_pread_full(int fd, void *buf, size_t n, u64 off);

/* --- ELF facts both the loader and the mmap hook need --------------------------------------------- */
struct elf_facts {
    u16 type;       /* ET_EXEC or ET_DYN */
    u64 entry;      /* e_entry (link-time) */
    u64 phoff;      /* e_phoff */
    u16 phnum;
    u64 lo, hi;     /* page-aligned span of the PT_LOADs (link-time) */
    u64 phdr_vaddr; /* link-time address of the program headers, 0 when not loaded */
    u64 interp_off, interp_len;
    u64 blob_off, blob_vaddr, blob_size; /* trailer; blob_size 0: no trampoline */
    int bad_trailer;                     /* a LITEBOX trailer is there but invalid */
};
#define ET_EXEC 2
#define ET_DYN 3

struct phdr64 {
    u32 type, flags;
    u64 offset, vaddr, paddr, filesz, memsz, align;
};
#define PT_LOAD 1
#define PT_INTERP 3
#define PT_PHDR 6
#define PF_X 1
#define PF_W 2
#define PF_R 4

/* Reads the ELF header, program headers and trailer of fd. Returns 0 or -errno (-ENOEXEC for
 * anything that is not a loadable x86-64 ELF). When seg_off_match != ~0UL, *seg_vaddr receives
 * the page-aligned vaddr of the PT_LOAD whose page-aligned file offset equals it (~0UL if none). */
int rt_elf_facts(int fd, struct elf_facts *f, u64 seg_off_match, u64 *seg_vaddr);
/* Maps a trampoline blob at bias + vaddr, fills the callback slot and makes it R+X.
 * fixed_flags is MAP_FIXED (inside a reservation we own) or MAP_FIXED_NOREPLACE. */
i64 rt_map_blob(int fd, const struct elf_facts *f, u64 bias, int fixed_flags);

/* --- globals set up by the loader, read by the callback ------------------------------------------- */
struct rt_config {
    char bundle[RT_PATH_MAX]; /* absolute, no trailing slash */
    size_t bundle_len;
    char self[RT_PATH_MAX];   /* this runtime, for execve */
    char report[RT_PATH_MAX]; /* record file (appended per process), "" for none */
    char exe[RT_PATH_MAX];    /* the guest's /proc/self/exe, as the guest should see it */
    char exe_host[RT_PATH_MAX]; /* the file actually loaded, for open("/proc/self/exe") */
    int abi_resume;             /* 0: redzone stubs, 1: resume stubs */
    int trace, strict;
    int filtered; /* our seccomp filter is in force in this process */
    u64 callback; /* the address written into every slot */
    u64 text_lo, text_hi;
};
extern struct rt_config rt_cfg;

/* entry.S */
void rt_callback_redzone(void);
void rt_callback_resume(void);
void rt_sigrestorer(void);
i64 rt_clone_raw(i64 nr, i64 a0, i64 a1, i64 a2, i64 a3, i64 a4);
__attribute__((noreturn)) void rt_enter_guest(u64 entry, u64 sp);
__attribute__((noreturn)) void rt_sigreturn_at(u64 rsp);

/* callback.c */
void rt_dispatch(struct regs *r);
void rt_sigsys(int sig, struct ksiginfo *si, struct kucontext *uc);
/* Resolves an absolute guest path into the bundle when the bundle has a non-directory there.
 * Returns buf (bundle path) or NULL (use the guest path as is). */
const char *rt_bundle_path(const char *path, char *buf);

/* records.c */
#define RT_NCOUNT 512 /* counters per syscall number; larger numbers share the last one */
const char *rt_syscall_name(u64 nr);
void rt_count(u64 nr, u64 site);
void rt_escape_hit(u64 addr, u64 nr);
void rt_child_after_fork(void);
void rt_dump_records(const char *why);
void rt_trace(u64 nr, i64 res, u64 site, int done);
__attribute__((noreturn)) void rt_strict_stop(u64 nr, u64 addr);

#endif
