/* elf.c: reading the few ELF facts the loader and the mmap hook need, and mapping a trampoline
 * blob. Runs in the loader and inside the callback, so it only uses pread/fstat/mmap and small
 * stack buffers. */
#include "rt.h"

#define TRAILER_SIZE 32

struct ehdr64 {
    u8 ident[16];
    u16 type, machine;
    u32 version;
    u64 entry, phoff, shoff;
    u32 flags;
    u16 ehsize, phentsize, phnum, shentsize, shnum, shstrndx;
};

/* Reads the LITEBOX0 trailer with the loader's rules (reference §1.5). */
static void read_trailer(int fd, const struct kstat *st, struct elf_facts *f) {
    u8 t[TRAILER_SIZE];
    f->blob_off = f->blob_vaddr = f->blob_size = 0;
    f->bad_trailer = 0;
    if (st->st_size < TRAILER_SIZE)
        return;
    if (rt_pread_full(fd, t, TRAILER_SIZE, (u64)st->st_size - TRAILER_SIZE) != 0)
        return;
    if (memcmp(t, "LITEBOX", 7) != 0)
        return; /* an unpatched file */
    if (t[7] != '0') {
        f->bad_trailer = 1;
        return;
    }
    u64 off, vaddr, size;
    memcpy(&off, t + 8, 8);
    memcpy(&vaddr, t + 16, 8);
    memcpy(&size, t + 24, 8);
    if (size == 0)
        return; /* header-only marker: nothing to map */
    if (off % PAGE || vaddr % PAGE || off + size != (u64)st->st_size - TRAILER_SIZE ||
        vaddr + size < vaddr || vaddr + size > (1UL << 47)) {
        f->bad_trailer = 1;
        return;
    }
    f->blob_off = off;
    f->blob_vaddr = vaddr;
    f->blob_size = size;
}

int rt_elf_facts(int fd, struct elf_facts *f, u64 seg_off_match, u64 *seg_vaddr) {
    struct ehdr64 eh;
    struct kstat st;
    memset(f, 0, sizeof *f);
    if (seg_vaddr)
        *seg_vaddr = ~0UL;
    /* Regular files only: reading a device or a socket may consume data (the mmap hook asks
     * about every file mapping). */
    if (sys2(NR_fstat, fd, &st) < 0)
        return -EBADF;
    if ((st.st_mode & S_IFMT) != S_IFREG)
        return (st.st_mode & S_IFMT) == S_IFDIR ? -EACCES : -ENOEXEC;
    int r = rt_pread_full(fd, &eh, sizeof eh, 0);
    if (r != 0)
        return r == -EISDIR ? -EACCES : -ENOEXEC;
    if (memcmp(eh.ident, "\177ELF", 4) != 0 || eh.ident[4] != 2 || eh.ident[5] != 1 ||
        eh.machine != 62 || (eh.type != ET_EXEC && eh.type != ET_DYN) ||
        eh.phentsize != sizeof(struct phdr64) || eh.phnum == 0 || eh.phnum > 1024)
        return -ENOEXEC;
    f->type = eh.type;
    f->entry = eh.entry;
    f->phoff = eh.phoff;
    f->phnum = eh.phnum;
    f->lo = ~0UL;
    f->hi = 0;
    u64 phdr_from_load = 0;
    struct phdr64 ph[8];
    for (u16 i = 0; i < eh.phnum; i += 8) {
        u16 n = eh.phnum - i < 8 ? (u16)(eh.phnum - i) : 8;
        if (rt_pread_full(fd, ph, n * sizeof ph[0], eh.phoff + i * sizeof ph[0]) != 0)
            return -ENOEXEC;
        for (u16 k = 0; k < n; k++) {
            struct phdr64 *p = &ph[k];
            if (p->type == PT_LOAD) {
                if (p->filesz > p->memsz || p->vaddr + p->memsz < p->vaddr ||
                    (p->vaddr - p->offset) % PAGE)
                    return -ENOEXEC;
                if (PAGE_DOWN(p->vaddr) < f->lo)
                    f->lo = PAGE_DOWN(p->vaddr);
                if (PAGE_UP(p->vaddr + p->memsz) > f->hi)
                    f->hi = PAGE_UP(p->vaddr + p->memsz);
                if (seg_vaddr && *seg_vaddr == ~0UL && PAGE_DOWN(p->offset) == seg_off_match)
                    *seg_vaddr = PAGE_DOWN(p->vaddr);
                if (!phdr_from_load && p->offset <= eh.phoff && eh.phoff < p->offset + p->filesz)
                    phdr_from_load = p->vaddr + (eh.phoff - p->offset);
            } else if (p->type == PT_PHDR) {
                f->phdr_vaddr = p->vaddr;
            } else if (p->type == PT_INTERP) {
                f->interp_off = p->offset;
                f->interp_len = p->filesz;
            }
        }
    }
    if (f->hi == 0)
        return -ENOEXEC;
    if (!f->phdr_vaddr)
        f->phdr_vaddr = phdr_from_load;
    read_trailer(fd, &st, f);
    return 0;
}

i64 rt_map_blob(int fd, const struct elf_facts *f, u64 bias, int fixed_flags) {
    u64 at = bias + f->blob_vaddr;
    u64 len = PAGE_UP(f->blob_size);
    u64 r = (u64)sys6(NR_mmap, (i64)at, (i64)len, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | fixed_flags, fd, (i64)f->blob_off);
    if (is_err(r))
        return (i64)r;
    if (r != at) { /* a kernel that treats MAP_FIXED_NOREPLACE as a hint */
        sys2(NR_munmap, r, len);
        return -EEXIST;
    }
    *(volatile u64 *)at = rt_cfg.callback;
    i64 p = sys3(NR_mprotect, at, len, PROT_READ | PROT_EXEC);
    return p < 0 ? p : (i64)at;
}
