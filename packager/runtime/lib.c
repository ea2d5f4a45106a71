/* lib.c: the few libc-like helpers the runtime needs, freestanding (no errno, no TLS, no SSE),
 * so they are safe on the guest's thread with the guest's thread pointer (FS on x86-64, GS on
 * i386). gcc may also emit calls to memcpy/memset/memmove/memcmp for struct copies; these
 * definitions satisfy them. */
#include "rt.h"

void *memcpy(void *d, const void *s, size_t n) {
    u8 *dp = d;
    const u8 *sp = s;
    while (n--)
        *dp++ = *sp++;
    return d;
}

void *memmove(void *d, const void *s, size_t n) {
    u8 *dp = d;
    const u8 *sp = s;
    if (dp < sp) {
        while (n--)
            *dp++ = *sp++;
    } else {
        while (n--)
            dp[n] = sp[n];
    }
    return d;
}

void *memset(void *d, int c, size_t n) {
    u8 *dp = d;
    while (n--)
        *dp++ = (u8)c;
    return d;
}

int memcmp(const void *a, const void *b, size_t n) {
    const u8 *x = a, *y = b;
    for (; n; n--, x++, y++)
        if (*x != *y)
            return *x < *y ? -1 : 1;
    return 0;
}

size_t rt_strlen(const char *s) {
    size_t n = 0;
    while (s[n])
        n++;
    return n;
}

int rt_streq(const char *a, const char *b) {
    while (*a && *a == *b)
        a++, b++;
    return *a == *b;
}

int rt_startswith(const char *s, const char *prefix) {
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

size_t rt_strlcpy(char *d, const char *s, size_t cap) {
    size_t n = rt_strlen(s);
    size_t k = n < cap ? n : cap - 1;
    memcpy(d, s, k);
    d[k] = 0;
    return n;
}

/* --- formatting ------------------------------------------------------------------------------- */

struct out {
    char *buf;
    size_t cap, len;
};

static void put(struct out *o, char c) {
    if (o->len + 1 < o->cap)
        o->buf[o->len] = c;
    o->len++;
}

static void put_u(struct out *o, uptr v, unsigned base) {
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    while (n)
        put(o, tmp[--n]);
}

static int vfmt(char *buf, size_t cap, const char *f, __builtin_va_list ap) {
    struct out o = {buf, cap, 0};
    for (; *f; f++) {
        if (*f != '%') {
            put(&o, *f);
            continue;
        }
        f++;
        int lng = 0;
        while (*f == 'l')
            lng = 1, f++;
        switch (*f) {
        case 's': {
            const char *s = __builtin_va_arg(ap, const char *);
            for (s = s ? s : "(null)"; *s; s++)
                put(&o, *s);
            break;
        }
        case 'c':
            put(&o, (char)__builtin_va_arg(ap, int));
            break;
        case 'd': {
            iptr v = lng ? __builtin_va_arg(ap, iptr) : __builtin_va_arg(ap, int);
            if (v < 0) {
                put(&o, '-');
                put_u(&o, -(uptr)v, 10);
            } else {
                put_u(&o, (uptr)v, 10);
            }
            break;
        }
        case 'u':
            put_u(&o, lng ? __builtin_va_arg(ap, uptr) : __builtin_va_arg(ap, unsigned), 10);
            break;
        case 'x':
            put_u(&o, lng ? __builtin_va_arg(ap, uptr) : __builtin_va_arg(ap, unsigned), 16);
            break;
        case 'p':
            put(&o, '0');
            put(&o, 'x');
            put_u(&o, (uptr)__builtin_va_arg(ap, void *), 16);
            break;
        case '%':
            put(&o, '%');
            break;
        default:
            put(&o, '?');
            break;
        }
    }
    if (o.cap)
        o.buf[o.len < o.cap ? o.len : o.cap - 1] = 0;
    return (int)(o.len < o.cap ? o.len : o.cap - 1);
}

int rt_fmt(char *buf, size_t cap, const char *fmt, ...) {
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    int n = vfmt(buf, cap, fmt, ap);
    __builtin_va_end(ap);
    return n;
}

void rt_write_all(int fd, const char *s, size_t n) {
    while (n) {
        iptr r = sys3(NR_write, fd, s, n);
        if (r == -EINTR)
            continue;
        if (r <= 0)
            return;
        s += r;
        n -= (size_t)r;
    }
}

void rt_say(const char *fmt, ...) {
    char line[1024];
    static const char prefix[] = "litebox-pack run: ";
    memcpy(line, prefix, sizeof prefix - 1);
    __builtin_va_list ap;
    __builtin_va_start(ap, fmt);
    int n = vfmt(line + sizeof prefix - 1, sizeof line - sizeof prefix - 1, fmt, ap);
    __builtin_va_end(ap);
    size_t len = sizeof prefix - 1 + (size_t)n;
    line[len++] = '\n';
    rt_write_all(2, line, len);
}

void rt_exit(int status) {
    for (;;)
        sys1(NR_exit_group, status);
}

int rt_pread_full(int fd, void *buf, size_t n, u64 off) {
    u8 *p = buf;
    while (n) {
        iptr r = rt_pread(fd, p, n, off);
        if (r == -EINTR)
            continue;
        if (r <= 0)
            return r < 0 ? (int)r : -ENOEXEC;
        p += r;
        n -= (size_t)r;
        off += (u64)r;
    }
    return 0;
}

void *rt_map_anon(uptr len) {
    uptr r = (uptr)rt_mmap(0, len, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return is_err(r) ? NULL : (void *)r;
}
