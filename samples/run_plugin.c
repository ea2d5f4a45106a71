/* run_plugin: the plugin run_dlopen loads. It issues a syscall instruction of its own (a raw
 * write), so the rewriter gives it a trampoline of its own. */
#include <stddef.h>

static long raw_write(int fd, const void *buf, size_t n) {
    long ret;
    __asm__ volatile("syscall"
                     : "=a"(ret)
                     : "a"(1L), "D"((long)fd), "S"(buf), "d"(n)
                     : "rcx", "r11", "memory");
    return ret;
}

long plugin_hello(int round) {
    static const char msg[] = "plugin: hello through a raw syscall\n";
    long n = raw_write(1, msg, sizeof msg - 1);
    return n * 100 + round;
}
