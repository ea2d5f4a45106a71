/* hello.c for i386 (built with gcc -m32): one line on stdout, exit status = number of arguments.
 *
 * The greeting goes out through an `int $0x80` of the program's own, so the dynamic build has a
 * site in the main binary too (libc's sites are in libc.so.6). The static build brings a whole
 * i386 glibc: `call *%gs:0x10` sites, `int $0x80` sites, the `_dl_sysinfo_int80` fallback that
 * the rewriter must leave alone, and _exit's `mov %edx,%eax; int $0x80; jmp` loop (strategy c). */
#include <stdio.h>

static long raw_write(int fd, const void *buf, unsigned long len) {
    long ret;
    __asm__ volatile("int $0x80"
                     : "=a"(ret)
                     : "0"(4L), "b"(fd), "c"(buf), "d"(len)
                     : "memory");
    return ret;
}

int main(int argc, char **argv) {
    static const char greeting[] = "hello from litebox-pack";
    (void)argv;
    raw_write(1, greeting, sizeof greeting - 1);
    printf(" (argc=%d, i386)\n", argc);
    return argc - 1;
}
