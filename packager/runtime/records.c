/* records.c: what the report is made of. Per-process counters by syscall number, the set of
 * distinct sites and the escapes, kept in the runtime's memory (shared by the guest's threads,
 * lock-free) and appended as text lines to the --report file at exit, exit_group, execve and
 * dlclose (see report.py for the line format). Also --trace's lines. */
#include "rt.h"
#include "syscall_names.h"

#define SITE_BITS 13
#define SITE_SLOTS (1U << SITE_BITS)
#define ESC_SLOTS 1024

uptr rt_counts[RT_NCOUNT]; /* entry32.S counts the sigreturns it passes straight through here */
uptr rt_sigreturn_count;    /* counted by entry.S, which passes rt_sigreturn straight through */
static uptr sites[SITE_SLOTS];
static uptr sites_lost;

struct escape {
    uptr addr, nr, count;
};
static struct escape escapes[ESC_SLOTS];

const char *rt_syscall_name(uptr nr) {
    const char *n = nr < sizeof rt_syscall_names / sizeof rt_syscall_names[0]
                        ? rt_syscall_names[nr]
                        : NULL;
    return n ? n : "?";
}

static inline uptr hash_addr(uptr a) { return (uptr)(((u64)a * 0x9E3779B97F4A7C15ULL) >> 32); }

/* Remembers a site (the restart address: the call-site jump for redzone, the stub's slot jump
 * for resume, the stub's slot call on i386 — one per patched syscall each way). Lock-free open
 * addressing. */
static inline void site_hit(uptr a) {
    uptr h = hash_addr(a);
    for (u32 i = 0; i < 16; i++) {
        uptr *slot = &sites[(h + i) & (SITE_SLOTS - 1)];
        uptr v = __atomic_load_n(slot, __ATOMIC_RELAXED);
        if (v == a)
            return;
        if (v == 0) {
            uptr zero = 0;
            if (__atomic_compare_exchange_n(slot, &zero, a, 0, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED) ||
                zero == a)
                return;
        }
    }
    __atomic_fetch_add(&sites_lost, 1, __ATOMIC_RELAXED);
}

void rt_escape_hit(uptr addr, uptr nr) {
    uptr h = hash_addr(addr);
    for (u32 i = 0; i < 64; i++) {
        struct escape *e = &escapes[(h + i) & (ESC_SLOTS - 1)];
        uptr v = __atomic_load_n(&e->addr, __ATOMIC_RELAXED);
        if (v == 0) {
            uptr zero = 0;
            if (__atomic_compare_exchange_n(&e->addr, &zero, addr, 0, __ATOMIC_RELAXED,
                                            __ATOMIC_RELAXED))
                v = addr;
            else
                v = zero;
        }
        if (v == addr) {
            e->nr = nr;
            __atomic_fetch_add(&e->count, 1, __ATOMIC_RELAXED);
            return;
        }
    }
}

void rt_child_after_fork(void) {
    /* A new process starts with its parent's counters; they were the parent's to report. */
    memset(rt_counts, 0, sizeof rt_counts);
    memset(sites, 0, sizeof sites);
    memset(escapes, 0, sizeof escapes);
    rt_sigreturn_count = 0;
    sites_lost = 0;
}

/* Counts one trampolined syscall and remembers its site. */
void rt_count(uptr nr, uptr site) {
    __atomic_fetch_add(&rt_counts[nr < RT_NCOUNT ? nr : RT_NCOUNT - 1], 1, __ATOMIC_RELAXED);
    site_hit(site);
}

/* --- /proc/self/maps, for naming the object behind an address ---------------------------------- */

struct map_ent {
    uptr start, end, off;
    const char *path;
};

struct maps {
    char *text;
    struct map_ent *ent;
    uptr n;
};

#define MAPS_TEXT (4UL << 20)
#define MAPS_ENTS (64UL << 10)

static uptr parse_hex(const char **p) {
    uptr v = 0;
    for (;; (*p)++) {
        char c = **p;
        if (c >= '0' && c <= '9')
            v = v * 16 + (uptr)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v * 16 + (uptr)(c - 'a' + 10);
        else
            return v;
    }
}

static int maps_load(struct maps *m) {
    m->n = 0;
    m->text = rt_map_anon(MAPS_TEXT);
    m->ent = rt_map_anon(MAPS_ENTS * sizeof(struct map_ent));
    int fd = (int)sys4(NR_openat, rt_cfg.fd_proc, "self/maps", O_RDONLY | O_CLOEXEC, 0);
    if (!m->text || !m->ent || fd < 0) {
        if (fd >= 0)
            sys1(NR_close, fd);
        return -1;
    }
    uptr len = 0;
    for (;;) {
        iptr r = sys3(NR_read, fd, m->text + len, MAPS_TEXT - 1 - len);
        if (r == -EINTR)
            continue;
        if (r <= 0)
            break;
        len += (uptr)r;
    }
    sys1(NR_close, fd);
    m->text[len] = 0;
    /* "start-end perms offset dev inode   path" */
    char *line = m->text;
    while (*line && m->n < MAPS_ENTS) {
        char *eol = line;
        while (*eol && *eol != '\n')
            eol++;
        char *next = *eol ? eol + 1 : eol;
        *eol = 0;
        const char *p = line;
        struct map_ent *e = &m->ent[m->n];
        e->start = parse_hex(&p);
        p++;
        e->end = parse_hex(&p);
        while (*p && *p != ' ')
            p++;
        while (*p == ' ')
            p++;
        while (*p && *p != ' ') /* perms */
            p++;
        while (*p == ' ')
            p++;
        e->off = parse_hex(&p);
        for (int field = 0; field < 2; field++) { /* dev, inode */
            while (*p == ' ')
                p++;
            while (*p && *p != ' ')
                p++;
        }
        while (*p == ' ')
            p++;
        e->path = p;
        m->n++;
        line = next;
    }
    return 0;
}

static const struct map_ent *maps_find(const struct maps *m, uptr addr) {
    uptr lo = 0, hi = m->n;
    while (lo < hi) {
        uptr mid = (lo + hi) / 2;
        const struct map_ent *e = &m->ent[mid];
        if (addr < e->start)
            hi = mid;
        else if (addr >= e->end)
            lo = mid + 1;
        else
            return e;
    }
    return NULL;
}

static void maps_free(struct maps *m) {
    if (m->text)
        sys2(NR_munmap, m->text, MAPS_TEXT);
    if (m->ent)
        sys2(NR_munmap, m->ent, MAPS_ENTS * sizeof(struct map_ent));
}

/* The object and file offset behind addr, with a bundle path shown as the guest sees it. */
static const char *describe(const struct maps *m, uptr addr, uptr *off) {
    const struct map_ent *e = maps_find(m, addr);
    *off = 0;
    if (!e || !e->path[0])
        return "?";
    *off = e->off + (addr - e->start);
    const char *p = e->path;
    if (rt_cfg.bundle_len && rt_startswith(p, rt_cfg.bundle) && p[rt_cfg.bundle_len] == '/')
        p += rt_cfg.bundle_len;
    return p;
}

/* --- records for the report -------------------------------------------------------------------- */

struct recbuf {
    uptr len;
    char buf[2048];
};

static void rec_flush(struct recbuf *b) {
    if (b->len)
        rt_write_all(rt_cfg.fd_rec, b->buf, b->len);
    b->len = 0;
}

/* Whole lines only, so lines of processes appending at the same time never mix. */
static void rec_line(struct recbuf *b, const char *line, int n) {
    if (b->len + (uptr)n > sizeof b->buf)
        rec_flush(b);
    memcpy(b->buf + b->len, line, (uptr)n);
    b->len += (uptr)n;
}

void rt_dump_records(const char *why) {
    if (rt_cfg.fd_rec < 0)
        return;
    struct recbuf *b = rt_map_anon(sizeof *b);
    if (!b)
        return;
    b->len = 0;
    char line[RT_PATH_MAX + 128];
    iptr pid = sys0(NR_getpid);
    int n = rt_fmt(line, sizeof line, "P %ld %ld %s %s\n", pid, sys0(NR_getppid), why, rt_cfg.exe);
    rec_line(b, line, n);
    uptr sr = __atomic_exchange_n(&rt_sigreturn_count, 0, __ATOMIC_RELAXED);
    for (uptr nr = 0; nr < RT_NCOUNT; nr++) {
        uptr c = __atomic_exchange_n(&rt_counts[nr], 0, __ATOMIC_RELAXED) +
                 (nr == NR_rt_sigreturn ? sr : 0);
        if (c) {
            n = rt_fmt(line, sizeof line, "N %ld %lu %lu\n", pid, nr, c);
            rec_line(b, line, n);
        }
    }
    struct maps m;
    maps_load(&m);
    uptr off;
    for (u32 i = 0; i < SITE_SLOTS; i++) {
        uptr a = __atomic_exchange_n(&sites[i], 0, __ATOMIC_RELAXED);
        if (a) {
            const char *obj = describe(&m, a, &off);
            n = rt_fmt(line, sizeof line, "S %ld 0x%lx 0x%lx %s\n", pid, a, off, obj);
            rec_line(b, line, n);
        }
    }
    uptr lost = __atomic_exchange_n(&sites_lost, 0, __ATOMIC_RELAXED);
    if (lost) {
        n = rt_fmt(line, sizeof line, "L %ld %lu\n", pid, lost);
        rec_line(b, line, n);
    }
    for (u32 i = 0; i < ESC_SLOTS; i++) {
        struct escape *e = &escapes[i];
        uptr c = __atomic_exchange_n(&e->count, 0, __ATOMIC_RELAXED);
        if (e->addr && c) {
            const char *obj = describe(&m, e->addr, &off);
            n = rt_fmt(line, sizeof line, "E %ld %lu %lu 0x%lx 0x%lx %s\n", pid, e->nr, c,
                       e->addr, off, obj);
            rec_line(b, line, n);
        }
    }
    maps_free(&m);
    rec_flush(b);
    sys2(NR_munmap, b, sizeof *b);
}

void rt_trace(uptr nr, iptr res, uptr site, int done) {
    char line[200];
    int n;
    if (done)
        n = rt_fmt(line, sizeof line, "[litebox %ld] %s (%lu) = %ld  site 0x%lx\n",
                   sys0(NR_getpid), rt_syscall_name(nr), nr, res, site);
    else
        n = rt_fmt(line, sizeof line, "[litebox %ld] %s (%lu) ...  site 0x%lx\n",
                   sys0(NR_getpid), rt_syscall_name(nr), nr, site);
    rt_write_all(2, line, (uptr)n);
}

void rt_strict_stop(uptr nr, uptr addr) {
    struct maps m;
    maps_load(&m);
    uptr off;
    const char *obj = describe(&m, addr, &off);
    rt_say("escaped syscall %s (%lu) at 0x%lx in %s+0x%lx: stopped (--strict)",
           rt_syscall_name(nr), nr, addr, obj, off);
    maps_free(&m);
    if (rt_cfg.fd_rec >= 0) {
        char line[128];
        int n = rt_fmt(line, sizeof line, "X %ld %lu 0x%lx\n", sys0(NR_getpid), nr, addr);
        rt_write_all(rt_cfg.fd_rec, line, (uptr)n);
    }
    rt_dump_records("strict");
    rt_exit(STRICT_STATUS);
}

void rt_strict_files_stop(uptr nr, uptr site, const char *path) {
    struct maps m;
    maps_load(&m);
    uptr off;
    const char *obj = describe(&m, site, &off);
    rt_say("%s: %s at %s+0x%lx looked for a path the bundle lacks and the host has: stopped "
           "(--strict-files)",
           path, rt_syscall_name(nr), obj, off);
    maps_free(&m);
    if (rt_cfg.fd_rec >= 0) {
        char line[128];
        int n = rt_fmt(line, sizeof line, "X %ld %lu 0x%lx files\n", sys0(NR_getpid), nr, site);
        rt_write_all(rt_cfg.fd_rec, line, (uptr)n);
    }
    rt_dump_records("strict");
    rt_exit(STRICT_STATUS);
}

void rt_note(char kind, const char *head, const char *path) {
    if (rt_cfg.fd_rec < 0)
        return;
    char pre[160];
    int n = rt_fmt(pre, sizeof pre, "%c %ld %s ", kind, sys0(NR_getpid), head);
    struct {
        const void *base;
        uptr len;
    } iov[3] = {{pre, (uptr)n}, {path, rt_strlen(path)}, {"\n", 1}};
    /* One writev on an O_APPEND file: lines of processes writing at once never mix. */
    sys3(NR_writev, rt_cfg.fd_rec, iov, 3);
}

