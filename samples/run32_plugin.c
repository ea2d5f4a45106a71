/* run32_plugin: the i386 plugin run_dlopen (built with gcc -m32) loads: run_plugin.c's
 * counterpart. It issues an `int $0x80` of its own (a raw write), so the rewriter gives it a
 * trampoline of its own, which the runtime maps when ld.so maps the plugin (mmap2). */
#include <stddef.h>

static long raw_write(int fd, const void *buf, size_t n) {
    long ret;
    __asm__ volatile("int $0x80" : "=a"(ret) : "0"(4L), "b"(fd), "c"(buf), "d"(n) : "memory");
    return ret;
}

long plugin_hello(int round) {
    static const char msg[] = "plugin (i386): hello through a raw int $0x80\n";
    long n = raw_write(1, msg, sizeof msg - 1);
    return n * 100 + round;
}
