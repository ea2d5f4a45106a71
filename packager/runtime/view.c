/* view.c: the file system the guest sees, built with the kernel's user and mount namespaces
 * before the first image is loaded (spec/runtime.md, README "Does my bundle work under
 * LiteBox?"). Nothing here translates paths: once the view is built, every syscall the guest
 * makes, through a trampoline or escaped, resolves in the same tree.
 *
 * The LiteBox view (the default) is what litebox_shim_linux's default file system shows: the
 * bundle's regular files as a read-only lower layer (run.py lays them out with the tar's
 * modes, directories 0777 and mtime 0, as tar_ro shows them), a private writable layer on top
 * (an overlayfs whose upper and work directories live on a tmpfs only this mount namespace
 * sees, so it is gone when the last guest process exits), a writable /tmp in that layer, and
 * /dev with LiteBox's devices (null, urandom, stdin, stdout, stderr; bind-mounted from the
 * host's /dev/null and /dev/urandom, the stdio ones answered by the callback). There is no
 * /proc, as in LiteBox. The guest runs as uid/gid 1000 (LiteBox's defaults): the host user is
 * mapped to 1000, so the bundle's files show as 1000's.
 *
 * --host-fs shows the host instead: a tmpfs root holding each top-level entry of the host's /
 * (symlinks recreated, directories as overlays with a private upper layer, so writes are thrown
 * away; a directory that cannot be overlaid, such as /proc, /dev or /sys with their submounts,
 * is bind-mounted as it is, read-only, with a private /dev/shm), the host user mapped to
 * itself. The bundle is still found first
 * (rt_bundle_path in callback.c), as before this view existed.
 *
 * The runtime keeps three descriptors across every execve, at the top of the descriptor range,
 * and the callback refuses the guest any use of them (fd_guarded in callback.c): the host's
 * /proc (the runtime's own /proc/self/{exe,maps,stat,fd}, which the guest does not see), the
 * host's / (to tell whether the host has a path the bundle lacks) and the record file. A guest
 * execve re-executes the runtime through /proc/self/exe with --fds, so the new image keeps the
 * view instead of building another one.
 *
 * After the view is built every capability the namespace gave is dropped (bounding set too),
 * so the guest cannot unmount or remount anything. */
#include "rt.h"

#define CLONE_NEWNS 0x00020000
#define CLONE_NEWUSER 0x10000000
#define MS_RDONLY 1
#define MS_NOSUID 2
#define MS_REMOUNT 32
#define MS_BIND 4096
#define MS_REC 16384
#define MS_PRIVATE (1 << 18)
#define MNT_DETACH 2
#define F_DUPFD 0
#define PR_CAPBSET_DROP 24
#define RLIMIT_NOFILE 7
#define UTIME_OMIT ((1L << 30) - 2L)

__attribute__((noreturn)) static void fail(const char *what, const char *path, iptr err) {
    /* EPERM here: a kernel or security module that allows user namespaces but not mounts in
     * them (AppArmor's restrict_unprivileged_userns, say). */
    rt_say("cannot build the guest's file system: %s %s (errno %ld)%s", what, path, -err,
           err == -EPERM ? "; user namespaces are restricted here: --host-fs runs without "
                           "LiteBox's view"
                         : "");
    rt_exit(LAUNCH_STATUS);
}

static void must(iptr r, const char *what, const char *path) {
    if (r < 0)
        fail(what, path, r);
}

static void write_file(const char *path, const char *text) {
    int fd = (int)sys3(NR_open, path, O_WRONLY | O_CLOEXEC, 0);
    must(fd, "open", path);
    iptr n = sys3(NR_write, fd, text, rt_strlen(text));
    sys1(NR_close, fd);
    must(n, "write", path);
}

/* dst := a + "/" + b, or die. */
static char *join(char *dst, const char *a, const char *b) {
    if (rt_fmt(dst, RT_PATH_MAX, "%s/%s", a, b) >= RT_PATH_MAX - 1)
        fail("path too long", a, -ENAMETOOLONG);
    return dst;
}

static void mkdir_mode(const char *path, int mode) {
    iptr r = sys2(NR_mkdir, path, mode);
    if (r < 0 && r != -EEXIST)
        fail("mkdir", path, r);
    sys2(NR_chmod, path, mode);
}

/* mkdir -p, every new directory 0777 (what LiteBox shows for directories). */
static void mkdir_all(const char *path) {
    char buf[RT_PATH_MAX];
    rt_strlcpy(buf, path, sizeof buf);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || *p == 0) {
            char c = *p;
            *p = 0;
            iptr r = sys2(NR_mkdir, buf, 0777);
            if (r < 0 && r != -EEXIST)
                fail("mkdir", buf, r);
            *p = c;
            if (!c)
                return;
        }
    }
}

static void bind(const char *from, const char *to, int rec) {
    must(sys5(NR_mount, from, to, NULL, MS_BIND | (rec ? MS_REC : 0), NULL), "bind-mount", from);
}

/* Makes a bind-mounted tree read-only, submounts included: a host directory --host-fs cannot
 * overlay must not take the guest's writes. Device files stay usable (writing a device is not
 * a write to the file system). */
static void read_only_tree(const char *path) {
    struct {
        u64 attr_set, attr_clr, propagation, userns_fd;
    } attr = {1 /* MOUNT_ATTR_RDONLY */, 0, 0, 0};
    must(sys5(NR_mount_setattr, AT_FDCWD, path, 0x8000 /* AT_RECURSIVE */, &attr, sizeof attr),
         "make read-only", path);
}

static void zero_mtime(const char *path) {
    struct {
        iptr sec, nsec;
    } t[2] = {{0, UTIME_OMIT}, {0, 0}}; /* atime as it is, mtime 0 (the tar's) */
    sys4(NR_utimensat, AT_FDCWD, path, t, 0);
}

/* Moves fd to `to` (kept across execve: no close-on-exec). */
static int park_fd(int fd, int to, const char *what) {
    must(fd, "open", what);
    if (fd != to) {
        must(sys2(NR_dup2, fd, to), "dup2", what);
        sys1(NR_close, fd);
    }
    return to;
}

void rt_view_open_fds(const char *report) {
    struct {
        uptr cur, max;
    } lim = {1024, 1024};
    sys2(NR_getrlimit, RLIMIT_NOFILE, &lim);
    /* At most 1023: a higher descriptor would make the kernel grow every guest process's
     * descriptor table to match (containers often allow a million). */
    int top = lim.cur >= 16 && lim.cur < 1024 ? (int)lim.cur - 1 : 1023;
    rt_cfg.fd_proc = park_fd((int)sys3(NR_open, "/proc", O_PATH | O_DIRECTORY, 0), top - 2,
                             "/proc");
    rt_cfg.fd_host = park_fd((int)sys3(NR_open, "/", O_PATH | O_DIRECTORY, 0), top - 1, "/");
    rt_cfg.fd_rec = -1;
    if (report[0])
        rt_cfg.fd_rec = park_fd((int)sys3(NR_open, report, O_WRONLY | O_APPEND | O_CREAT, 0600),
                                top, report);
}

static void drop_capabilities(void) {
    for (int cap = 0; cap < 64; cap++)
        sys2(NR_prctl, PR_CAPBSET_DROP, cap);
    struct {
        u32 version;
        int pid;
    } hdr = {0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
    u32 data[6] = {0};
    sys2(NR_capset, &hdr, data);
}

/* LiteBox's /dev: a tmpfs with the five devices, read-only afterwards. */
static void make_dev(const char *root) {
    static const char *const names[] = {"null", "urandom", "stdin", "stdout", "stderr"};
    char dev[RT_PATH_MAX], node[RT_PATH_MAX];
    join(dev, root, "dev");
    mkdir_mode(dev, 0755);
    must(sys5(NR_mount, "tmpfs", dev, "tmpfs", MS_NOSUID, "mode=0755"), "mount tmpfs on", dev);
    for (uptr i = 0; i < sizeof names / sizeof names[0]; i++) {
        join(node, dev, names[i]);
        int fd = (int)sys3(NR_open, node, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
        must(fd, "create", node);
        sys1(NR_close, fd);
        /* The stdio nodes only need to exist (stat shows a character device, as in LiteBox);
         * opening them is answered by the callback with the guest's own descriptor. */
        bind(names[i][0] == 'u' ? "/dev/urandom" : "/dev/null", node, 0);
    }
    zero_mtime(dev);
    must(sys5(NR_mount, NULL, dev, NULL, MS_REMOUNT | MS_RDONLY | MS_NOSUID, "mode=0755"),
         "remount read-only", dev);
}

static int exists_dir(const char *path) {
    struct kstat st;
    return rt_fstatat(AT_FDCWD, path, &st, 0) == 0 && (st.st_mode & S_IFMT) == S_IFDIR;
}

/* The host's / entry by entry (see the top of this file). */
static void mirror_host(const char *stage, const char *root) {
    char upper[RT_PATH_MAX], work[RT_PATH_MAX];
    join(upper, stage, "upper");
    join(work, stage, "work");
    mkdir_mode(upper, 0755);
    mkdir_mode(work, 0755);
    int dfd = (int)sys3(NR_open, "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    must(dfd, "open", "/");
    char *buf = rt_map_anon(1 << 16);
    if (!buf)
        fail("out of memory for", "/", -ENOMEM);
    for (;;) {
        iptr n = sys3(NR_getdents64, dfd, buf, 1 << 16);
        if (n <= 0)
            break;
        for (iptr off = 0; off < n;) {
            struct dirent64 {
                u64 ino;
                i64 off;
                u16 reclen;
                u8 type;
                char name[1];
            } *d = (struct dirent64 *)(buf + off);
            off += d->reclen;
            const char *name = d->name;
            if (rt_streq(name, ".") || rt_streq(name, ".."))
                continue;
            char host[RT_PATH_MAX], there[RT_PATH_MAX], up[RT_PATH_MAX], wk[RT_PATH_MAX];
            rt_fmt(host, sizeof host, "/%s", name);
            join(there, root, name);
            struct kstat st;
            if (rt_fstatat(AT_FDCWD, host, &st, AT_SYMLINK_NOFOLLOW) < 0)
                continue;
            u32 type = st.st_mode & S_IFMT;
            if (type == S_IFLNK) {
                char target[RT_PATH_MAX];
                iptr len = sys3(NR_readlink, host, target, sizeof target - 1);
                if (len > 0) {
                    target[len] = 0;
                    sys2(NR_symlink, target, there);
                }
            } else if (type == S_IFDIR) {
                mkdir_mode(there, st.st_mode & 07777);
                join(up, upper, name);
                join(wk, work, name);
                mkdir_mode(up, 0755);
                mkdir_mode(wk, 0755);
                char opts[3 * RT_PATH_MAX + 64];
                if (rt_fmt(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", host, up,
                           wk) >= (int)sizeof opts - 1 ||
                    sys5(NR_mount, "overlay", there, "overlay", 0, opts) < 0) {
                    /* Mounts below it (/proc, /dev, /sys; any host directory while something
                     * is mounted under it): shown as it is, read-only. */
                    bind(host, there, 1);
                    read_only_tree(there);
                    if (rt_streq(name, "dev")) { /* shared memory stays private and writable */
                        char shm[RT_PATH_MAX];
                        join(shm, there, "shm");
                        if (exists_dir(shm))
                            must(sys5(NR_mount, "tmpfs", shm, "tmpfs", MS_NOSUID, "mode=1777"),
                                 "mount tmpfs on", shm);
                    }
                }
            } else {
                int fd = (int)sys3(NR_open, there, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
                if (fd >= 0) {
                    sys1(NR_close, fd);
                    bind(host, there, 0);
                }
            }
        }
    }
    sys1(NR_close, dfd);
    sys2(NR_munmap, buf, 1 << 16);
}

int rt_view_build(const char *stage, const char *lower, const char *const *binds, int nbinds) {
    uptr uid = (uptr)sys0(NR_getuid), gid = (uptr)sys0(NR_getgid);
    char cwd[RT_PATH_MAX];
    if (sys2(NR_getcwd, cwd, sizeof cwd) <= 0)
        rt_strlcpy(cwd, "/", sizeof cwd);
    iptr r = sys1(NR_unshare, CLONE_NEWUSER | CLONE_NEWNS);
    if (r < 0)
        return (int)r;
    char map[64];
    uptr guest_uid = rt_cfg.view_host ? uid : 1000, guest_gid = rt_cfg.view_host ? gid : 1000;
    write_file("/proc/self/setgroups", "deny");
    rt_fmt(map, sizeof map, "%lu %lu 1", guest_uid, uid);
    write_file("/proc/self/uid_map", map);
    rt_fmt(map, sizeof map, "%lu %lu 1", guest_gid, gid);
    write_file("/proc/self/gid_map", map);
    must(sys5(NR_mount, NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL), "make private", "/");
    must(sys5(NR_mount, "tmpfs", stage, "tmpfs", MS_NOSUID, "mode=0700"), "mount tmpfs on",
         stage);
    uptr old_umask = (uptr)sys1(NR_umask, 0);
    char root[RT_PATH_MAX], upper[RT_PATH_MAX], work[RT_PATH_MAX], path[RT_PATH_MAX];
    join(root, stage, "root");
    mkdir_mode(root, 0777);
    if (rt_cfg.view_host) {
        must(sys5(NR_mount, "tmpfs", root, "tmpfs", MS_NOSUID, "mode=0755"), "mount tmpfs on",
             root);
        mirror_host(stage, root);
    } else {
        join(upper, stage, "upper");
        join(work, stage, "work");
        mkdir_mode(upper, 0777);
        mkdir_mode(work, 0700);
        mkdir_mode(join(path, upper, "tmp"), 0777); /* LiteBox's writable /tmp */
        char opts[3 * RT_PATH_MAX + 64];
        if (rt_fmt(opts, sizeof opts, "lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work) >=
            (int)sizeof opts - 1)
            fail("path too long", lower, -ENAMETOOLONG);
        must(sys5(NR_mount, "overlay", root, "overlay", MS_NOSUID, opts), "mount the bundle at",
             root);
        make_dev(root);
    }
    for (int i = 0; i < nbinds; i++) {
        const char *host = binds[i], *sep = host;
        while (*sep && *sep != ':')
            sep++;
        char from[RT_PATH_MAX];
        uptr len = (uptr)(sep - host);
        if (!*sep || len >= sizeof from)
            fail("bad --bind", host, -EINVAL);
        memcpy(from, host, len);
        from[len] = 0;
        join(path, root, sep + 1);
        mkdir_all(path);
        bind(from, path, 1);
    }
    if (!rt_cfg.view_host) {
        zero_mtime(join(path, root, "tmp"));
        zero_mtime(root);
    }
    sys1(NR_umask, old_umask);
    must(sys1(NR_chdir, root), "chdir", root);
    must(sys2(NR_pivot_root, ".", "."), "pivot_root", root);
    must(sys2(NR_umount2, ".", MNT_DETACH), "detach the host's root", "/");
    if (!rt_cfg.view_host || sys1(NR_chdir, cwd) < 0)
        sys1(NR_chdir, "/"); /* LiteBox's guest starts in / */
    drop_capabilities();
    return 0;
}
