/* callback.c: what happens at each guest syscall, through a trampoline (rt_dispatch, entered
 * from entry.S) or escaped (rt_sigsys, the seccomp SIGSYS handler). Everything here runs on a
 * guest thread with the guest's FS and stack: keep it freestanding, keep stack use modest
 * (signal handlers may run on small alternate stacks), and share state between threads only
 * through atomics. The counters and records for the report live in records.c. */
#include "rt.h"

#define BLOB_SLOTS 512
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
    uptr at, len;           /* the blob mapping */
    uptr res_base, res_len; /* the widened reservation it belongs to (0 if none) */
};
static struct blob_rec blobs[BLOB_SLOTS];
static int blob_lock; /* tid of the holder, 0 when free */

/* Syscalls the runtime handles itself: PATH0/PATH1 take a path as argument 0/1 (looked up: a
 * missing one is noted), WRITE ones create or change a file system entry (checked against
 * LiteBox's rules in the LiteBox view), the rest have their own code in do_special. */
enum { PLAIN, PATH0, PATH1, OWN, WRITE };
static const u8 special[RT_NCOUNT] = {
    [NR_open] = PATH0,       [NR_stat] = PATH0,         [NR_lstat] = PATH0,
    [NR_access] = PATH0,     [NR_readlink] = PATH0,     [NR_openat] = PATH1,
    [NR_fstatat] = PATH1,    [NR_readlinkat] = PATH1,   [NR_faccessat] = PATH1,
    [NR_faccessat2] = PATH1, [NR_statx] = PATH1,        [NR_openat2] = PATH1,
    [NR_execve] = OWN,       [NR_execveat] = OWN,       [NR_mmap] = OWN,
    [NR_munmap] = OWN,       [NR_clone] = OWN,          [NR_clone3] = OWN,
    [NR_fork] = OWN,         [NR_vfork] = OWN,          [NR_exit] = OWN,
    [NR_exit_group] = OWN,   [NR_rt_sigaction] = OWN,   [NR_rt_sigprocmask] = OWN,
    [NR_chdir] = OWN,        [NR_getcwd] = OWN,         [NR_close_range] = OWN,
    [NR_creat] = WRITE,      [NR_mkdir] = WRITE,        [NR_mkdirat] = WRITE,
    [NR_mknod] = WRITE,      [NR_mknodat] = WRITE,      [NR_symlink] = WRITE,
    [NR_symlinkat] = WRITE,  [NR_link] = WRITE,         [NR_linkat] = WRITE,
    [NR_rename] = WRITE,     [NR_renameat] = WRITE,     [NR_renameat2] = WRITE,
    [NR_truncate] = WRITE,   [NR_chmod] = WRITE,        [NR_fchmodat] = WRITE,
    [NR_fchmodat2] = WRITE,  [NR_chown] = WRITE,        [NR_lchown] = WRITE,
    [NR_fchownat] = WRITE,   [NR_utime] = WRITE,        [NR_utimes] = WRITE,
    [NR_utimensat] = WRITE,  [NR_futimesat] = WRITE,
#ifdef __i386__ /* the i386 ABI's older forms */
    [NR_stat64] = PATH0,     [NR_lstat64] = PATH0,      [NR_oldstat] = PATH0,
    [NR_oldlstat] = PATH0,   [NR_mmap2] = OWN,          [NR_signal] = OWN,
    [NR_sigaction] = OWN,    [NR_sigprocmask] = OWN,    [NR_truncate64] = WRITE,
    [NR_chown16] = WRITE,    [NR_lchown16] = WRITE,
#endif
};

/* The arguments (bit i: argument i) that hold a descriptor the guest must not touch if it is one
 * of the runtime's own (view.c): using one as a dirfd would reach the host, closing or dup2-ing
 * over one would break the runtime. Such a call fails with EBADF, as if the descriptor were not
 * open. */
static const u8 fd_args[RT_NCOUNT] = {
    [NR_close] = 1,      [NR_dup] = 1,           [NR_dup2] = 3,       [NR_dup3] = 3,
    [NR_fcntl] = 1,      [NR_fchdir] = 1,        [NR_getdents] = 1,   [NR_getdents64] = 1,
    [NR_openat] = 1,     [NR_openat2] = 1,       [NR_fstatat] = 1,    [NR_statx] = 1,
    [NR_readlinkat] = 1, [NR_faccessat] = 1,     [NR_faccessat2] = 1, [NR_mkdirat] = 1,
    [NR_mknodat] = 1,    [NR_fchownat] = 1,      [NR_futimesat] = 1,  [NR_unlinkat] = 1,
    [NR_renameat] = 5,   [NR_renameat2] = 5,     [NR_linkat] = 5,     [NR_symlinkat] = 2,
    [NR_fchmodat] = 1,   [NR_fchmodat2] = 1,     [NR_utimensat] = 1,  [NR_execveat] = 1,
    [NR_open_tree] = 1,  [NR_move_mount] = 5,    [NR_write] = 1,      [NR_name_to_handle_at] = 1,
#ifdef __i386__
    [NR_fcntl64] = 1,    [NR_fanotify_mark] = 16,
#else
    [NR_fanotify_mark] = 8,
#endif
};

static int guarded(uptr fd) {
    int f = (int)fd;
    return f >= 0 && (f == rt_cfg.fd_proc || f == rt_cfg.fd_host || f == rt_cfg.fd_rec);
}

static int touches_guarded(const struct regs *r, u8 which) {
    uptr a[6] = {REG_A0(r), REG_A1(r), REG_A2(r), REG_A3(r), REG_A4(r), REG_A5(r)};
    for (int i = 0; i < 6; i++)
        if ((which >> i & 1) && guarded(a[i]))
            return 1;
    return 0;
}

/* close_range over the runtime's descriptors (contiguous, view.c) closes the rest only. */
static iptr do_close_range(struct regs *r) {
    u32 lo = (u32)REG_A0(r), hi = (u32)REG_A1(r), flags = (u32)REG_A2(r);
    u32 g0 = (u32)rt_cfg.fd_proc, g1 = (u32)(rt_cfg.fd_rec >= 0 ? rt_cfg.fd_rec : rt_cfg.fd_host);
    if (rt_cfg.fd_proc < 0 || lo > hi || hi < g0 || lo > g1)
        return sys3(NR_close_range, lo, hi, flags);
    iptr res = 0;
    if (lo < g0)
        res = sys3(NR_close_range, lo, g0 - 1, flags);
    if (res == 0 && hi > g1)
        res = sys3(NR_close_range, g1 + 1, hi, flags);
    return res;
}

/* --- guest paths, as the guest names them ------------------------------------------------------- */

#define NOTE_PATH 1024 /* longer paths are not noted (stack use stays modest) */

/* Collapses "//", "." and ".." of an absolute path in place (lexically: no symlink is read). */
static void normalize(char *p) {
    char *w = p;
    const char *s = p;
    while (*s) {
        while (*s == '/')
            s++;
        if (!*s)
            break;
        const char *e = s;
        while (*e && *e != '/')
            e++;
        uptr len = (uptr)(e - s);
        if (len == 2 && s[0] == '.' && s[1] == '.') {
            while (w > p && *--w != '/')
                ;
        } else if (!(len == 1 && s[0] == '.')) {
            *w++ = '/';
            memmove(w, s, len);
            w += len;
        }
        s = e;
    }
    if (w == p)
        *w++ = '/';
    *w = 0;
}

/* The absolute, normalised guest path of (dirfd, path): relative ones against the working
 * directory or what dirfd names. 0, or -1 when it cannot be told or does not fit. */
static int guest_abs(int dirfd, const char *path, char *out, uptr cap) {
    if (!path || !path[0])
        return -1;
    iptr n = 0;
    if (path[0] != '/') {
        if (dirfd == AT_FDCWD) {
            n = sys2(NR_getcwd, out, cap) - 1; /* the length includes the NUL */
        } else {
            char link[32];
            rt_fmt(link, sizeof link, "self/fd/%d", dirfd);
            n = sys4(NR_readlinkat, rt_cfg.fd_proc, link, out, cap - 1);
        }
        if (n <= 0 || out[0] != '/')
            return -1;
    }
    uptr len = rt_strlen(path);
    if ((uptr)n + len + 2 > cap)
        return -1;
    out[n++] = '/';
    memcpy(out + n, path, len + 1);
    normalize(out);
    return 0;
}

static int under(const char *p, const char *dir) {
    uptr n = rt_strlen(dir);
    return rt_startswith(p, dir) && (p[n] == 0 || p[n] == '/' || (n == 1 && dir[0] == '/'));
}

/* Where LiteBox's in-memory layer lets the guest write: /tmp (and the devices, and what the
 * user bound in). Everywhere else is the tar's, or the in-memory root, which uid 1000 cannot
 * write. */
static int writable_area(const char *abs) {
    if (under(abs, "/tmp") || under(abs, "/dev"))
        return 1;
    for (int i = 0; i < rt_cfg.nbinds; i++)
        if (under(abs, rt_cfg.bind_dest[i]))
            return 1;
    return 0;
}

static int exists(const char *abs, int follow) {
    struct kstat st;
    return rt_fstatat(AT_FDCWD, abs, &st, follow ? 0 : AT_SYMLINK_NOFOLLOW) == 0;
}

/* A write LiteBox refuses ('r': it fails with EACCES) or where its runner panics ('p'):
 * noted for the report, and failed with EACCES. */
static iptr refuse(uptr nr, uptr site, const char *abs, char how) {
    char head[80];
    rt_fmt(head, sizeof head, "%lu 0x%lx EACCES %c", nr, site, how);
    rt_note('W', head, abs);
    return -EACCES;
}

/* A new entry at abs: LiteBox creates it in its in-memory layer, whose root uid 1000 may not
 * write (EACCES); in a directory that exists only in the tar, creating that directory in the
 * in-memory layer first fails and layered.rs unwraps the error (the panic). */
static iptr check_new(uptr nr, uptr site, const char *abs) {
    if (writable_area(abs) || exists(abs, 0))
        return 0; /* the kernel's answer (EEXIST and the like) is LiteBox's too */
    char parent[NOTE_PATH];
    rt_strlcpy(parent, abs, sizeof parent);
    char *slash = parent;
    for (char *p = parent; *p; p++)
        if (*p == '/')
            slash = p;
    slash[slash == parent ? 1 : 0] = 0;
    struct kstat st;
    if (rt_fstatat(AT_FDCWD, parent, &st, 0) < 0 || (st.st_mode & S_IFMT) != S_IFDIR)
        return 0; /* no such directory: the kernel says so, as LiteBox does */
    return refuse(nr, site, abs, rt_streq(parent, "/") ? 'r' : 'p');
}

/* A change to an existing entry of the tar: tar_ro cannot write, and copying the file up into
 * the in-memory layer needs its directories there, which fails as above (the panic). */
static iptr check_change(uptr nr, uptr site, const char *abs) {
    if (writable_area(abs) || !exists(abs, 0))
        return 0;
    return refuse(nr, site, abs, 'p');
}

enum { CHANGE, NEW, NEW_OR_CHANGE };

static iptr check_path(uptr nr, uptr site, int dirfd, uptr path, int what) {
    char abs[NOTE_PATH];
    if (guest_abs(dirfd, (const char *)path, abs, sizeof abs) < 0)
        return 0;
    if (what == NEW_OR_CHANGE)
        what = exists(abs, 0) ? CHANGE : NEW;
    return what == NEW ? check_new(nr, site, abs) : check_change(nr, site, abs);
}

static iptr check_open(uptr nr, uptr site, int dirfd, const char *path, uptr flags) {
    int writes = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC);
    if (!writes && !(flags & O_CREAT))
        return 0;
    char abs[NOTE_PATH];
    if (guest_abs(dirfd, path, abs, sizeof abs) < 0 || writable_area(abs))
        return 0;
    struct kstat st;
    if (rt_fstatat(AT_FDCWD, abs, &st, 0) == 0)
        return writes && (st.st_mode & S_IFMT) != S_IFDIR ? refuse(nr, site, abs, 'p') : 0;
    return flags & O_CREAT ? check_new(nr, site, abs) : 0;
}

/* The WRITE syscalls in the LiteBox view: checked, then performed as they are. */
static iptr do_write(struct regs *r, uptr nr, uptr site) {
    uptr a0 = REG_A0(r), a1 = REG_A1(r), a2 = REG_A2(r), a3 = REG_A3(r);
    iptr err = 0;
    if (!rt_cfg.view_host) {
        switch (nr) {
        case NR_creat:
            err = check_open(nr, site, AT_FDCWD, (const char *)a0, O_CREAT | O_WRONLY | O_TRUNC);
            break;
        case NR_mkdir:
        case NR_mknod:
            err = check_path(nr, site, AT_FDCWD, a0, NEW);
            break;
        case NR_mkdirat:
        case NR_mknodat:
            err = check_path(nr, site, (int)a0, a1, NEW);
            break;
        case NR_symlink:
        case NR_link:
            err = check_path(nr, site, AT_FDCWD, a1, NEW);
            break;
        case NR_symlinkat:
            err = check_path(nr, site, (int)a1, a2, NEW);
            break;
        case NR_linkat:
            err = check_path(nr, site, (int)a2, a3, NEW);
            break;
        case NR_rename:
            err = check_path(nr, site, AT_FDCWD, a0, CHANGE);
            if (!err)
                err = check_path(nr, site, AT_FDCWD, a1, NEW_OR_CHANGE);
            break;
        case NR_renameat:
        case NR_renameat2:
            err = check_path(nr, site, (int)a0, a1, CHANGE);
            if (!err)
                err = check_path(nr, site, (int)a2, a3, NEW_OR_CHANGE);
            break;
        case NR_fchmodat:
        case NR_fchmodat2:
        case NR_fchownat:
        case NR_futimesat:
            err = check_path(nr, site, (int)a0, a1, CHANGE);
            break;
        case NR_utimensat:
            if (a1) /* NULL: futimens on the descriptor itself */
                err = check_path(nr, site, (int)a0, a1, CHANGE);
            break;
        default: /* truncate, chmod, chown, lchown, utime, utimes (and the i386 forms) */
            err = check_path(nr, site, AT_FDCWD, a0, CHANGE);
            break;
        }
    }
    if (err)
        return err;
    return sys6((iptr)nr, (iptr)REG_A0(r), (iptr)REG_A1(r), (iptr)REG_A2(r), (iptr)REG_A3(r),
                (iptr)REG_A4(r), (iptr)REG_A5(r));
}

/* --- what the guest looked up: missing paths, host paths ---------------------------------------- */

#define RESOLVE_IN_ROOT 0x10

/* /proc, /sys and /dev are the kernel's views, not files: no bundle can hold what is there, and
 * LiteBox provides none of it beyond its own few devices. */
static int in_kernel_tree(const char *abs) {
    static const char *const trees[] = {"/proc", "/sys", "/dev"};
    for (unsigned i = 0; i < sizeof trees / sizeof trees[0]; i++) {
        size_t n = rt_strlen(trees[i]);
        if (rt_startswith(abs, trees[i]) && (abs[n] == 0 || abs[n] == '/'))
            return 1;
    }
    return 0;
}

/* LiteBox view: a lookup failed with ENOENT. When the host has the path, the bundle lacks a file
 * the program asked for: noted ('M'), or with --strict-files the end of the program. A path in
 * a kernel tree is noted apart ('K'): the bundle cannot be fixed by adding it. */
static void note_missing(uptr nr, uptr site, int dirfd, const char *path) {
    char abs[NOTE_PATH];
    if (guest_abs(dirfd, path, abs, sizeof abs) < 0 || !abs[1])
        return;
    struct {
        u64 flags, mode, resolve;
    } how = {O_PATH | O_CLOEXEC, 0, RESOLVE_IN_ROOT}; /* the host's absolute symlinks too */
    iptr fd = sys4(NR_openat2, rt_cfg.fd_host, abs + 1, &how, sizeof how);
    if (fd < 0)
        return;
    sys1(NR_close, fd);
    char head[64];
    rt_fmt(head, sizeof head, "%lu 0x%lx", nr, site);
    if (in_kernel_tree(abs)) {
        rt_note('K', head, abs);
        return;
    }
    rt_note('M', head, abs);
    if (rt_cfg.strict_files)
        rt_strict_files_stop(nr, site, abs);
}

/* --host-fs: a lookup succeeded on the host, not in the bundle ('H', with the kind of entry). */
static void note_host(uptr nr, uptr site, int dirfd, const char *path) {
    char abs[NOTE_PATH];
    struct kstat st;
    if (guest_abs(dirfd, path, abs, sizeof abs) < 0 || rt_fstatat(AT_FDCWD, abs, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return;
    u32 type = st.st_mode & S_IFMT;
    char head[64];
    rt_fmt(head, sizeof head, "%lu 0x%lx %c", nr, site,
           type == S_IFDIR ? 'd' : type == S_IFLNK ? 'l' : 'f');
    rt_note('H', head, abs);
}

/* --- paths ---------------------------------------------------------------------------------------- */

const char *rt_bundle_path(const char *path, char *buf) {
    if (!path || path[0] != '/' || !rt_cfg.bundle_len)
        return NULL;
    uptr n = 0;
    while (path[n] && n < RT_PATH_MAX)
        n++;
    if (n + rt_cfg.bundle_len >= RT_PATH_MAX)
        return NULL;
    memcpy(buf, rt_cfg.bundle, rt_cfg.bundle_len);
    memcpy(buf + rt_cfg.bundle_len, path, n + 1);
    struct kstat st;
    if (rt_fstatat(AT_FDCWD, buf, &st, 0) < 0)
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
    uptr v = 0;
    const char *d = p;
    while (*d >= '0' && *d <= '9')
        v = v * 10 + (uptr)(*d++ - '0');
    return d != p && rt_streq(d, "/exe") && (iptr)v == sys0(NR_getpid);
}

static iptr readlink_exe(char *buf, iptr size) {
    iptr n = (iptr)rt_strlen(rt_cfg.exe);
    if (size <= 0)
        return -EINVAL;
    if (n > size)
        n = size;
    memcpy(buf, rt_cfg.exe, (uptr)n);
    return n;
}

static const char *relative_bundle_path(const char *path, char *buf);

/* /dev/stdin, /dev/stdout and /dev/stderr in the LiteBox view: LiteBox's devices read and write
 * the process's standard streams, so opening one gives a new descriptor for the guest's own
 * 0, 1 or 2. Returns -1 for any other path. */
static iptr stdio_device(const char *path, uptr flags) {
    static const char *const names[3] = {"/dev/stdin", "/dev/stdout", "/dev/stderr"};
    if (!path || !rt_startswith(path, "/dev/std"))
        return -1;
    for (int fd = 0; fd < 3; fd++)
        if (rt_streq(path, names[fd]))
            return sys3(NR_fcntl, fd, (flags & O_CLOEXEC) ? 1030 /* F_DUPFD_CLOEXEC */ : 0, 0);
    return -1;
}

/* A syscall whose argument number `idx` is a path. The LiteBox view performs it as it is (the
 * kernel resolves it in the view), after LiteBox's write rules for open; a lookup that fails
 * with ENOENT is noted. --host-fs: bundle first, host otherwise, and a success on the host is
 * noted. */
static iptr path_call(struct regs *r, uptr nr, int idx, uptr site) {
    iptr a[6] = {(iptr)REG_A0(r), (iptr)REG_A1(r), (iptr)REG_A2(r),
                 (iptr)REG_A3(r), (iptr)REG_A4(r), (iptr)REG_A5(r)};
    const char *path = (const char *)a[idx];
    /* dirfd is an int: the register's upper half is not part of it. */
    int dirfd = idx == 0 ? AT_FDCWD : (int)a[0];
    int is_open = nr == NR_open || nr == NR_openat || nr == NR_openat2;
    if (!rt_cfg.view_host) {
        if (is_open && path) {
            u64 how = 0; /* openat2: the flags are the first word of its struct open_how */
            if (nr == NR_openat2 && rt_peek(&how, (uptr)a[2], sizeof how) != 0)
                return -EFAULT;
            uptr flags = nr == NR_openat2 ? (uptr)how : (uptr)a[idx + 1];
            iptr res = stdio_device(path, flags);
            if (res == -1)
                res = check_open(nr, site, dirfd, path, flags);
            if (res)
                return res;
        }
        iptr res = sys6((iptr)nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        if (res == -ENOENT)
            note_missing(nr, site, dirfd, path);
        return res;
    }
    if (is_self_exe(path)) {
        if (nr == NR_readlink)
            return readlink_exe((char *)a[1], a[2]);
        if (nr == NR_readlinkat)
            return readlink_exe((char *)a[2], a[3]);
        if (is_open)
            path = rt_cfg.exe_host;
    }
    char buf[RT_PATH_MAX];
    const char *b = rt_bundle_path(path, buf);
    if (!b && path && path[0] != '/' && dirfd == AT_FDCWD)
        b = relative_bundle_path(path, buf);
    a[idx] = (iptr)(b ? b : path);
    iptr res = sys6((iptr)nr, a[0], a[1], a[2], a[3], a[4], a[5]);
    if (!b && res >= 0)
        note_host(nr, site, dirfd, path);
    return res;
}

/* --- the working directory ---------------------------------------------------------------------- */

/* A path relative to a host working directory names a bundle file the way an absolute one does:
 * files resolve in the bundle first. (Inside a bundle directory the kernel already finds them.) */
static const char *relative_bundle_path(const char *path, char *buf) {
    char abs[RT_PATH_MAX];
    iptr n = sys2(NR_getcwd, abs, sizeof abs);
    uptr len = rt_strlen(path);
    if (n <= 1 || (uptr)n + len + 1 >= sizeof abs || rt_startswith(abs, rt_cfg.bundle))
        return NULL;
    abs[n - 1] = '/';
    memcpy(abs + n, path, len + 1);
    return rt_bundle_path(abs, buf);
}

/* A directory only the bundle has (an image's WORKDIR, say) becomes the working directory inside
 * the bundle; directories the host has stay the host's, like every directory lookup here. */
static iptr do_chdir(struct regs *r, uptr site) {
    const char *path = (const char *)REG_A0(r);
    iptr ret = sys1(NR_chdir, path);
    if (ret == -ENOENT && !rt_cfg.view_host)
        note_missing(NR_chdir, site, AT_FDCWD, path);
    if (ret != -ENOENT || !path || path[0] != '/' || !rt_cfg.bundle_len)
        return ret;
    char buf[RT_PATH_MAX];
    uptr n = rt_strlen(path);
    if (n + rt_cfg.bundle_len >= RT_PATH_MAX)
        return ret;
    memcpy(buf, rt_cfg.bundle, rt_cfg.bundle_len);
    memcpy(buf + rt_cfg.bundle_len, path, n + 1);
    return sys1(NR_chdir, buf) == 0 ? 0 : ret;
}

/* getcwd inside the bundle answers with the path the guest knows, without the bundle's place. */
static iptr do_getcwd(struct regs *r) {
    char *out = (char *)REG_A0(r);
    iptr n = sys2(NR_getcwd, out, REG_A1(r)); /* the length, terminating NUL included */
    uptr bl = rt_cfg.bundle_len;
    if (n <= 0 || !bl || !rt_startswith(out, rt_cfg.bundle) || (out[bl] != '/' && out[bl] != 0))
        return n;
    if (out[bl] == 0) {
        out[0] = '/';
        out[1] = 0;
        return 2;
    }
    memmove(out, out + bl, (uptr)n - bl);
    return n - (iptr)bl;
}

/* --- execve: back through the runtime ---------------------------------------------------------- */

/* The path of what fd refers to (plus rel), as the guest would name it: a bundle file at its
 * in-bundle path. A descriptor without a usable name (memfd, deleted file) stays
 * /proc/self/fd/N, which works unless it is close-on-exec. */
static const char *fd_path(int fd, const char *rel, char *buf, uptr cap) {
    char link[32];
    rt_fmt(link, sizeof link, "self/fd/%d", fd);
    iptr n = sys4(NR_readlinkat, rt_cfg.fd_proc, link, buf, cap - 1);
    const char *deleted = " (deleted)";
    uptr dl = rt_strlen(deleted);
    if (n <= 0 || buf[0] != '/' || ((uptr)n >= dl && memcmp(buf + n - dl, deleted, dl) == 0)) {
        n = rt_fmt(buf, cap, "/proc/%s", link);
    } else {
        buf[n] = 0;
        if (rt_cfg.bundle_len && rt_startswith(buf, rt_cfg.bundle) && buf[rt_cfg.bundle_len] == '/') {
            memmove(buf, buf + rt_cfg.bundle_len, (uptr)n - rt_cfg.bundle_len + 1);
            n -= (iptr)rt_cfg.bundle_len;
        }
    }
    if (rel && rel[0]) {
        if ((uptr)n + 1 + rt_strlen(rel) >= cap)
            return NULL;
        rt_fmt(buf + n, cap - (uptr)n, "/%s", rel);
    }
    return buf;
}

static iptr do_execve(struct regs *r, uptr nr, struct kucontext *uc, uptr site) {
    const char *path;
    char **argv, **envp;
    char pbuf[64 + RT_PATH_MAX];
    if (nr == NR_execve) {
        path = (const char *)REG_A0(r);
        argv = (char **)REG_A1(r);
        envp = (char **)REG_A2(r);
    } else {
        int dirfd = (int)REG_A0(r);
        path = (const char *)REG_A1(r);
        argv = (char **)REG_A2(r);
        envp = (char **)REG_A3(r);
        if (!path)
            return -EFAULT;
        /* fexecve and relative execveat: the new runtime opens files by path, so name it. */
        if ((REG_A4(r) & AT_EMPTY_PATH) && !path[0])
            path = fd_path(dirfd, NULL, pbuf, sizeof pbuf);
        else if (path[0] != '/' && dirfd != AT_FDCWD)
            path = fd_path(dirfd, path, pbuf, sizeof pbuf);
        if (!path)
            return -ENAMETOOLONG;
    }
    if (!path)
        return -EFAULT;
    if (rt_cfg.view_host && is_self_exe(path))
        path = rt_cfg.exe_host;
    /* Check what the kernel would check before committing, since after our own execve the
     * guest can no longer be told that the file was missing or not executable. */
    char hbuf[RT_PATH_MAX];
    const char *host = rt_bundle_path(path, hbuf);
    if (!host)
        host = path;
    iptr fd = sys3(NR_open, host, O_RDONLY | O_CLOEXEC, 0);
    if (fd == -ENOENT && !rt_cfg.view_host)
        note_missing(nr, site, AT_FDCWD, path);
    else if (fd >= 0 && host == path && rt_cfg.view_host)
        note_host(nr, site, AT_FDCWD, path);
    if (fd < 0)
        return fd == -EISDIR ? -EACCES : fd;
    struct kstat st;
    u8 head[20] = {0};
    iptr err = rt_fstat((int)fd, &st);
    if (err == 0 && (st.st_mode & S_IFMT) != S_IFREG)
        err = -EACCES;
    if (err == 0)
        err = sys3(NR_faccessat, AT_FDCWD, host, X_OK);
    if (err == 0 && (rt_pread((int)fd, head, sizeof head, 0) < 2 ||
                     (memcmp(head, "\177ELF", 4) != 0 && memcmp(head, "#!", 2) != 0)))
        err = -ENOEXEC;
    sys1(NR_close, fd);
    if (err)
        return err;
    if (memcmp(head, "\177ELF", 4) == 0 && (head[4] != ELF_CLASS || head[18] != ELF_MACHINE)) {
        /* Another machine: the kernel says ENOEXEC too. The other x86 ABI the kernel would run,
         * but this runtime cannot load it (and the seccomp filter in force trusts only this
         * runtime's text), so say why instead of failing after the point of no return. */
        if ((head[4] == 1 && head[18] == 3) || (head[4] == 2 && head[18] == 62))
            rt_say("%s: a program of the other x86 ABI; the %s runtime cannot exec it", path,
                   ARCH_NAME);
        return -ENOEXEC;
    }

    /* The new runtime keeps this one's view and descriptors (--fds): nothing is built again. */
    const char *opts[20 + 2 * RT_MAX_BINDS];
    char fds[48];
    rt_fmt(fds, sizeof fds, "%d,%d,%d", rt_cfg.fd_proc, rt_cfg.fd_host, rt_cfg.fd_rec);
    int k = 0;
    opts[k++] = "litebox-runtime";
    opts[k++] = "--fds";
    opts[k++] = fds;
    if (rt_cfg.view_host) {
        opts[k++] = "--host-fs";
        opts[k++] = "--bundle";
        opts[k++] = rt_cfg.bundle;
    }
    for (int i = 0; i < rt_cfg.nbinds; i++) {
        opts[k++] = "--bind-dest";
        opts[k++] = rt_cfg.bind_dest[i];
    }
    opts[k++] = "--abi";
    opts[k++] = rt_cfg.abi_resume ? "resume" : "redzone";
    if (rt_cfg.trace)
        opts[k++] = "--trace";
    if (rt_cfg.strict)
        opts[k++] = "--strict";
    if (rt_cfg.strict_files)
        opts[k++] = "--strict-files";
    if (rt_cfg.filtered)
        opts[k++] = "--seccomp-inherited";
    opts[k++] = "--";
    opts[k++] = path;
    uptr argc = 0;
    while (argv && argv[argc])
        argc++;
    uptr total = (uptr)k + argc + 1;
    const char *small[256];
    const char **nv = small;
    uptr bytes = PAGE_UP(total * sizeof(char *));
    if (total > sizeof small / sizeof small[0]) {
        nv = rt_map_anon(bytes);
        if (!nv)
            return -E2BIG;
    }
    for (int i = 0; i < k; i++)
        nv[i] = opts[i];
    for (uptr i = 0; i < argc; i++)
        nv[k + i] = argv[i];
    nv[total - 1] = NULL;
    rt_dump_records("execve");
    u64 saved = 0;
    if (uc) { /* leave the SIGSYS handler's mask behind: the new image inherits the guest's */
        u64 m = uc->uc_sigmask & ~SIGBIT(SIGSYS);
        sys4(NR_rt_sigprocmask, SIG_SETMASK, &m, &saved, 8);
    }
    /* This runtime's own file, which the guest's view may not show. */
    iptr self = sys4(NR_openat, rt_cfg.fd_proc, "self/exe", O_PATH | O_CLOEXEC, 0);
    iptr res = self < 0 ? self : sys5(NR_execveat, self, "", nv, envp, AT_EMPTY_PATH);
    if (self >= 0)
        sys1(NR_close, self);
    if (uc)
        sys4(NR_rt_sigprocmask, SIG_SETMASK, &saved, NULL, 8);
    if (nv != small)
        sys2(NR_munmap, nv, bytes);
    return res;
}

/* --- clone family ------------------------------------------------------------------------------ */

/* Clones onto a child start record already placed below the child's new stack pointer. */
static iptr clone_on_stack(struct child_start *cs, uptr nr, iptr a0, iptr a1, iptr a2, iptr a3,
                           iptr a4, struct kucontext *uc) {
    u64 saved = 0;
    if (uc) { /* the child never returns through the handler: give it the guest's mask now */
        u64 m = uc->uc_sigmask & ~SIGBIT(SIGSYS);
        sys4(NR_rt_sigprocmask, SIG_SETMASK, &m, &saved, 8);
    }
    if (nr == NR_clone)
        a1 = (iptr)cs;
    iptr res = rt_clone_raw((iptr)nr, a0, a1, a2, a3, a4);
    if (uc)
        sys4(NR_rt_sigprocmask, SIG_SETMASK, &saved, NULL, 8);
    return res;
}

static iptr do_clone_(struct regs *r, uptr nr, struct kucontext *uc);

/* A process the guest created (LiteBox's runner at upstream main #828 creates none). */
static iptr counted(iptr res, const char *kind) {
    if (res > 0)
        rt_note('F', kind, "-");
    return res;
}

static iptr do_clone(struct regs *r, uptr nr, struct kucontext *uc) {
    iptr res = do_clone_(r, nr, uc);
    if (nr == NR_fork || nr == NR_vfork)
        return counted(res, nr == NR_fork ? "fork" : "vfork");
    u64 flags = REG_A0(r);
    if (nr == NR_clone3 && REG_A1(r) >= 8)
        flags = *(const u64 *)REG_A0(r);
    return (flags & CLONE_THREAD) ? res : counted(res, "clone");
}

static iptr do_clone_(struct regs *r, uptr nr, struct kucontext *uc) {
    iptr res;
    if (nr == NR_fork || nr == NR_vfork) {
        /* vfork as fork: a vfork child would return through the callback on the parent's stack
         * and overwrite the frame the parent still needs. */
        res = sys0(NR_fork);
        if (res == 0)
            rt_child_after_fork();
        return res;
    }
    if (nr == NR_clone) {
        /* The arguments after the stack pass through in place: x86-64 has (flags, newsp,
         * parent_tid, child_tid, tls), i386 (flags, newsp, parent_tid, tls, child_tid). */
        uptr flags = REG_A0(r), newsp = REG_A1(r);
        if (newsp)
            return clone_on_stack(child_record(r, newsp, !(flags & CLONE_VM)), nr, (iptr)flags, 0,
                                  (iptr)REG_A2(r), (iptr)REG_A3(r), (iptr)REG_A4(r), uc);
        if (flags & CLONE_VFORK)
            flags &= ~(uptr)(CLONE_VM | CLONE_VFORK);
        res = sys5(NR_clone, flags, 0, REG_A2(r), REG_A3(r), REG_A4(r));
        if (res == 0 && !(flags & CLONE_VM))
            rt_child_after_fork();
        return res;
    }
    /* clone3(struct clone_args *, size): stack and stack_size are fields 5 and 6 (u64 on both
     * ABIs); the child starts at stack + stack_size. */
    uptr size = REG_A1(r);
    u64 args[16];
    if (size < 64 || size > sizeof args)
        return sys2(NR_clone3, REG_A0(r), size);
    memcpy(args, (void *)REG_A0(r), size);
    if (args[5]) {
        struct child_start *cs =
            child_record(r, (uptr)(args[5] + args[6]), !(args[0] & CLONE_VM));
        args[6] = (uptr)cs - args[5];
        return clone_on_stack(cs, nr, (iptr)args, (iptr)size, 0, 0, 0, uc);
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

static struct blob_rec *blob_find(uptr at) {
    for (int i = 0; i < BLOB_SLOTS; i++)
        if (blobs[i].at == at)
            return &blobs[i];
    return NULL;
}

static void blob_add(uptr at, uptr len, uptr res_base, uptr res_len) {
    struct blob_rec *b = blob_find(0);
    if (b)
        *b = (struct blob_rec){at, len, res_base, res_len};
}

/* mmap's six arguments, whatever form the guest used: x86-64 mmap and i386 mmap2 pass them in
 * registers (mmap2's offset in pages), i386's old mmap as a pointer to all six. */
static iptr mmap_args(struct regs *r, uptr nr, uptr a[5], u64 *off) {
    for (int i = 0; i < 5; i++)
        a[i] = (uptr[]){REG_A0(r), REG_A1(r), REG_A2(r), REG_A3(r), REG_A4(r)}[i];
    *off = REG_A5(r);
#ifdef __i386__
    if (nr == NR_mmap2) {
        *off <<= 12;
    } else { /* old_mmap */
        u32 m[6];
        if (rt_peek(m, REG_A0(r), sizeof m) != 0)
            return -EFAULT;
        for (int i = 0; i < 5; i++)
            a[i] = m[i];
        *off = m[5];
    }
#else
    (void)nr;
#endif
    return 0;
}

static iptr do_mmap(struct regs *r, uptr nr) {
    uptr a[5];
    u64 off;
    iptr raw = mmap_args(r, nr, a, &off);
    if (raw < 0)
        return raw;
    uptr addr = a[0], len = a[1];
    int prot = (int)a[2], flags = (int)a[3], fd = (int)a[4];
    if ((flags & MAP_ANONYMOUS) || fd < 0)
        return rt_mmap(addr, len, prot, flags, fd, off);
    struct elf_facts f;
    if (!(flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) && off == 0) {
        /* ld.so reserves an object's whole span with its first mapping and maps the segments
         * into it. Widen that reservation so the blob lies inside it, then map the blob. */
        if (rt_elf_facts(fd, &f, NO_OFFSET, NULL) == 0 && f.type == ET_DYN && f.blob_size &&
            PAGE_UP(len) == f.hi - f.lo && f.blob_vaddr >= f.hi) {
            uptr want = PAGE_UP(f.blob_vaddr + f.blob_size) - f.lo;
            uptr base = (uptr)rt_mmap(addr, want, prot, flags, fd, 0);
            if (is_err(base))
                return (iptr)base;
            uptr bias = base - f.lo, span_end = base + PAGE_UP(len);
            if (bias + f.blob_vaddr > span_end) /* no file pages beyond the span */
                rt_mmap(span_end, bias + f.blob_vaddr - span_end, PROT_NONE,
                        MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            iptr b = rt_map_blob(fd, &f, bias, MAP_FIXED);
            if (is_err((uptr)b)) {
                sys2(NR_munmap, base, want);
                return b;
            }
            int taken = lock_blobs();
            blob_add((uptr)b, PAGE_UP(f.blob_size), base, PAGE_UP(len));
            unlock_blobs(taken);
            return (iptr)base;
        }
        return rt_mmap(addr, len, prot, flags, fd, off);
    }
    raw = rt_mmap(addr, len, prot, flags, fd, off);
    if (is_err((uptr)raw) || !(prot & PROT_EXEC))
        return raw;
    /* An executable mapping whose object's blob is not there yet (no reservation seen, e.g.
     * ET_EXEC objects or a loader other than ld.so): map it beside the object, never over
     * anything else. */
    uptr seg;
    if (rt_elf_facts(fd, &f, off, &seg) != 0 || !f.blob_size || seg == NO_SEGMENT)
        return raw;
    uptr bias = (uptr)raw - seg;
    uptr at = bias + f.blob_vaddr;
    int taken = lock_blobs();
    if (!blob_find(at)) {
        iptr b = rt_map_blob(fd, &f, bias, MAP_FIXED_NOREPLACE);
        if (!is_err((uptr)b))
            blob_add(at, PAGE_UP(f.blob_size), 0, 0);
        else
            rt_say("warning: cannot map the trampoline of an object at 0x%lx (errno %ld)", at, -b);
    }
    unlock_blobs(taken);
    return raw;
}

static iptr do_munmap(struct regs *r) {
    uptr addr = REG_A0(r), len = PAGE_UP(REG_A1(r));
    /* Most unmappings are the guest's own memory: look without the lock first. */
    int related = 0;
    for (int i = 0; i < BLOB_SLOTS && !related; i++) {
        struct blob_rec *b = &blobs[i];
        related = b->at && ((b->res_base == addr && b->res_len == len) ||
                            (b->at >= addr && b->at < addr + len));
    }
    if (!related)
        return sys2(NR_munmap, REG_A0(r), REG_A1(r));
    int taken = lock_blobs();
    struct blob_rec *with_blob = NULL;
    for (int i = 0; i < BLOB_SLOTS && !with_blob; i++)
        if (blobs[i].at && blobs[i].res_base == addr && blobs[i].res_len == len)
            with_blob = &blobs[i];
    /* dlclose: name the sites of the object while it is still mapped. */
    if (with_blob)
        rt_dump_records("unmap");
    iptr res = sys2(NR_munmap, REG_A0(r), REG_A1(r));
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

#ifdef __i386__
/* Signals whose handler got the runtime's restorer (bit sig-1). glibc on i386 gives the kernel
 * its own restorer only when there is no vDSO; with the runtime's sysinfo image (runtime.c) it
 * gives none, and the kernel would return through its own vDSO's sigreturn: a syscall outside
 * the runtime's text, reported as an escape. So, as the kernel does, the runtime supplies one:
 * rt_restore or rt_restore_rt (entry32.S, byte-for-byte the vDSO's, which unwinders recognise).
 * Reading the action back shows what the guest set: no restorer. */
static u32 restorer_added[2];

static iptr sigaction_i386(int sig, const struct ksigaction *act, struct ksigaction *oact) {
    struct ksigaction k;
    int added = 0;
    if (act) {
        k = *act;
        k.mask &= ~SIGBIT(SIGSYS); /* SIGSYS blocked at an escape would kill the program */
        if (!(k.flags & SA_RESTORER)) {
            k.flags |= SA_RESTORER;
            k.restorer = (k.flags & SA_SIGINFO) ? (void *)rt_restore_rt : (void *)rt_restore;
            added = 1;
        }
    }
    iptr res = sys4(NR_rt_sigaction, sig, act ? &k : NULL, oact, 8);
    if (res != 0 || sig < 1 || sig > 64)
        return res;
    u32 *word = &restorer_added[(sig - 1) >> 5], bit = 1U << ((sig - 1) & 31);
    if (oact && (__atomic_load_n(word, __ATOMIC_RELAXED) & bit)) {
        oact->flags &= ~(unsigned long)SA_RESTORER;
        oact->restorer = NULL;
    }
    if (act && added)
        __atomic_fetch_or(word, bit, __ATOMIC_RELAXED);
    else if (act)
        __atomic_fetch_and(word, ~bit, __ATOMIC_RELAXED);
    return res;
}
#endif

static iptr sigaction_k(int sig, const struct ksigaction *act, struct ksigaction *oact) {
    if (sig == SIGSYS) { /* keep the escape detector's handler; remember the guest's */
        struct ksigaction old = guest_sigsys;
        if (act)
            guest_sigsys = *act;
        if (oact)
            *oact = old;
        return 0;
    }
#ifdef __i386__
    return sigaction_i386(sig, act, oact);
#else
    if (!act)
        return sys4(NR_rt_sigaction, sig, NULL, oact, 8);
    struct ksigaction k = *act;
    k.mask &= ~SIGBIT(SIGSYS); /* SIGSYS blocked at an escape would kill the program */
    return sys4(NR_rt_sigaction, sig, &k, oact, 8);
#endif
}

static iptr do_sigaction(struct regs *r) {
    if (REG_A3(r) != 8)
        return sys4(NR_rt_sigaction, REG_A0(r), REG_A1(r), REG_A2(r), REG_A3(r));
    return sigaction_k((int)REG_A0(r), (const struct ksigaction *)REG_A1(r),
                       (struct ksigaction *)REG_A2(r));
}

/* The new mask for sigprocmask-like `how` and `set`, or -EINVAL. */
static iptr apply_how(int how, u64 old, u64 set, u64 *out) {
    if (how == SIG_BLOCK)
        *out = old | set;
    else if (how == SIG_UNBLOCK)
        *out = old & ~set;
    else if (how == SIG_SETMASK)
        *out = set;
    else
        return -EINVAL;
    return 0;
}

static iptr do_sigprocmask(struct regs *r, struct kucontext *uc) {
    int how = (int)REG_A0(r);
    u64 *set = (u64 *)REG_A1(r), *oset = (u64 *)REG_A2(r);
    if (REG_A3(r) != 8)
        return sys4(NR_rt_sigprocmask, REG_A0(r), REG_A1(r), REG_A2(r), REG_A3(r));
    if (uc) {
        /* Inside the SIGSYS handler the mask that matters is the one sigreturn restores. */
        u64 old = uc->uc_sigmask, m;
        if (set) {
            if (apply_how(how, old, *set, &m) < 0)
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

#ifdef __i386__
/* i386's pre-rt signal calls, still in the ABI: the same guarantees for SIGSYS. */
struct old_sigaction {
    void *handler;
    u32 mask; /* signals 1..32 */
    u32 flags;
    void *restorer;
};

static iptr do_old_sigaction(struct regs *r) {
    /* As the kernel does it: the 32-bit mask covers signals 1..32, the rest read back as 0. */
    const struct old_sigaction *act = (const struct old_sigaction *)REG_A1(r);
    struct old_sigaction *oact = (struct old_sigaction *)REG_A2(r);
    struct ksigaction k, old;
    if (act)
        k = (struct ksigaction){act->handler, act->flags, act->restorer, act->mask};
    iptr res = sigaction_k((int)REG_A0(r), act ? &k : NULL, oact ? &old : NULL);
    if (res == 0 && oact)
        *oact = (struct old_sigaction){old.handler, (u32)old.mask, (u32)old.flags, old.restorer};
    return res;
}

static iptr do_signal(struct regs *r) {
    /* The kernel's sys_signal: one-shot, not masked while it runs; returns the old handler. */
    struct ksigaction k = {(void *)REG_A1(r), 0x80000000U /* SA_RESETHAND */ | SA_NODEFER, NULL,
                           0},
                      old;
    iptr res = sigaction_k((int)REG_A0(r), &k, &old);
    return res ? res : (iptr)old.handler;
}

static iptr do_old_sigprocmask(struct regs *r, struct kucontext *uc) {
    int how = (int)REG_A0(r);
    u32 *set = (u32 *)REG_A1(r), *oset = (u32 *)REG_A2(r);
    if (uc) { /* as above: the mask sigreturn restores; the old call reaches signals 1..32 */
        u64 old = uc->uc_sigmask, m;
        if (set) {
            if (apply_how(how, old, *set | (how == SIG_SETMASK ? old & ~0xffffffffULL : 0),
                          &m) < 0)
                return -EINVAL;
            uc->uc_sigmask = m & ~(SIGBIT(SIGKILL) | SIGBIT(SIGSTOP) | SIGBIT(SIGSYS));
        }
        if (oset)
            *oset = (u32)old;
        return 0;
    }
    if (set && how != SIG_UNBLOCK) {
        u32 m = *set & ~(u32)SIGBIT(SIGSYS);
        return sys3(NR_sigprocmask, how, &m, oset);
    }
    return sys3(NR_sigprocmask, how, set, oset);
}
#endif


/* Reads guest memory that may not be mapped: the kernel checks it (-EFAULT) instead of us
 * faulting on a guest thread. */
int rt_peek(void *dst, uptr src, size_t n) {
    struct {
        void *base;
        size_t len;
    } local = {dst, n}, remote = {(void *)src, n};
    iptr got = sys6(NR_process_vm_readv, sys0(NR_getpid), (iptr)&local, 1, (iptr)&remote, 1, 0);
    return got == (iptr)n ? 0 : -EFAULT;
}

/* --- the dispatcher -------------------------------------------------------------------------------- */

static iptr do_special(struct regs *r, uptr nr, struct kucontext *uc, uptr site) {
    switch (special[nr]) {
    case PATH0:
        return path_call(r, nr, 0, site);
    case PATH1:
        return path_call(r, nr, 1, site);
    case WRITE:
        return do_write(r, nr, site);
    }
    switch (nr) {
    case NR_execve:
    case NR_execveat:
        return do_execve(r, nr, uc, site);
    case NR_chdir:
        return do_chdir(r, site);
    case NR_getcwd:
        return do_getcwd(r);
    case NR_close_range:
        return do_close_range(r);
    case NR_mmap:
#ifdef __i386__
    case NR_mmap2:
#endif
        return do_mmap(r, nr);
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
            sys1(nr, REG_A0(r));
    case NR_rt_sigaction:
        return do_sigaction(r);
    case NR_rt_sigprocmask:
        return do_sigprocmask(r, uc);
#ifdef __i386__
    case NR_sigaction:
        return do_old_sigaction(r);
    case NR_signal:
        return do_signal(r);
    case NR_sigprocmask:
        return do_old_sigprocmask(r, uc);
#endif
    }
    return -ENOSYS; /* not reached */
}

/* Performs a guest syscall, trampolined or escaped (uc: the SIGSYS handler's context). */
static iptr perform(struct regs *r, uptr nr, struct kucontext *uc, uptr site) {
    if (__builtin_expect(nr < RT_NCOUNT, 1)) {
        if (fd_args[nr] && touches_guarded(r, fd_args[nr]))
            return -EBADF;
        if (special[nr])
            return do_special(r, nr, uc, site);
    }
    return sys6((iptr)nr, (iptr)REG_A0(r), (iptr)REG_A1(r), (iptr)REG_A2(r), (iptr)REG_A3(r),
                (iptr)REG_A4(r), (iptr)REG_A5(r));
}

__attribute__((used)) void rt_dispatch(struct regs *r) {
    uptr nr = REG_NR(r);
    uptr site = REG_SITE(r);
    rt_count(nr, site);
    if (__builtin_expect(rt_cfg.trace, 0) &&
        (nr == NR_exit || nr == NR_exit_group || nr == NR_execve || nr == NR_execveat))
        rt_trace(nr, 0, site, 0);
    iptr res = perform(r, nr, NULL, site);
    REG_NR(r) = (uptr)res;
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
    uptr nr = (uptr)(u32)si->syscall;
    uptr addr = (uptr)si->call_addr - 2; /* the syscall instruction itself (all are 2 bytes) */
    rt_escape_hit(addr, nr);
    if (rt_cfg.strict)
        rt_strict_stop(nr, addr);
    if (si->arch != AUDIT_ARCH_SELF) { /* the other ABI's syscalls (int 0x80 from 64-bit code,
                                          a far jump to 64-bit code from 32-bit): not emulated */
        UC_RESULT(uc) = (uptr)-ENOSYS;
        return;
    }
    if (IS_SIGRETURN(nr))
        rt_sigreturn_at(UC_SP(uc), nr);
    struct regs r;
    regs_from_uc(&r, uc, nr);
    UC_RESULT(uc) = (uptr)perform(&r, nr, uc, addr);
}

#ifdef __i386__
/* AT_SYSINFO: glibc (and musl) keep this in gs:[0x10] and make their syscalls with
 * `call *%gs:0x10`. The rewriter turns every such call into a stub jump, so whatever still
 * arrives here (through entry32.S's rt_vsyscall) comes from code the rewriting missed: an
 * escape, recorded at that call (its 7 bytes end at the return address; any other form of
 * call is named by its return address) and performed like the SIGSYS handler performs one.
 * The seccomp filter cannot see these (they are issued from the runtime's text), which is why
 * they are recorded here. */
__attribute__((used)) void rt_vsyscall_dispatch(struct regs *r) {
    static const u8 call_gs10[7] = {0x65, 0xff, 0x15, 0x10, 0x00, 0x00, 0x00};
    uptr nr = REG_NR(r), site = r->eip;
    u8 call[7];
    if (rt_peek(call, r->eip - 7, 7) == 0 && memcmp(call, call_gs10, 7) == 0)
        site = r->eip - 7;
    rt_escape_hit(site, nr);
    if (rt_cfg.strict)
        rt_strict_stop(nr, site);
    if (IS_SIGRETURN(nr)) /* the frame lies where the caller's ESP was before its call */
        rt_sigreturn_at((uptr)(&r->eip + 1), nr);
    REG_NR(r) = (uptr)perform(r, nr, NULL, site);
}
#endif
