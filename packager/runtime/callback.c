/* callback.c: what happens at each guest syscall, through a trampoline (rt_dispatch, entered
 * from entry.S) or escaped (rt_sigsys, the seccomp SIGSYS handler). Everything here runs on a
 * guest thread with the guest's FS and stack: keep it freestanding, keep stack use modest
 * (signal handlers may run on small alternate stacks), and share state between threads only
 * through atomics. The counters and records for the report live in records.c. */
#include "rt.h"

#define BLOB_SLOTS 512
#define AUDIT_ARCH_X86_64 0xC000003EU
#define SIG_DFL ((void *)0)
#define SIG_IGN ((void *)1)
#define SIGKILL 9
#define SIGSTOP 19

/* --- shared state ----------------------------------------------------------------------------- */

/* The guest's own wish for SIGSYS, kept aside: the real disposition stays the runtime's. */
static struct ksigaction guest_sigsys;

/* Trampoline blobs mapped after start-up (libraries), so a later PROT_EXEC mapping of the same
 * object does not map it twice and an unmapped reservation takes its blob with it. */
struct blob_rec {
    u64 at, len;           /* the blob mapping */
    u64 res_base, res_len; /* the widened reservation it belongs to (0 if none) */
};
static struct blob_rec blobs[BLOB_SLOTS];
static int blob_lock; /* tid of the holder, 0 when free */

static const u8 special[RT_NCOUNT] = {
    [NR_open] = 1,        [NR_stat] = 1,         [NR_lstat] = 1,      [NR_access] = 1,
    [NR_readlink] = 1,    [NR_execve] = 1,       [NR_openat] = 1,     [NR_newfstatat] = 1,
    [NR_readlinkat] = 1,  [NR_faccessat] = 1,    [NR_faccessat2] = 1, [NR_statx] = 1,
    [NR_openat2] = 1,     [NR_execveat] = 1,     [NR_mmap] = 1,       [NR_munmap] = 1,
    [NR_clone] = 1,       [NR_clone3] = 1,       [NR_fork] = 1,       [NR_vfork] = 1,
    [NR_exit] = 1,        [NR_exit_group] = 1,   [NR_rt_sigaction] = 1,
    [NR_rt_sigprocmask] = 1,
};

/* --- paths ---------------------------------------------------------------------------------------- */

const char *rt_bundle_path(const char *path, char *buf) {
    if (!path || path[0] != '/' || !rt_cfg.bundle_len)
        return NULL;
    u64 n = 0;
    while (path[n] && n < RT_PATH_MAX)
        n++;
    if (n + rt_cfg.bundle_len >= RT_PATH_MAX)
        return NULL;
    memcpy(buf, rt_cfg.bundle, rt_cfg.bundle_len);
    memcpy(buf + rt_cfg.bundle_len, path, n + 1);
    struct kstat st;
    if (sys4(NR_newfstatat, AT_FDCWD, buf, &st, 0) < 0)
        return NULL;
    /* Directories stay the host's: the bundle only adds files (ls / must list the host's /). */
    if ((st.st_mode & S_IFMT) == S_IFDIR)
        return NULL;
    return buf;
}

/* "/proc/self/exe" and friends name the runtime; the guest must see its own program. */
static int is_self_exe(const char *p) {
    if (!p || !rt_startswith(p, "/proc/"))
        return 0;
    p += 6;
    if (rt_streq(p, "self/exe") || rt_streq(p, "thread-self/exe"))
        return 1;
    u64 v = 0;
    const char *d = p;
    while (*d >= '0' && *d <= '9')
        v = v * 10 + (u64)(*d++ - '0');
    return d != p && rt_streq(d, "/exe") && (i64)v == sys0(NR_getpid);
}

static i64 readlink_exe(char *buf, i64 size) {
    i64 n = (i64)rt_strlen(rt_cfg.exe);
    if (size <= 0)
        return -EINVAL;
    if (n > size)
        n = size;
    memcpy(buf, rt_cfg.exe, (u64)n);
    return n;
}

/* A syscall whose argument number `idx` is a path: bundle first, host otherwise. */
static i64 path_call(struct regs *r, u64 nr, int idx) {
    i64 a[6] = {(i64)r->rdi, (i64)r->rsi, (i64)r->rdx, (i64)r->r10, (i64)r->r8, (i64)r->r9};
    const char *path = (const char *)a[idx];
    if (is_self_exe(path)) {
        if (nr == NR_readlink)
            return readlink_exe((char *)a[1], a[2]);
        if (nr == NR_readlinkat)
            return readlink_exe((char *)a[2], a[3]);
        if (nr == NR_open || nr == NR_openat || nr == NR_openat2)
            path = rt_cfg.exe_host;
    }
    char buf[RT_PATH_MAX];
    const char *b = rt_bundle_path(path, buf);
    a[idx] = (i64)(b ? b : path);
    return sys6((i64)nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* --- execve: back through the runtime ---------------------------------------------------------- */

/* The path of what fd refers to (plus rel), as the guest would name it: a bundle file at its
 * in-bundle path. A descriptor without a usable name (memfd, deleted file) stays
 * /proc/self/fd/N, which works unless it is close-on-exec. */
static const char *fd_path(int fd, const char *rel, char *buf, u64 cap) {
    char link[32];
    rt_fmt(link, sizeof link, "/proc/self/fd/%d", fd);
    i64 n = sys3(NR_readlink, link, buf, cap - 1);
    const char *deleted = " (deleted)";
    u64 dl = rt_strlen(deleted);
    if (n <= 0 || buf[0] != '/' || ((u64)n >= dl && memcmp(buf + n - dl, deleted, dl) == 0)) {
        n = rt_fmt(buf, cap, "%s", link);
    } else {
        buf[n] = 0;
        if (rt_startswith(buf, rt_cfg.bundle) && buf[rt_cfg.bundle_len] == '/') {
            memmove(buf, buf + rt_cfg.bundle_len, (u64)n - rt_cfg.bundle_len + 1);
            n -= (i64)rt_cfg.bundle_len;
        }
    }
    if (rel && rel[0]) {
        if ((u64)n + 1 + rt_strlen(rel) >= cap)
            return NULL;
        rt_fmt(buf + n, cap - (u64)n, "/%s", rel);
    }
    return buf;
}

static i64 do_execve(struct regs *r, u64 nr, struct kucontext *uc) {
    const char *path;
    char **argv, **envp;
    char pbuf[64 + RT_PATH_MAX];
    if (nr == NR_execve) {
        path = (const char *)r->rdi;
        argv = (char **)r->rsi;
        envp = (char **)r->rdx;
    } else {
        int dirfd = (int)r->rdi;
        path = (const char *)r->rsi;
        argv = (char **)r->rdx;
        envp = (char **)r->r10;
        if (!path)
            return -EFAULT;
        /* fexecve and relative execveat: the new runtime opens files by path, so name it. */
        if ((r->r8 & AT_EMPTY_PATH) && !path[0])
            path = fd_path(dirfd, NULL, pbuf, sizeof pbuf);
        else if (path[0] != '/' && dirfd != AT_FDCWD)
            path = fd_path(dirfd, path, pbuf, sizeof pbuf);
        if (!path)
            return -ENAMETOOLONG;
    }
    if (!path)
        return -EFAULT;
    if (is_self_exe(path))
        path = rt_cfg.exe_host;
    /* Check what the kernel would check before committing, since after our own execve the
     * guest can no longer be told that the file was missing or not executable. */
    char hbuf[RT_PATH_MAX];
    const char *host = rt_bundle_path(path, hbuf);
    if (!host)
        host = path;
    i64 fd = sys3(NR_open, host, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return fd == -EISDIR ? -EACCES : fd;
    struct kstat st;
    u8 head[4] = {0};
    i64 err = sys2(NR_fstat, fd, &st);
    if (err == 0 && (st.st_mode & S_IFMT) != S_IFREG)
        err = -EACCES;
    if (err == 0)
        err = sys3(NR_faccessat, AT_FDCWD, host, X_OK);
    if (err == 0 && (sys4(NR_pread64, fd, head, 4, 0) < 2 ||
                     (memcmp(head, "\177ELF", 4) != 0 && memcmp(head, "#!", 2) != 0)))
        err = -ENOEXEC;
    sys1(NR_close, fd);
    if (err)
        return err;

    const char *opts[16];
    int k = 0;
    opts[k++] = rt_cfg.self;
    opts[k++] = "--bundle";
    opts[k++] = rt_cfg.bundle;
    opts[k++] = "--abi";
    opts[k++] = rt_cfg.abi_resume ? "resume" : "redzone";
    if (rt_cfg.report[0]) {
        opts[k++] = "--report";
        opts[k++] = rt_cfg.report;
    }
    if (rt_cfg.trace)
        opts[k++] = "--trace";
    if (rt_cfg.strict)
        opts[k++] = "--strict";
    if (rt_cfg.filtered)
        opts[k++] = "--seccomp-inherited";
    opts[k++] = "--";
    opts[k++] = path;
    u64 argc = 0;
    while (argv && argv[argc])
        argc++;
    u64 total = (u64)k + argc + 1;
    const char *small[256];
    const char **nv = small;
    u64 bytes = PAGE_UP(total * sizeof(char *));
    if (total > sizeof small / sizeof small[0]) {
        nv = rt_map_anon(bytes);
        if (!nv)
            return -E2BIG;
    }
    for (int i = 0; i < k; i++)
        nv[i] = opts[i];
    for (u64 i = 0; i < argc; i++)
        nv[k + i] = argv[i];
    nv[total - 1] = NULL;
    rt_dump_records("execve");
    u64 saved = 0;
    if (uc) { /* leave the SIGSYS handler's mask behind: the new image inherits the guest's */
        u64 m = uc->uc_sigmask & ~SIGBIT(SIGSYS);
        sys4(NR_rt_sigprocmask, SIG_SETMASK, &m, &saved, 8);
    }
    i64 res = sys3(NR_execve, rt_cfg.self, nv, envp);
    if (uc)
        sys4(NR_rt_sigprocmask, SIG_SETMASK, &saved, NULL, 8);
    if (nv != small)
        sys2(NR_munmap, nv, bytes);
    return res;
}

/* --- clone family ------------------------------------------------------------------------------ */

/* Places the child's start record just below its new stack pointer and clones onto it. */
static i64 clone_on_stack(struct regs *r, u64 nr, u64 flags, u64 top, i64 a0, i64 a1, i64 a2,
                          i64 a3, i64 a4, u64 *child_sp, struct kucontext *uc) {
    struct child_start *cs = (struct child_start *)((top - sizeof *cs) & ~15UL);
    cs->reset = !(flags & CLONE_VM);
    cs->r = *r;
    cs->rsp = top;
    *child_sp = (u64)cs;
    u64 saved = 0;
    if (uc) { /* the child never returns through the handler: give it the guest's mask now */
        u64 m = uc->uc_sigmask & ~SIGBIT(SIGSYS);
        sys4(NR_rt_sigprocmask, SIG_SETMASK, &m, &saved, 8);
    }
    if (nr == NR_clone)
        a1 = (i64)cs;
    i64 res = rt_clone_raw((i64)nr, a0, a1, a2, a3, a4);
    if (uc)
        sys4(NR_rt_sigprocmask, SIG_SETMASK, &saved, NULL, 8);
    return res;
}

static i64 do_clone(struct regs *r, u64 nr, struct kucontext *uc) {
    i64 res;
    u64 sp;
    if (nr == NR_fork || nr == NR_vfork) {
        /* vfork as fork: a vfork child would return through the callback on the parent's stack
         * and overwrite the frame the parent still needs. */
        res = sys0(NR_fork);
        if (res == 0)
            rt_child_after_fork();
        return res;
    }
    if (nr == NR_clone) {
        u64 flags = r->rdi, newsp = r->rsi;
        if (newsp)
            return clone_on_stack(r, nr, flags, newsp, (i64)flags, 0, (i64)r->rdx, (i64)r->r10,
                                  (i64)r->r8, &sp, uc);
        if (flags & CLONE_VFORK)
            flags &= ~(u64)(CLONE_VM | CLONE_VFORK);
        res = sys5(NR_clone, flags, 0, r->rdx, r->r10, r->r8);
        if (res == 0 && !(flags & CLONE_VM))
            rt_child_after_fork();
        return res;
    }
    /* clone3(struct clone_args *, size): stack and stack_size are fields 5 and 6. */
    u64 size = r->rsi;
    u64 args[16];
    if (size < 64 || size > sizeof args)
        return sys2(NR_clone3, r->rdi, size);
    memcpy(args, (void *)r->rdi, size);
    if (args[5]) {
        u64 top = args[5] + args[6];
        struct child_start *cs = (struct child_start *)((top - sizeof *cs) & ~15UL);
        args[6] = (u64)cs - args[5];
        return clone_on_stack(r, nr, args[0], top, (i64)args, (i64)size, 0, 0, 0, &sp, uc);
    }
    if (args[0] & CLONE_VFORK)
        args[0] &= ~(u64)(CLONE_VM | CLONE_VFORK);
    res = sys2(NR_clone3, args, size);
    if (res == 0 && !(args[0] & CLONE_VM))
        rt_child_after_fork();
    return res;
}

/* --- mmap: trampolines of libraries mapped later --------------------------------------------------- */

/* The blob table's lock holds the owner's tid: a signal handler that interrupts its own thread
 * inside the table and maps or unmaps an object goes ahead instead of spinning forever. */
static int lock_blobs(void) {
    int tid = (int)sys0(NR_gettid), free_ = 0;
    if (__atomic_load_n(&blob_lock, __ATOMIC_RELAXED) == tid)
        return 0;
    while (!__atomic_compare_exchange_n(&blob_lock, &free_, tid, 0, __ATOMIC_ACQUIRE,
                                        __ATOMIC_RELAXED)) {
        free_ = 0;
        __builtin_ia32_pause();
    }
    return 1;
}

static void unlock_blobs(int taken) {
    if (taken)
        __atomic_store_n(&blob_lock, 0, __ATOMIC_RELEASE);
}

static struct blob_rec *blob_find(u64 at) {
    for (int i = 0; i < BLOB_SLOTS; i++)
        if (blobs[i].at == at)
            return &blobs[i];
    return NULL;
}

static void blob_add(u64 at, u64 len, u64 res_base, u64 res_len) {
    struct blob_rec *b = blob_find(0);
    if (b)
        *b = (struct blob_rec){at, len, res_base, res_len};
}

static i64 do_mmap(struct regs *r) {
    u64 addr = r->rdi, len = r->rsi, prot = r->rdx, flags = r->r10, off = r->r9;
    int fd = (int)r->r8;
    i64 raw = 0;
    if ((flags & MAP_ANONYMOUS) || fd < 0)
        return sys6(NR_mmap, (i64)addr, (i64)len, (i64)prot, (i64)flags, fd, (i64)off);
    struct elf_facts f;
    if (!(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) && off == 0) {
        /* ld.so reserves an object's whole span with its first mapping and maps the segments
         * into it. Widen that reservation so the blob lies inside it, then map the blob. */
        if (rt_elf_facts(fd, &f, ~0UL, NULL) == 0 && f.type == ET_DYN && f.blob_size &&
            PAGE_UP(len) == f.hi - f.lo && f.blob_vaddr >= f.hi) {
            u64 want = PAGE_UP(f.blob_vaddr + f.blob_size) - f.lo;
            u64 base = (u64)sys6(NR_mmap, (i64)addr, (i64)want, (i64)prot, (i64)flags, fd, 0);
            if (is_err(base))
                return (i64)base;
            u64 bias = base - f.lo, span_end = base + PAGE_UP(len);
            if (bias + f.blob_vaddr > span_end) /* no file pages beyond the span */
                sys6(NR_mmap, (i64)span_end, (i64)(bias + f.blob_vaddr - span_end), PROT_NONE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            i64 b = rt_map_blob(fd, &f, bias, MAP_FIXED);
            if (b < 0) {
                sys2(NR_munmap, base, want);
                return b;
            }
            int taken = lock_blobs();
            blob_add((u64)b, PAGE_UP(f.blob_size), base, PAGE_UP(len));
            unlock_blobs(taken);
            return (i64)base;
        }
        return sys6(NR_mmap, (i64)addr, (i64)len, (i64)prot, (i64)flags, fd, (i64)off);
    }
    raw = sys6(NR_mmap, (i64)addr, (i64)len, (i64)prot, (i64)flags, fd, (i64)off);
    if (is_err((u64)raw) || !(prot & PROT_EXEC))
        return raw;
    /* An executable mapping whose object's blob is not there yet (no reservation seen, e.g.
     * ET_EXEC objects or a loader other than ld.so): map it beside the object, never over
     * anything else. */
    u64 seg;
    if (rt_elf_facts(fd, &f, off, &seg) != 0 || !f.blob_size || seg == ~0UL)
        return raw;
    u64 bias = (u64)raw - seg;
    u64 at = bias + f.blob_vaddr;
    int taken = lock_blobs();
    if (!blob_find(at)) {
        i64 b = rt_map_blob(fd, &f, bias, MAP_FIXED_NOREPLACE);
        if (b >= 0)
            blob_add(at, PAGE_UP(f.blob_size), 0, 0);
        else
            rt_say("warning: cannot map the trampoline of an object at 0x%lx (errno %ld)", at, -b);
    }
    unlock_blobs(taken);
    return raw;
}

static i64 do_munmap(struct regs *r) {
    u64 addr = r->rdi, len = PAGE_UP(r->rsi);
    /* Most unmappings are the guest's own memory: look without the lock first. */
    int related = 0;
    for (int i = 0; i < BLOB_SLOTS && !related; i++) {
        struct blob_rec *b = &blobs[i];
        related = b->at && ((b->res_base == addr && b->res_len == len) ||
                            (b->at >= addr && b->at < addr + len));
    }
    if (!related)
        return sys2(NR_munmap, r->rdi, r->rsi);
    int taken = lock_blobs();
    struct blob_rec *with_blob = NULL;
    for (int i = 0; i < BLOB_SLOTS && !with_blob; i++)
        if (blobs[i].at && blobs[i].res_base == addr && blobs[i].res_len == len)
            with_blob = &blobs[i];
    /* dlclose: name the sites of the object while it is still mapped. */
    if (with_blob)
        rt_dump_records("unmap");
    i64 res = sys2(NR_munmap, r->rdi, r->rsi);
    for (int i = 0; i < BLOB_SLOTS && res == 0; i++) {
        struct blob_rec *b = &blobs[i];
        if (b->at && b->res_base == addr && b->res_len == len) {
            sys2(NR_munmap, b->at, b->len); /* the blob goes with its object */
            *b = (struct blob_rec){0, 0, 0, 0};
        } else if (b->at && b->at >= addr && b->at < addr + len) {
            *b = (struct blob_rec){0, 0, 0, 0}; /* unmapped by the guest itself */
        }
    }
    unlock_blobs(taken);
    return res;
}

/* --- signals ------------------------------------------------------------------------------------- */

static i64 do_sigaction(struct regs *r) {
    int sig = (int)r->rdi;
    struct ksigaction *act = (struct ksigaction *)r->rsi, *oact = (struct ksigaction *)r->rdx;
    if (r->r10 != 8)
        return sys4(NR_rt_sigaction, r->rdi, r->rsi, r->rdx, r->r10);
    if (sig == SIGSYS) { /* keep the escape detector's handler; remember the guest's */
        struct ksigaction old = guest_sigsys;
        if (act)
            guest_sigsys = *act;
        if (oact)
            *oact = old;
        return 0;
    }
    if (!act)
        return sys4(NR_rt_sigaction, sig, NULL, oact, 8);
    struct ksigaction k = *act;
    k.mask &= ~SIGBIT(SIGSYS); /* SIGSYS blocked at an escape would kill the program */
    return sys4(NR_rt_sigaction, sig, &k, oact, 8);
}

static i64 do_sigprocmask(struct regs *r, struct kucontext *uc) {
    int how = (int)r->rdi;
    u64 *set = (u64 *)r->rsi, *oset = (u64 *)r->rdx;
    if (r->r10 != 8)
        return sys4(NR_rt_sigprocmask, r->rdi, r->rsi, r->rdx, r->r10);
    if (uc) {
        /* Inside the SIGSYS handler the mask that matters is the one sigreturn restores. */
        u64 old = uc->uc_sigmask, m;
        if (set) {
            m = *set;
            if (how == SIG_BLOCK)
                m |= old;
            else if (how == SIG_UNBLOCK)
                m = old & ~m;
            else if (how != SIG_SETMASK)
                return -EINVAL;
            uc->uc_sigmask = m & ~(SIGBIT(SIGKILL) | SIGBIT(SIGSTOP) | SIGBIT(SIGSYS));
        }
        if (oset)
            *oset = old;
        return 0;
    }
    if (set && how != SIG_UNBLOCK) {
        u64 m = *set & ~SIGBIT(SIGSYS);
        return sys4(NR_rt_sigprocmask, how, &m, oset, 8);
    }
    return sys4(NR_rt_sigprocmask, how, set, oset, 8);
}

/* --- the dispatcher -------------------------------------------------------------------------------- */

static i64 do_special(struct regs *r, u64 nr, struct kucontext *uc) {
    switch (nr) {
    case NR_open:
    case NR_stat:
    case NR_lstat:
    case NR_access:
    case NR_readlink:
        return path_call(r, nr, 0);
    case NR_openat:
    case NR_newfstatat:
    case NR_readlinkat:
    case NR_faccessat:
    case NR_faccessat2:
    case NR_statx:
    case NR_openat2:
        return path_call(r, nr, 1);
    case NR_execve:
    case NR_execveat:
        return do_execve(r, nr, uc);
    case NR_mmap:
        return do_mmap(r);
    case NR_munmap:
        return do_munmap(r);
    case NR_clone:
    case NR_clone3:
    case NR_fork:
    case NR_vfork:
        return do_clone(r, nr, uc);
    case NR_exit:
    case NR_exit_group:
        rt_dump_records(nr == NR_exit ? "exit" : "exit_group");
        for (;;)
            sys1(nr, r->rdi);
    case NR_rt_sigaction:
        return do_sigaction(r);
    case NR_rt_sigprocmask:
        return do_sigprocmask(r, uc);
    }
    return -38; /* ENOSYS: not reached */
}

__attribute__((used)) void rt_dispatch(struct regs *r) {
    u64 nr = r->rax;
    u64 site = rt_cfg.abi_resume ? r->rip - 6 : r->r11;
    rt_count(nr, site);
    i64 res;
    if (__builtin_expect(nr < RT_NCOUNT && special[nr], 0)) {
        if (rt_cfg.trace && (nr == NR_exit || nr == NR_exit_group || nr == NR_execve ||
                             nr == NR_execveat))
            rt_trace(nr, 0, site, 0);
        res = do_special(r, nr, NULL);
    } else {
        res = sys6((i64)nr, (i64)r->rdi, (i64)r->rsi, (i64)r->rdx, (i64)r->r10, (i64)r->r8,
                   (i64)r->r9);
    }
    r->rax = (u64)res;
    if (__builtin_expect(rt_cfg.trace, 0))
        rt_trace(nr, res, site, 1);
}

/* --- escapes ------------------------------------------------------------------------------------- */

/* A SIGSYS that seccomp did not raise (kill -SYS, raise(SIGSYS)) belongs to the guest. */
static void forward_sigsys(int sig, struct ksiginfo *si, struct kucontext *uc) {
    void *h = guest_sigsys.handler;
    if (h == SIG_IGN)
        return;
    if (h == SIG_DFL) {
        struct ksigaction dfl = {SIG_DFL, 0, NULL, 0};
        u64 bit = SIGBIT(SIGSYS);
        rt_dump_records("signal");
        sys4(NR_rt_sigaction, SIGSYS, &dfl, NULL, 8);
        sys4(NR_rt_sigprocmask, SIG_UNBLOCK, &bit, NULL, 8);
        sys3(NR_tgkill, sys0(NR_getpid), sys0(NR_gettid), SIGSYS);
        return;
    }
    if (guest_sigsys.flags & SA_SIGINFO)
        ((void (*)(int, void *, void *))h)(sig, si, uc);
    else
        ((void (*)(int))h)(sig);
}

__attribute__((used)) void rt_sigsys(int sig, struct ksiginfo *si, struct kucontext *uc) {
    if (si->si_code != SYS_SECCOMP) {
        forward_sigsys(sig, si, uc);
        return;
    }
    struct sigcontext64 *mc = &uc->mc;
    u64 nr = (u64)(u32)si->syscall;
    u64 addr = si->call_addr - 2; /* the syscall instruction itself */
    rt_escape_hit(addr, nr);
    if (rt_cfg.strict)
        rt_strict_stop(nr, addr);
    if (si->arch != AUDIT_ARCH_X86_64) { /* int 0x80 from a 64-bit process: not emulated */
        mc->rax = (u64)-38;
        return;
    }
    if (nr == NR_rt_sigreturn)
        rt_sigreturn_at(mc->rsp);
    struct regs r = {mc->r15, mc->r14, mc->r13, mc->r12, mc->r11, mc->r10, mc->r9, mc->r8,
                     mc->rbp, mc->rdi, mc->rsi, mc->rdx, mc->rbx, nr,      mc->rip, mc->eflags};
    i64 res;
    if (nr < RT_NCOUNT && special[nr])
        res = do_special(&r, nr, uc);
    else
        res = sys6((i64)nr, (i64)r.rdi, (i64)r.rsi, (i64)r.rdx, (i64)r.r10, (i64)r.r8, (i64)r.r9);
    mc->rax = (u64)res;
}
