/* run_syscall: libc's generic syscall() function. Its single syscall site serves every number,
 * with arguments shifted from the C calling convention (the sixth one from the stack). */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(void) {
    printf("getpid matches: %s\n", syscall(SYS_getpid) == getpid() ? "yes" : "no");
    printf("getppid matches: %s\n", syscall(SYS_getppid) == getppid() ? "yes" : "no");
    printf("gettid is pid: %s\n", syscall(SYS_gettid) == getpid() ? "yes" : "no");

    static const char msg[] = "written by syscall(SYS_write)\n";
    fflush(stdout);
    long n = syscall(SYS_write, 1, msg, sizeof msg - 1);
    printf("write returned %ld\n", n);

    /* Six arguments: mmap's offset travels on the stack into R9. */
    int fd = open("/proc/self/exe", O_RDONLY);
    void *p = (void *)syscall(SYS_mmap, NULL, 4096, PROT_READ, MAP_PRIVATE, fd, 0);
    printf("mmap of our own file: %s, starts with ELF magic: %s\n",
           p == MAP_FAILED ? "failed" : "ok",
           p != MAP_FAILED && memcmp(p, "\177ELF", 4) == 0 ? "yes" : "no");
    close(fd);

    long r = syscall(SYS_close, -1);
    printf("close(-1) = %ld, errno %s\n", r, errno == EBADF ? "EBADF" : strerror(errno));
    r = syscall(100000);
    printf("unknown syscall = %ld, errno %s\n", r, errno == ENOSYS ? "ENOSYS" : strerror(errno));
    return 0;
}
