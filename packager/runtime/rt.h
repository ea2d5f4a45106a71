/* rt.h: declarations shared by the litebox-pack runtime's C files (see runtime.c for the design).
 *
 * One source tree builds two runtimes: x86-64 (gcc -m64) for x86-64 guests and i386 (gcc -m32)
 * for i386 guests. What differs between them (syscall numbers and conventions, kernel structure
 * layouts, the callback's register frame, the ELF class) lives in arch_x86_64.h and
 * arch_i386.h; everything here is common. Words that hold addresses or syscall arguments and
 * results are uptr/iptr (register-sized); u64 is always 64 bits (file offsets, signal sets,
 * fields the kernel defines as __u64).
 *
 * Everything here is freestanding: no libc headers, no errno, no TLS. The constants below are
 * the Linux ABI values; they are spelled out so the runtime builds with a bare compiler (no
 * libc6-dev, no linux-libc-dev). */
#ifndef LITEBOX_RT_H
#define LITEBOX_RT_H

typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long uptr; /* a register: address, syscall argument or result */
typedef long iptr;
typedef __SIZE_TYPE__ size_t;

#define NULL ((void *)0)
#define PAGE 4096UL
#define PAGE_DOWN(x) ((uptr)(x) & ~(PAGE - 1))
#define PAGE_UP(x) (((uptr)(x) + PAGE - 1) & ~(PAGE - 1))
#define RT_PATH_MAX 4096
#define STRICT_STATUS 125 /* exit status of a --strict or --strict-files stop; see run.py */
#define LAUNCH_STATUS 127 /* the runtime could not load a program after an execve */

#if defined(__x86_64__)
#include "arch_x86_64.h"
#elif defined(__i386__)
#include "arch_i386.h"
#else
#error "the runtime is built for x86-64 or i386"
#endif

/* --- ABI constants (the same on both) ------------------------------------------------------------ */
#define AT_FDCWD (-100)
#define AT_SYMLINK_NOFOLLOW 0x100
#define AT_EMPTY_PATH 0x1000
#define O_RDONLY 0
#define O_WRONLY 1
#define O_RDWR 2
#define O_ACCMODE 3
#define O_TRUNC 01000
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
#define MAP_FAILED_MAX ((uptr)-4096) /* raw syscall results above this are -errno */
#define CLONE_VM 0x100
#define CLONE_VFORK 0x4000
#define CLONE_THREAD 0x10000
#define SIGCHLD 17
#define SIGSYS 31
#define SIG_BLOCK 0
#define SIG_UNBLOCK 1
#define SIG_SETMASK 2
#define SIGBIT(s) ((u64)1 << ((s)-1))
#define SA_SIGINFO 4
#define SA_RESTORER 0x04000000
#define SA_NODEFER 0x40000000
#define SYS_SECCOMP 1 /* si_code of a seccomp SIGSYS */
#define X_OK 1
#define S_IFMT 0170000
#define S_IFDIR 0040000
#define S_IFLNK 0120000
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
#define ENOSYS 38
#define ELOOP 40

struct ksigaction { /* what rt_sigaction reads and writes (the same shape on both) */
    void *handler;
    unsigned long flags;
    void *restorer;
    u64 mask;
};

static inline int is_err(uptr r) { return r > MAP_FAILED_MAX; }

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
/* snprintf subset: %s %c %d %u %x %ld %lu %lx %% (and %p); l is a word (uptr). Returns the
 * length written. */
int rt_fmt(char *buf, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void rt_write_all(int fd, const char *s, size_t n);
/* One line on the runtime's stderr, prefixed with "litebox-pack run: ". */
void rt_say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
__attribute__((noreturn)) void rt_exit(int status);
/* Fresh zeroed private memory (lazily backed), or NULL. */
void *rt_map_anon(uptr len);
/* Reads exactly n bytes at off; returns 0 on success. */
int rt_pread_full(int fd, void *buf, size_t n, u64 off);

/* --- ELF facts both the loader and the mmap hook need --------------------------------------------- */
struct elf_facts {
    u16 type;        /* ET_EXEC or ET_DYN */
    uptr entry;      /* e_entry (link-time) */
    u64 phoff;       /* e_phoff */
    u16 phnum;
    uptr lo, hi;     /* page-aligned span of the PT_LOADs (link-time) */
    uptr phdr_vaddr; /* link-time address of the program headers, 0 when not loaded */
    u64 interp_off, interp_len;
    u64 blob_off;                /* trailer; blob_size 0: no trampoline */
    uptr blob_vaddr, blob_size;
    int bad_trailer;             /* a LITEBOX trailer is there but invalid */
};
#define ET_EXEC 2
#define ET_DYN 3
#define PT_LOAD 1
#define PT_INTERP 3
#define PT_PHDR 6
#define PF_X 1
#define PF_W 2
#define PF_R 4
#define NO_SEGMENT (~(uptr)0)
#define NO_OFFSET (~(u64)0)

/* Reads the ELF header, program headers and trailer of fd. Returns 0 or -errno (-ENOEXEC for
 * anything that is not a loadable ELF of this runtime's class and machine). When seg_off_match
 * != NO_OFFSET, *seg_vaddr receives the page-aligned vaddr of the PT_LOAD whose page-aligned
 * file offset equals it (NO_SEGMENT if none). */
int rt_elf_facts(int fd, struct elf_facts *f, u64 seg_off_match, uptr *seg_vaddr);
/* Maps a trampoline blob at bias + vaddr, fills the callback slot and makes it R+X.
 * fixed_flags is MAP_FIXED (inside a reservation we own) or MAP_FIXED_NOREPLACE. Returns the
 * address or -errno: test it with is_err, since i386 addresses above 2 GiB are negative as iptr. */
iptr rt_map_blob(int fd, const struct elf_facts *f, uptr bias, int fixed_flags);

/* --- globals set up by the loader, read by the callback ------------------------------------------- */
#define RT_MAX_BINDS 8
struct rt_config {
    char bundle[RT_PATH_MAX]; /* --host-fs: the bundle's directory, absolute, no trailing slash */
    size_t bundle_len;        /* 0 in the LiteBox view: no path is ever translated */
    int view_host;            /* 0: the LiteBox view, 1: --host-fs */
    /* Kept across execve and guarded from the guest (view.c): the host's /proc, the host's /
     * and the record file (-1 when there is none). */
    int fd_proc, fd_host, fd_rec;
    int strict_files;
    int nbinds;
    char bind_dest[RT_MAX_BINDS][256]; /* guest directories of --bind: writable, like /tmp */
    char exe[RT_PATH_MAX];    /* the guest's /proc/self/exe, as the guest should see it */
    char exe_host[RT_PATH_MAX]; /* the file actually loaded, for open("/proc/self/exe") */
    int abi_resume;             /* 0: redzone stubs, 1: resume stubs (x86-64 only) */
    int trace, strict;
    int filtered; /* our seccomp filter is in force in this process */
    uptr callback; /* the address written into every slot */
    uptr text_lo, text_hi;
};
extern struct rt_config rt_cfg;

/* entry.S / entry32.S */
void rt_sigrestorer(void);
/* clone/clone3 whose child starts on a struct child_start (see the arch header). */
iptr rt_clone_raw(iptr nr, iptr a0, iptr a1, iptr a2, iptr a3, iptr a4);
__attribute__((noreturn)) void rt_enter_guest(uptr entry, uptr sp);
/* An escaped sigreturn (nr: x86-64 has rt_sigreturn only, i386 also the old sigreturn),
 * issued from the runtime's text at the guest's stack pointer. */
__attribute__((noreturn)) void rt_sigreturn_at(uptr sp, uptr nr);

/* callback.c */
void rt_dispatch(struct regs *r);
void rt_sigsys(int sig, struct ksiginfo *si, struct kucontext *uc);
/* Copies n bytes of guest memory at src: 0 or -EFAULT (never faults itself). */
int rt_peek(void *dst, uptr src, size_t n);
/* Resolves an absolute guest path into the bundle when the bundle has a non-directory there.
 * Returns buf (bundle path) or NULL (use the guest path as is). */
const char *rt_bundle_path(const char *path, char *buf);

/* view.c */
/* Opens the descriptors the runtime keeps (the host's /proc and /, the record file). */
void rt_view_open_fds(const char *report);
/* Builds the guest's file system (a new user and mount namespace) and enters it; returns 0 or
 * -errno from unshare when user namespaces are not available. */
int rt_view_build(const char *stage, const char *lower, const char *const *binds, int nbinds);

/* records.c */
#define RT_NCOUNT 512 /* counters per syscall number; larger numbers share the last one */
const char *rt_syscall_name(uptr nr);
void rt_count(uptr nr, uptr site);
void rt_escape_hit(uptr addr, uptr nr);
void rt_child_after_fork(void);
void rt_dump_records(const char *why);
/* One record line "KIND pid HEAD PATH" (see report.py), written at once to the record file. */
void rt_note(char kind, const char *head, const char *path);
void rt_trace(uptr nr, iptr res, uptr site, int done);
__attribute__((noreturn)) void rt_strict_stop(uptr nr, uptr addr);
/* --strict-files: the guest looked up `path`, which the bundle lacks and the host has. */
__attribute__((noreturn)) void rt_strict_files_stop(uptr nr, uptr site, const char *path);

#endif
