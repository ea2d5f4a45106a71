/* elf.c: reading the few ELF facts the loader and the mmap hook need, and mapping a trampoline
 * blob. Runs in the loader and inside the callback, so it only uses pread/fstat/mmap and small
 * stack buffers. */
#include "rt.h"

/* Reads the LITEBOX0 trailer with the loader's rules (reference §1.5): the 32-byte form (u64
 * fields) in an ELF64, the 20-byte form (u32 fields) in an ELF32. */
static void read_trailer(int fd, const struct kstat *st, struct elf_facts *f) {
    u8 t[TRAILER_SIZE];
    f->blob_off = f->blob_vaddr = f->blob_size = 0;
    f->bad_trailer = 0;
    if (st->st_size < TRAILER_SIZE)
        return;
    u64 end = (u64)st->st_size - TRAILER_SIZE;
    if (rt_pread_full(fd, t, TRAILER_SIZE, end) != 0)
        return;
    if (memcmp(t, "LITEBOX", 7) != 0)
        return; /* an unpatched file */
    if (t[7] != '0') {
        f->bad_trailer = 1;
        return;
    }
    u64 off = 0, vaddr = 0, size = 0;
    const int w = (TRAILER_SIZE - 8) / 3; /* field width: 8 or 4 bytes (little-endian) */
    memcpy(&off, t + 8, w);
    memcpy(&vaddr, t + 8 + w, w);
    memcpy(&size, t + 8 + 2 * w, w);
    if (size == 0)
        return; /* header-only marker: nothing to map */
    if (off % PAGE || vaddr % PAGE || off + size != end || vaddr + size < vaddr ||
        vaddr + size > USER_ADDR_END) {
        f->bad_trailer = 1;
        return;
    }
    f->blob_off = off;
    f->blob_vaddr = (uptr)vaddr;
    f->blob_size = (uptr)size;
}

int rt_elf_facts(int fd, struct elf_facts *f, u64 seg_off_match, uptr *seg_vaddr) {
    struct ehdr eh;
    struct kstat st;
    memset(f, 0, sizeof *f);
    if (seg_vaddr)
        *seg_vaddr = NO_SEGMENT;
    /* Regular files only: reading a device or a socket may consume data (the mmap hook asks
     * about every file mapping). */
    if (rt_fstat(fd, &st) < 0)
        return -EBADF;
    if ((st.st_mode & S_IFMT) != S_IFREG)
        return (st.st_mode & S_IFMT) == S_IFDIR ? -EACCES : -ENOEXEC;
    int r = rt_pread_full(fd, &eh, sizeof eh, 0);
    if (r != 0)
        return r == -EISDIR ? -EACCES : -ENOEXEC;
    if (memcmp(eh.ident, "\177ELF", 4) != 0 || eh.ident[4] != ELF_CLASS || eh.ident[5] != 1 ||
        eh.machine != ELF_MACHINE || (eh.type != ET_EXEC && eh.type != ET_DYN) ||
        eh.phentsize != sizeof(struct phdr) || eh.phnum == 0 || eh.phnum > 1024)
        return -ENOEXEC;
    f->type = eh.type;
    f->entry = eh.entry;
    f->phoff = eh.phoff;
    f->phnum = eh.phnum;
    f->lo = ~(uptr)0;
    f->hi = 0;
    uptr phdr_from_load = 0;
    struct phdr ph[8];
    for (u16 i = 0; i < eh.phnum; i += 8) {
        u16 n = eh.phnum - i < 8 ? (u16)(eh.phnum - i) : 8;
        if (rt_pread_full(fd, ph, n * sizeof ph[0], eh.phoff + i * sizeof ph[0]) != 0)
            return -ENOEXEC;
        for (u16 k = 0; k < n; k++) {
            struct phdr *p = &ph[k];
            if (p->type == PT_LOAD) {
                if (p->filesz > p->memsz || p->vaddr + p->memsz < p->vaddr ||
                    (p->vaddr - p->offset) % PAGE)
                    return -ENOEXEC;
                if (PAGE_DOWN(p->vaddr) < f->lo)
                    f->lo = PAGE_DOWN(p->vaddr);
                if (PAGE_UP(p->vaddr + p->memsz) > f->hi)
                    f->hi = PAGE_UP(p->vaddr + p->memsz);
                if (seg_vaddr && *seg_vaddr == NO_SEGMENT && PAGE_DOWN(p->offset) == seg_off_match)
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

iptr rt_map_blob(int fd, const struct elf_facts *f, uptr bias, int fixed_flags) {
    uptr at = bias + f->blob_vaddr;
    uptr len = PAGE_UP(f->blob_size);
    uptr r = (uptr)rt_mmap(at, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | fixed_flags, fd,
                           f->blob_off);
    if (is_err(r))
        return (iptr)r;
    if (r != at) { /* a kernel that treats MAP_FIXED_NOREPLACE as a hint */
        sys2(NR_munmap, r, len);
        return -EEXIST;
    }
    *(volatile uptr *)at = rt_cfg.callback; /* the slot: 8 bytes on x86-64, 4 on i386 */
    iptr p = sys3(NR_mprotect, at, len, PROT_READ | PROT_EXEC);
    return p < 0 ? p : (iptr)at;
}
