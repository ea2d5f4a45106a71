/* The smallest real program: one line on stdout, exit status = number of arguments.
 *
 * The greeting goes out through a syscall instruction of the program's own (not libc's), so
 * every build has a site in the main binary: the dynamic build too, whose libc calls all happen
 * in libc.so.6. The rest of the line comes from printf, flushed at exit. Built static,
 * static-pie and dynamic, it is also the simplest program to compare with a native run. */
#include <stdio.h>

static long raw_write(int fd, const void *buf, unsigned long len) {
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "0"(1L), "D"(fd), "S"(buf), "d"(len)
                     : "rcx", "r11", "memory");
    return ret;
}

int main(int argc, char **argv) {
    static const char greeting[] = "hello from litebox-pack";
    (void)argv;
    raw_write(1, greeting, sizeof greeting - 1);
    printf(" (argc=%d)\n", argc);
    return argc - 1;
}
