/* runtime.c: the litebox-pack runtime — runs a rewritten program on the host with its
 * trampolines live (spec/runtime.md). This file is the loader; view.c builds the guest's file
 * system, callback.c serves the syscalls, records.c keeps the counters for the report, elf.c
 * reads ELF headers and trailers, lib.c has the freestanding helpers and entry.S (entry32.S for
 * i386) the assembly edges; rt.h with arch_x86_64.h or arch_i386.h holds what they share.
 *
 * Key design decisions
 * --------------------
 * - One static, non-PIE, freestanding executable (-nostdlib -ffreestanding, no libc at all),
 *   linked at a fixed address far from where guests live (TEXT_BASE in build.py). Its text
 *   range is what the seccomp filter trusts, and because nothing in it uses FS, TLS, errno or
 *   vector registers (-mgeneral-regs-only), any of it may run on a guest thread with the
 *   guest's FS and stack, and a syscall through it preserves all the guest's SSE/AVX state.
 * - The runtime does the kernel's job for the first image: it maps the program and its PT_INTERP
 *   interpreter (both taken from the bundle), maps each trampoline blob at bias + vaddr (RW,
 *   slot := callback address, then R+X), builds argv/envp/auxv on its own initial stack (no
 *   AT_SYSINFO_EHDR on x86-64, so glibc never uses the vDSO; i386: see below) and jumps to the
 *   entry point. brk is not touched: the guest's brk calls get the process's own heap. comm,
 *   /proc/self/cmdline, environ and auxv are pointed at the guest's (PR_SET_NAME,
 *   PR_SET_MM_MAP). With --host-fs /proc/self/exe is answered by the callback (readlink, open,
 *   execve) with the guest's program; LiteBox's view has no /proc at all.
 * - The callback (entry.S) saves every guest register and the flags into a struct regs below
 *   the guest's red zone, calls rt_dispatch and returns to the continuation with only
 *   RAX/RCX/R11 changed. Plain syscalls are issued from the runtime's text with the guest's
 *   arguments; an interrupted one is restarted by the kernel right there (SA_RESTART), so the
 *   stubs' restart addresses are never needed. rt_sigreturn is issued at the guest's exact RSP.
 * - Libraries mapped later: the first, span-reserving mmap ld.so makes of an ELF with a trailer
 *   is widened to cover the blob, which is mapped right away inside it; any other PROT_EXEC
 *   mapping of such a file gets its blob with MAP_FIXED_NOREPLACE, never over another mapping.
 * - clone/clone3 with a new stack: a struct child_start (all guest registers, continuation,
 *   new RSP) is written just below the child's stack pointer; the child starts in entry.S on
 *   it and resumes the guest directly. vfork (and CLONE_VFORK without a stack) become fork,
 *   since a vfork child would return through the parent's callback frame.
 * - Escapes: a seccomp filter allows a syscall only when the instruction pointer lies in the
 *   runtime's text; anything else gets SIGSYS. The handler (SA_NODEFER, so a guest handler
 *   running inside an escaped blocking call may escape too) records the site and performs the
 *   syscall through the same dispatcher, or stops the program under --strict. The guest cannot
 *   switch this off by accident: SIGSYS is removed from every mask it blocks or installs, its
 *   sigaction for SIGSYS is kept aside (and honoured for SIGSYS it sends itself), and
 *   PR_SET_NO_NEW_PRIVS makes the filter legal without privileges.
 * - The file system: before anything is loaded, view.c builds LiteBox's view (user and mount
 *   namespaces: the bundle as tar_ro shows it under a private writable layer, /tmp, LiteBox's
 *   devices, uid/gid 1000, cwd /) or, with --host-fs, the host's with a throwaway layer. No
 *   path is translated in LiteBox's view: the kernel resolves every path in that tree, so no
 *   syscall can miss it. The callback only checks writes against LiteBox's rules (refused or
 *   a runner panic: the call fails with EACCES and is recorded) and records failed lookups of
 *   paths the host has. With --host-fs, absolute paths go to the bundle first when it holds a
 *   non-directory there (rt_bundle_path), as before the view existed.
 * - execve re-executes this runtime (through the host's /proc/self/exe, kept as a descriptor)
 *   with the same options and --fds, after checking what the kernel would check (exists,
 *   executable, ELF or #!), so every new image is loaded with its trampolines and keeps the
 *   view. The filter survives execve; the new instance is told so (--seccomp-inherited) and
 *   does not stack another copy.
 * - Counters, distinct sites and escapes live in the runtime's .bss and are appended as text
 *   records to the record file (a descriptor kept across execve) at exit, exit_group, execve
 *   and dlclose (whole lines, O_APPEND), so forked children and exec'd images are counted;
 *   path events (missing files, host files used, refused writes) and created processes are
 *   appended as they happen; report.py turns them into the JSON report.
 *
 * i386
 * ----
 * The same sources built with -m32 (build.py: TARGETS["i386"], entry32.S instead of entry.S,
 * arch_i386.h instead of arch_x86_64.h) give the runtime for ELF32 i386 programs, which `run`
 * picks by the program's class. What differs:
 * - Syscalls are `int $0x80` with EBX ECX EDX ESI EDI EBP; six-argument ones (mmap2 and the
 *   guest's pass-through calls) go through rt_syscall6, since EBP cannot be named in a
 *   constraint. The runtime never touches GS, glibc's thread pointer on i386.
 * - The callback follows the i386 stub (reference §4.2): [ESP] = continuation, [ESP+4] = the
 *   guest's EAX; entry32.S saves the flags and PUSHAD below them, returns with RET 4. There is
 *   one stub form, so --abi does not matter and the report says "i386".
 * - sigreturn (119) and rt_sigreturn (173) are issued at the guest's exact ESP; clone's record
 *   sits right below the new stack pointer and the child RETs into the guest (no red zone to
 *   respect); clone's arguments pass through in place (i386 order: flags, newsp, parent_tid,
 *   tls, child_tid). mmap2 (offset in pages) and the old mmap (a pointer to six words), stat64,
 *   lstat64, fstatat64, the old stat calls and the pre-rt signal calls are handled too.
 * - gs:[0x10]: glibc makes its syscalls with `call *%gs:0x10`. The rewriter patches every such
 *   call; what still arrives through the pointer comes from unrewritten code. Without help it
 *   would land on glibc's `int $0x80; ret` fallback, which the rewriter itself breaks in a
 *   stripped ld-linux.so.2 (no .symtab, so _dl_sysinfo_int80 is not recognised and its
 *   int $0x80 is patched with the padding before it, putting the entry inside a JMP). So the
 *   runtime passes AT_SYSINFO = rt_vsyscall, where such calls are recorded as escapes at the
 *   call site and performed, plus the AT_SYSINFO_EHDR glibc requires before it honours
 *   AT_SYSINFO: a symbol-less vDSO image (sysinfo_image), so no vDSO function is ever used.
 *   With a vDSO glibc leaves signal restorers to the kernel, so the runtime gives handlers
 *   installed without one its own (entry32.S rt_restore/rt_restore_rt, byte-for-byte the
 *   vDSO's) and hides it when the action is read back. A fully rewritten program therefore
 *   shows no escapes, and one with a raw libc shows libc's sites.
 * - Escape detection is the same seccomp filter with AUDIT_ARCH_I386 (a far jump to 64-bit
 *   code and `syscall` there traps as the other ABI's and gets -ENOSYS).
 */
#include "rt.h"

struct rt_config rt_cfg;

extern char __executable_start[];
extern char etext[];

#define AT_NULL 0
#define AT_PHDR 3
#define AT_PHENT 4
#define AT_PHNUM 5
#define AT_PAGESZ 6
#define AT_BASE 7
#define AT_FLAGS 8
#define AT_ENTRY 9
#define AT_UID 11
#define AT_EUID 12
#define AT_GID 13
#define AT_EGID 14
#define AT_PLATFORM 15
#define AT_HWCAP 16
#define AT_CLKTCK 17
#define AT_SECURE 23
#define AT_RANDOM 25
#define AT_HWCAP2 26
#define AT_EXECFN 31
#define AT_MINSIGSTKSZ 51
#define AT_MAX 64

#define MAX_SCRIPT_DEPTH 4

static struct phdr phdrs[1024];
static uptr host_auxv[AT_MAX];

__attribute__((noreturn)) static void die(const char *what, const char *path, iptr err) {
    if (err)
        rt_say("%s: %s (errno %ld)", path, what, -err);
    else
        rt_say("%s: %s", path, what);
    rt_exit(LAUNCH_STATUS);
}

/* --- loading an image --------------------------------------------------------------------------- */

struct image {
    struct elf_facts f;
    uptr bias;
};

static int prot_of(u32 pflags) {
    return (pflags & PF_R ? PROT_READ : 0) | (pflags & PF_W ? PROT_WRITE : 0) |
           (pflags & PF_X ? PROT_EXEC : 0);
}

/* Maps fd's PT_LOADs and its trampoline blob the way the kernel maps an ELF: one reservation
 * covering the span and the blob (so the blob can never land on another mapping), file-backed
 * segments inside it, the bss tail zeroed and anonymous pages for the rest of memsz. */
static void map_image(int fd, const char *path, struct image *im) {
    struct elf_facts *f = &im->f;
    uptr lo = f->lo, hi = f->hi;
    if (f->blob_size) {
        if (f->blob_vaddr < lo)
            lo = f->blob_vaddr;
        if (PAGE_UP(f->blob_vaddr + f->blob_size) > hi)
            hi = PAGE_UP(f->blob_vaddr + f->blob_size);
    }
    uptr base;
    if (f->type == ET_DYN) {
        base = (uptr)rt_mmap(0, hi - lo, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (is_err(base))
            die("cannot reserve address space", path, (iptr)base);
        im->bias = base - lo;
    } else {
        base = (uptr)rt_mmap(lo, hi - lo, PROT_NONE,
                             MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
        if (is_err(base) || base != lo)
            die("its fixed address range is already in use", path, is_err(base) ? (iptr)base : 0);
        im->bias = 0;
    }
    if (rt_pread_full(fd, phdrs, f->phnum * sizeof phdrs[0], f->phoff) != 0)
        die("cannot read the program headers", path, 0);
    for (u16 i = 0; i < f->phnum; i++) {
        struct phdr *p = &phdrs[i];
        if (p->type != PT_LOAD || p->memsz == 0)
            continue;
        int prot = prot_of(p->flags);
        uptr start = im->bias + PAGE_DOWN(p->vaddr);
        uptr file_end = im->bias + p->vaddr + p->filesz;
        uptr mem_end = im->bias + p->vaddr + p->memsz;
        uptr mapped_end = start;
        if (p->filesz) {
            mapped_end = PAGE_UP(file_end);
            uptr r = (uptr)rt_mmap(start, mapped_end - start, prot, MAP_PRIVATE | MAP_FIXED, fd,
                                   PAGE_DOWN(p->offset));
            if (is_err(r))
                die("cannot map a segment", path, (iptr)r);
            if (mem_end > file_end && mapped_end > file_end) {
                /* The file's last page continues with whatever follows in the file; like the
                 * kernel, zero it to the page end (ld.so's early malloc uses the rest of the
                 * page after its bss and expects zeros). */
                if (!(prot & PROT_WRITE))
                    sys3(NR_mprotect, PAGE_DOWN(file_end), PAGE, prot | PROT_WRITE);
                memset((void *)file_end, 0, mapped_end - file_end);
                if (!(prot & PROT_WRITE))
                    sys3(NR_mprotect, PAGE_DOWN(file_end), PAGE, prot);
            }
        }
        if (PAGE_UP(mem_end) > mapped_end) {
            uptr r = (uptr)rt_mmap(mapped_end, PAGE_UP(mem_end) - mapped_end, prot,
                                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
            if (is_err(r))
                die("cannot map bss", path, (iptr)r);
        }
    }
    if (f->blob_size) {
        iptr r = rt_map_blob(fd, f, im->bias, MAP_FIXED);
        if (is_err((uptr)r))
            die("cannot map the trampoline", path, r);
    }
}

static int open_image(const char *path, const char *host, struct image *im) {
    int fd = (int)sys3(NR_open, host, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        die("cannot open", path, fd);
    if (rt_elf_facts(fd, &im->f, NO_OFFSET, NULL) < 0)
        die("not an " ARCH_NAME " ELF executable", path, 0);
    if (im->f.bad_trailer)
        die("invalid LITEBOX0 trailer", path, 0);
    return fd;
}

/* --- the guest's view of its executable --------------------------------------------------------- */

/* /proc/self/exe names the runtime; the guest should see its own file. The kernel's answer is
 * the canonical path, which /proc/self/fd/N gives us; a bundle file is shown at its in-bundle
 * path. */
static void remember_exe(int fd, const char *fallback) {
    char link[32];
    rt_fmt(link, sizeof link, "self/fd/%d", fd);
    iptr n = sys4(NR_readlinkat, rt_cfg.fd_proc, link, rt_cfg.exe_host, sizeof rt_cfg.exe_host - 1);
    if (n <= 0) {
        rt_strlcpy(rt_cfg.exe_host, fallback, sizeof rt_cfg.exe_host);
        n = (iptr)rt_strlen(rt_cfg.exe_host);
    }
    rt_cfg.exe_host[n] = 0;
    const char *shown = rt_cfg.exe_host;
    if (rt_cfg.bundle_len && rt_startswith(shown, rt_cfg.bundle) && shown[rt_cfg.bundle_len] == '/')
        shown += rt_cfg.bundle_len;
    rt_strlcpy(rt_cfg.exe, shown, sizeof rt_cfg.exe);
}

/* --- "#!" scripts --------------------------------------------------------------------------------- */

/* Parses a "#!" line as the kernel does: the interpreter, then everything after it (trimmed) as
 * one optional argument. Returns 1 for a script, 0 for anything else. */
static int parse_shebang(const char *buf, size_t n, char *interp, char *arg) {
    if (n < 2 || buf[0] != '#' || buf[1] != '!')
        return 0;
    size_t i = 2, end = n;
    for (size_t k = 2; k < n; k++)
        if (buf[k] == '\n') {
            end = k;
            break;
        }
    while (i < end && (buf[i] == ' ' || buf[i] == '\t'))
        i++;
    size_t a = i;
    while (i < end && buf[i] != ' ' && buf[i] != '\t')
        i++;
    if (i == a || i - a >= RT_PATH_MAX)
        return 0;
    memcpy(interp, buf + a, i - a);
    interp[i - a] = 0;
    while (i < end && (buf[i] == ' ' || buf[i] == '\t'))
        i++;
    size_t b = end;
    while (b > i && (buf[b - 1] == ' ' || buf[b - 1] == '\t' || buf[b - 1] == '\r'))
        b--;
    if (b - i >= RT_PATH_MAX)
        b = i + RT_PATH_MAX - 1;
    memcpy(arg, buf + i, b - i);
    arg[b - i] = 0;
    return 1;
}

/* --- options ------------------------------------------------------------------------------------- */

static void copy_opt(char *dst, const char *src, const char *name) {
    if (rt_strlcpy(dst, src, RT_PATH_MAX) >= RT_PATH_MAX)
        die("path too long", name, 0);
}

static void usage(void) {
    rt_say("usage: litebox-runtime (--lower DIR | --host-fs --bundle DIR) --stage DIR "
           "[--bind HOST:GUEST]... [--abi redzone|resume] [--trace] [--strict] [--strict-files] "
           "[--report FILE] [--load-from FILE] -- PATH [ARGV...]   (an exec'd runtime: --fds "
           "P,H,R [--bind-dest GUEST]... [--seccomp-inherited] instead of building the view)");
    rt_exit(2);
}

/* "P,H,R": the descriptors an exec'ing runtime kept (view.c). */
static int parse_fds(const char *s) {
    int v[3] = {-1, -1, -1}, k = 0, neg = 0, any = 0;
    for (;; s++) {
        if (*s == '-' && !any) {
            neg = 1;
        } else if (*s >= '0' && *s <= '9') {
            v[k] = (any ? v[k] : 0) * 10 + (*s - '0');
            any = 1;
        } else if ((*s == ',' || !*s) && k < 3) {
            if (neg)
                v[k] = -1;
            k++, neg = 0, any = 0;
            if (!*s)
                break;
        } else {
            return -1;
        }
    }
    if (k != 3 || v[0] < 0 || v[1] < 0)
        return -1;
    rt_cfg.fd_proc = v[0];
    rt_cfg.fd_host = v[1];
    rt_cfg.fd_rec = v[2];
    return 0;
}

static void add_bind_dest(const char *guest) {
    if (rt_cfg.nbinds == RT_MAX_BINDS || guest[0] != '/' ||
        rt_strlcpy(rt_cfg.bind_dest[rt_cfg.nbinds], guest, sizeof rt_cfg.bind_dest[0]) >=
            sizeof rt_cfg.bind_dest[0])
        die("too many, too long or relative", "--bind", 0);
    rt_cfg.nbinds++;
}

/* --- seccomp ---------------------------------------------------------------------------------------- */

struct sock_filter {
    u16 code;
    u8 jt, jf;
    u32 k;
};
struct sock_fprog {
    u16 len;
    struct sock_filter *filter;
};
#define BPF_LD_W_ABS 0x20
#define BPF_JEQ_K 0x15
#define BPF_JGE_K 0x35
#define BPF_JGT_K 0x25
#define BPF_RET_K 0x06
#define SECCOMP_RET_ALLOW 0x7fff0000U
#define SECCOMP_RET_TRAP 0x00030000U
#define PR_SET_NO_NEW_PRIVS 38

/* Allows a syscall only from the runtime's text (seccomp_data.instruction_pointer is the
 * address after the syscall instruction, so the upper bound is inclusive). */
static void install_filter(void) {
    u64 lo = rt_cfg.text_lo, hi = rt_cfg.text_hi; /* the high half is 0 on i386 */
    if ((lo >> 32) != (hi >> 32))
        die("runtime text crosses a 4 GiB boundary", "seccomp", 0);
    struct sock_filter prog[] = {
        {BPF_LD_W_ABS, 0, 0, 4}, /* arch */
        {BPF_JEQ_K, 0, 6, AUDIT_ARCH_SELF}, /* the other ABI's syscalls always trap */
        {BPF_LD_W_ABS, 0, 0, 12}, /* instruction_pointer, high half */
        {BPF_JEQ_K, 0, 4, (u32)(lo >> 32)},
        {BPF_LD_W_ABS, 0, 0, 8}, /* instruction_pointer, low half */
        {BPF_JGE_K, 0, 2, (u32)lo},
        {BPF_JGT_K, 1, 0, (u32)hi},
        {BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW},
        {BPF_RET_K, 0, 0, SECCOMP_RET_TRAP},
    };
    struct sock_fprog fprog = {sizeof prog / sizeof prog[0], prog};
    iptr r = sys5(NR_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    if (r == 0)
        r = sys3(NR_seccomp, 1 /* SECCOMP_SET_MODE_FILTER */, 0, &fprog);
    if (r < 0)
        rt_say("warning: cannot install the seccomp filter (errno %ld): escapes go undetected", -r);
    else
        rt_cfg.filtered = 1;
}

static void install_sigsys(void) {
    /* SA_NODEFER: a guest signal handler running while the SIGSYS handler waits in a syscall
     * may escape too, and a blocked SIGSYS would then kill the program. */
    struct ksigaction sa = {(void *)rt_sigsys, SA_SIGINFO | SA_RESTORER | SA_NODEFER,
                            (void *)rt_sigrestorer, 0};
    sys4(NR_rt_sigaction, SIGSYS, &sa, NULL, 8);
    u64 bit = SIGBIT(SIGSYS);
    sys4(NR_rt_sigprocmask, SIG_UNBLOCK, &bit, NULL, 8); /* an escaped execve may pass it blocked */
}

/* What ps and /proc/self/{comm,cmdline,environ,auxv} show: the guest's name, strings and
 * auxv, not the runtime's. PR_SET_MM_MAP needs no privilege as long as /proc/self/exe stays
 * (that one the callback answers instead); it rewrites every field, so the others are read
 * back from /proc/self/stat and passed unchanged. Best effort: a kernel without
 * CONFIG_CHECKPOINT_RESTORE keeps showing the runtime's command line. */
#define PR_SET_NAME 15
#define PR_SET_MM 35
#define PR_SET_MM_MAP 14

struct prctl_mm_map { /* __u64 fields on both ABIs */
    u64 start_code, end_code, start_data, end_data, start_brk, brk, start_stack;
    u64 arg_start, arg_end, env_start, env_end;
    u64 auxv;
    u32 auxv_size, exe_fd;
};

/* Fields 26..51 of /proc/self/stat (proc(5) numbering), or 0 on failure. */
static int stat_fields(u64 *f) {
    char buf[1024];
    int fd = (int)sys4(NR_openat, rt_cfg.fd_proc, "self/stat", O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return 0;
    iptr n = sys3(NR_read, fd, buf, sizeof buf - 1);
    sys1(NR_close, fd);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    char *p = buf + n;
    while (p > buf && *p != ')') /* comm may hold spaces and parentheses */
        p--;
    int field = 2;
    while (*p && field < 51) {
        while (*p && *p != ' ')
            p++;
        while (*p == ' ')
            p++;
        field++;
        u64 v = 0;
        for (const char *d = p; *d >= '0' && *d <= '9'; d++)
            v = v * 10 + (u64)(*d - '0');
        if (field >= 26)
            f[field - 26] = v;
    }
    return field == 51;
}

static void show_as(const char *execfn, char *arg_start, char *env_start, char *env_end,
                    uptr *auxv, uptr auxv_bytes) {
    const char *base = execfn;
    for (const char *p = execfn; *p; p++)
        if (*p == '/')
            base = p + 1;
    char comm[16];
    rt_strlcpy(comm, base, sizeof comm);
    sys2(NR_prctl, PR_SET_NAME, comm);
    u64 f[26];
    if (!stat_fields(f))
        return;
    struct prctl_mm_map m = {
        .start_code = f[0],      /* 26 startcode */
        .end_code = f[1],        /* 27 endcode */
        .start_data = f[45 - 26],
        .end_data = f[46 - 26],
        .start_brk = f[47 - 26],
        .brk = (uptr)sys1(NR_brk, 0),
        .start_stack = f[28 - 26],
        .arg_start = (uptr)arg_start,
        .arg_end = (uptr)env_start,
        .env_start = (uptr)env_start,
        .env_end = (uptr)env_end,
        .auxv = (uptr)auxv,
        .auxv_size = (u32)auxv_bytes,
        .exe_fd = (u32)-1,
    };
    sys5(NR_prctl, PR_SET_MM, PR_SET_MM_MAP, &m, sizeof m, 0);
}

/* --- i386: where gs:[0x10] points ------------------------------------------------------------- */

#ifdef __i386__
/* glibc and musl on i386 make their syscalls with `call *%gs:0x10`, through a pointer they take
 * from AT_SYSINFO (the kernel's __kernel_vsyscall) or, without one, their own `int $0x80; ret`
 * fallback (glibc's _dl_sysinfo_int80). The rewriter turns every such call into a stub jump,
 * so the pointer only matters to code the rewriting missed, and there the fallback is a trap:
 * in a stripped object (Debian's ld-linux.so.2 has no .symtab) the rewriter cannot recognise
 * _dl_sysinfo_int80 and patches its int $0x80 like any other site, borrowing the alignment
 * padding before it, so the function's entry ends up inside a JMP. An unrewritten libc
 * calling through gs:[0x10] would then crash instead of showing its escapes.
 *
 * So the runtime passes AT_SYSINFO = rt_vsyscall (entry32.S), which records each call as an
 * escape and performs it. glibc (2.36 and later) only honours AT_SYSINFO together with
 * AT_SYSINFO_EHDR, so this builds the smallest vDSO image it accepts: an ELF header, one
 * PT_LOAD and a PT_DYNAMIC holding only DT_NULL. No symbols, so no __vdso_* function is ever
 * used and every syscall still goes through a trampoline, as LiteBox (which gives no vDSO at
 * all) needs; the only visible difference is a nameless object in dl_iterate_phdr, where
 * natively the kernel's vDSO appears. (With a vDSO glibc also leaves signal restorers to the
 * kernel: see sigaction_i386 in callback.c for how the runtime supplies them.) */
static u8 sysinfo_page[PAGE] __attribute__((aligned(PAGE)));

static uptr sysinfo_image(void) {
    struct image_layout {
        struct ehdr eh;
        struct phdr ph[2];
        u32 dyn[2]; /* DT_NULL */
    } *im = (struct image_layout *)sysinfo_page;
    memset(im, 0, sizeof *im);
    memcpy(im->eh.ident, "\177ELF\1\1\1", 7); /* ELFCLASS32, little-endian, version 1 */
    im->eh.type = ET_DYN;
    im->eh.machine = ELF_MACHINE;
    im->eh.version = 1;
    im->eh.entry = (u32)(uptr)rt_vsyscall - (u32)(uptr)im; /* as __kernel_vsyscall's */
    im->eh.phoff = (u32)__builtin_offsetof(struct image_layout, ph);
    im->eh.ehsize = sizeof im->eh;
    im->eh.phentsize = sizeof im->ph[0];
    im->eh.phnum = 2;
    im->ph[0] = (struct phdr){.type = PT_LOAD, .memsz = PAGE, .filesz = PAGE, .flags = PF_R,
                              .align = PAGE};
    u32 dyn = (u32)__builtin_offsetof(struct image_layout, dyn);
    /* Read-only dynamic section: glibc then leaves it as is (no relocation of its entries). */
    im->ph[1] = (struct phdr){.type = PT_DYNAMIC, .offset = dyn, .vaddr = dyn, .paddr = dyn,
                              .filesz = sizeof im->dyn, .memsz = sizeof im->dyn, .flags = PF_R,
                              .align = 4};
    sys3(NR_mprotect, sysinfo_page, PAGE, PROT_READ);
    return (uptr)im;
}
#endif

/* --- main ------------------------------------------------------------------------------------------ */

static uptr aux(int type, uptr fallback) {
    return type < AT_MAX && host_auxv[type] ? host_auxv[type] : fallback;
}

static char interp_path[RT_PATH_MAX], script_interp[RT_PATH_MAX], script_arg[RT_PATH_MAX];
static char resolved[RT_PATH_MAX + RT_PATH_MAX];

__attribute__((noreturn, used)) void rt_main(uptr *sp) {
    int argc = (int)sp[0];
    char **argv = (char **)(sp + 1);
    char **envp = argv + argc + 1;
    char **e = envp;
    while (*e)
        e++;
    for (uptr *av = (uptr *)(e + 1); av[0] != AT_NULL; av += 2)
        if (av[0] < AT_MAX)
            host_auxv[av[0]] = av[1];

    const char *load_from = NULL, *lower = NULL, *stage = NULL, *binds[RT_MAX_BINDS];
    static char report[RT_PATH_MAX];
    int inherited = 0, have_fds = 0, i = 1;
    rt_cfg.bundle[0] = 0;
    rt_cfg.fd_proc = rt_cfg.fd_host = rt_cfg.fd_rec = -1;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (rt_streq(a, "--")) {
            i++;
            break;
        } else if (rt_streq(a, "--bundle") && i + 1 < argc) {
            copy_opt(rt_cfg.bundle, argv[++i], "--bundle");
        } else if (rt_streq(a, "--lower") && i + 1 < argc) {
            lower = argv[++i];
        } else if (rt_streq(a, "--stage") && i + 1 < argc) {
            stage = argv[++i];
        } else if (rt_streq(a, "--host-fs")) {
            rt_cfg.view_host = 1;
        } else if (rt_streq(a, "--bind") && i + 1 < argc) {
            const char *b = argv[++i], *sep = b;
            while (*sep && *sep != ':')
                sep++;
            if (!*sep)
                usage();
            binds[rt_cfg.nbinds < RT_MAX_BINDS ? rt_cfg.nbinds : 0] = b;
            add_bind_dest(sep + 1);
        } else if (rt_streq(a, "--bind-dest") && i + 1 < argc) {
            add_bind_dest(argv[++i]);
        } else if (rt_streq(a, "--fds") && i + 1 < argc) {
            if (parse_fds(argv[++i]) < 0)
                usage();
            have_fds = 1;
        } else if (rt_streq(a, "--strict-files")) {
            rt_cfg.strict_files = 1;
        } else if (rt_streq(a, "--abi") && i + 1 < argc) {
            i++;
            if (rt_streq(argv[i], "resume"))
                rt_cfg.abi_resume = 1;
            else if (!rt_streq(argv[i], "redzone"))
                usage();
        } else if (rt_streq(a, "--report") && i + 1 < argc) {
            copy_opt(report, argv[++i], "--report");
        } else if (rt_streq(a, "--load-from") && i + 1 < argc) {
            load_from = argv[++i];
        } else if (rt_streq(a, "--trace")) {
            rt_cfg.trace = 1;
        } else if (rt_streq(a, "--strict")) {
            rt_cfg.strict = 1;
        } else if (rt_streq(a, "--seccomp-inherited")) {
            inherited = 1;
        } else {
            usage();
        }
    }
    if (i >= argc || (rt_cfg.view_host ? rt_cfg.bundle[0] != '/' : rt_cfg.bundle[0] != 0))
        usage();
    if (!have_fds && (!stage || (!rt_cfg.view_host && !lower)))
        usage();
    rt_cfg.bundle_len = rt_strlen(rt_cfg.bundle);
    while (rt_cfg.bundle_len > 1 && rt_cfg.bundle[rt_cfg.bundle_len - 1] == '/')
        rt_cfg.bundle[--rt_cfg.bundle_len] = 0;
    /* A --hooked main binary lives beside the tar, outside the view: open it first. */
    int preopened = -1;
    if (load_from) {
        preopened = (int)sys3(NR_open, load_from, O_RDONLY | O_CLOEXEC, 0);
        if (preopened < 0)
            die("cannot open", load_from, preopened);
    }
    if (!have_fds) {
        rt_view_open_fds(report);
        iptr r = rt_view_build(stage, lower, binds, rt_cfg.nbinds);
        if (r < 0 && !rt_cfg.view_host) {
            rt_say("user namespaces are not available here (unshare: errno %ld), and the LiteBox "
                   "view needs them: run with --host-fs to use the host's file system instead",
                   -r);
            rt_exit(1);
        }
        if (r < 0)
            rt_say("warning: user namespaces are not available here (unshare: errno %ld): the "
                   "guest's writes reach the host's file system",
                   -r);
    }
#ifdef __i386__
    rt_cfg.callback = (uptr)rt_callback_i386; /* one stub ABI on i386 (both --abi values) */
#else
    rt_cfg.callback = rt_cfg.abi_resume ? (uptr)rt_callback_resume : (uptr)rt_callback_redzone;
#endif
    rt_cfg.text_lo = (uptr)__executable_start;
    rt_cfg.text_hi = (uptr)etext;
    install_sigsys();

    /* The guest's argv: PATH is what to execute (also AT_EXECFN), the rest is argv as given.
     * A "#!" script turns into [interpreter, optional argument, PATH, argv[1:]...]. */
    const char *path = argv[i];
    const char *execfn = path;
    char **gargv = argv + i + 1;
    int gargc = argc - i - 1;
    int fd = -1;
    struct image prog, interp;
    for (int depth = 0;; depth++) {
        const char *host = rt_bundle_path(path, resolved);
        if (!host)
            host = path;
        fd = depth == 0 && preopened >= 0 ? preopened : (int)sys3(NR_open, host, O_RDONLY | O_CLOEXEC, 0);
        if (fd < 0)
            die("cannot open", path, fd);
        char head[256];
        iptr got = rt_pread(fd, head, sizeof head, 0);
        if (got < 0)
            die("cannot read", path, got);
        if (!parse_shebang(head, (size_t)got, script_interp, script_arg))
            break;
        if (depth == MAX_SCRIPT_DEPTH)
            die("too many levels of #! interpreters", path, -ELOOP);
        sys1(NR_close, fd);
        /* Build [interp, arg?, path, old argv[1:]] in fresh memory (argv may be long). */
        int extra = script_arg[0] ? 3 : 2;
        int rest = gargc > 1 ? gargc - 1 : 0;
        uptr bytes = PAGE_UP((uptr)(extra + rest + 1) * sizeof(char *) + 2 * RT_PATH_MAX);
        char **nv = (char **)rt_mmap(0, bytes, PROT_READ | PROT_WRITE,
                                  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (is_err((uptr)nv))
            die("out of memory", path, (iptr)nv);
        char *strs = (char *)(nv + extra + rest + 1);
        rt_strlcpy(strs, script_interp, RT_PATH_MAX);
        rt_strlcpy(strs + RT_PATH_MAX, script_arg, RT_PATH_MAX);
        int k = 0;
        nv[k++] = strs;
        if (script_arg[0])
            nv[k++] = strs + RT_PATH_MAX;
        nv[k++] = (char *)path;
        for (int j = 1; j < gargc; j++)
            nv[k++] = gargv[j];
        nv[k] = NULL;
        gargv = nv;
        gargc = k;
        path = strs;
    }
    if (rt_elf_facts(fd, &prog.f, NO_OFFSET, NULL) < 0)
        die("not an " ARCH_NAME " ELF executable", path, 0);
    if (prog.f.bad_trailer)
        die("invalid LITEBOX0 trailer", path, 0);
    remember_exe(fd, path);
    map_image(fd, path, &prog);
    uptr entry = prog.bias + prog.f.entry;
    uptr at_base = 0;
    if (prog.f.interp_len) {
        if (prog.f.interp_len >= RT_PATH_MAX ||
            rt_pread_full(fd, interp_path, prog.f.interp_len, prog.f.interp_off) != 0)
            die("bad PT_INTERP", path, 0);
        interp_path[prog.f.interp_len] = 0;
        const char *host = rt_bundle_path(interp_path, resolved);
        int ifd = open_image(interp_path, host ? host : interp_path, &interp);
        map_image(ifd, interp_path, &interp);
        sys1(NR_close, ifd);
        entry = interp.bias + interp.f.entry;
        at_base = interp.bias + interp.f.lo;
    }
    sys1(NR_close, fd);

    /* The initial stack, as the kernel lays it out: argc, argv, envp, auxv, then the strings. */
    int envc = (int)(e - envp);
    uptr strsz = rt_strlen(execfn) + 1 + sizeof ARCH_PLATFORM + 16;
    for (int k = 0; k < gargc; k++)
        strsz += rt_strlen(gargv[k]) + 1;
    for (int k = 0; k < envc; k++)
        strsz += rt_strlen(envp[k]) + 1;
    strsz = (strsz + 15) & ~15UL;
    uptr nwords = 1 + (uptr)gargc + 1 + (uptr)envc + 1 + 2 * 24;
    uptr total = strsz + nwords * sizeof(uptr) + 64;
    char *block = __builtin_alloca(total);
    uptr top = ((uptr)block + total) & ~15UL;
    char *s = (char *)(top - strsz);
    uptr *w = (uptr *)(((uptr)s - nwords * sizeof(uptr)) & ~15UL);
    uptr *sp0 = w;
    *w++ = (uptr)gargc;
    char *arg_start = s;
    for (int k = 0; k < gargc; k++) {
        *w++ = (uptr)s;
        size_t len = rt_strlen(gargv[k]) + 1;
        memcpy(s, gargv[k], len);
        s += len;
    }
    *w++ = 0;
    char *env_start = s;
    for (int k = 0; k < envc; k++) {
        *w++ = (uptr)s;
        size_t len = rt_strlen(envp[k]) + 1;
        memcpy(s, envp[k], len);
        s += len;
    }
    *w++ = 0;
    char *env_end = s;
    char *s_execfn = s;
    s += rt_strlcpy(s, execfn, RT_PATH_MAX) + 1;
    char *s_platform = s;
    memcpy(s, ARCH_PLATFORM, sizeof ARCH_PLATFORM);
    s += sizeof ARCH_PLATFORM;
    char *s_random = s;
    if (sys3(NR_getrandom, s_random, 16, 0) != 16 && host_auxv[AT_RANDOM])
        memcpy(s_random, (void *)host_auxv[AT_RANDOM], 16);
    uptr *auxv = w;
#define AUX(t, v) (*w++ = (uptr)(t), *w++ = (uptr)(v))
#ifdef __i386__
    /* The i386 "vsyscall" entry, where gs:[0x10] then points (see sysinfo_image). */
    AUX(AT_SYSINFO, rt_vsyscall);
    AUX(AT_SYSINFO_EHDR, sysinfo_image());
#endif
    AUX(AT_HWCAP, aux(AT_HWCAP, 0));
    AUX(AT_PAGESZ, PAGE);
    AUX(AT_CLKTCK, aux(AT_CLKTCK, 100));
    AUX(AT_PHDR, prog.bias + prog.f.phdr_vaddr);
    AUX(AT_PHENT, sizeof(struct phdr));
    AUX(AT_PHNUM, prog.f.phnum);
    AUX(AT_BASE, at_base);
    AUX(AT_FLAGS, 0);
    AUX(AT_ENTRY, prog.bias + prog.f.entry);
    AUX(AT_UID, host_auxv[AT_UID]);
    AUX(AT_EUID, host_auxv[AT_EUID]);
    AUX(AT_GID, host_auxv[AT_GID]);
    AUX(AT_EGID, host_auxv[AT_EGID]);
    AUX(AT_SECURE, host_auxv[AT_SECURE]);
    AUX(AT_RANDOM, s_random);
    AUX(AT_HWCAP2, aux(AT_HWCAP2, 0));
    AUX(AT_EXECFN, s_execfn);
    AUX(AT_PLATFORM, s_platform);
    if (host_auxv[AT_MINSIGSTKSZ])
        AUX(AT_MINSIGSTKSZ, host_auxv[AT_MINSIGSTKSZ]);
    AUX(AT_NULL, 0);
#undef AUX

    show_as(execfn, arg_start, env_start, env_end, auxv, (uptr)((char *)w - (char *)auxv));
    if (inherited)
        rt_cfg.filtered = 1;
    else
        install_filter();
    rt_enter_guest(entry, (uptr)sp0);
}
