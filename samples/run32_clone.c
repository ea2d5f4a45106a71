/* run32_clone: the i386 clone family, whose argument order differs from x86-64's (i386:
 * flags, newsp, parent_tid, tls, child_tid). glibc's clone() with a stack of our own (the child
 * pops its function from that stack, so it must start exactly there), CLONE_PARENT_SETTID and
 * CLONE_CHILD_SETTID (each tid must land where its argument says), a raw fork-like clone with
 * no stack, vfork, and the old mmap call (one pointer to six arguments). */
#define _GNU_SOURCE
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile int shared;

static int child_fn(void *arg) {
    shared = *(int *)arg * 2;
    return 5;
}

int main(void) {
    enum { STACK = 64 * 1024 };
    char *stack = malloc(STACK);
    int arg = 21;
    pid_t ptid = 0, ctid = 0;
    int flags = CLONE_VM | CLONE_PARENT_SETTID | CLONE_CHILD_SETTID | SIGCHLD;
    pid_t pid = clone(child_fn, stack + STACK, flags, &arg, &ptid, NULL, &ctid);
    int st = 0;
    waitpid(pid, &st, 0);
    printf("clone(): child shared memory %d, status %d, parent_tid %s, child_tid %s\n", shared,
           WEXITSTATUS(st), ptid == pid ? "right" : "wrong", ctid == pid ? "right" : "wrong");

    long r = syscall(SYS_clone, SIGCHLD, 0, NULL, NULL, NULL); /* like fork */
    if (r == 0)
        _exit(6);
    waitpid((pid_t)r, &st, 0);
    printf("raw clone without a stack: status %d\n", WEXITSTATUS(st));

    pid = vfork();
    if (pid == 0)
        _exit(7);
    waitpid(pid, &st, 0);
    printf("vfork: status %d\n", WEXITSTATUS(st));

    unsigned long args[6] = {0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                             (unsigned long)-1, 0};
    long m = syscall(SYS_mmap, args); /* i386: old_mmap */
    int ok = m != -1;
    if (ok) {
        ((char *)m)[8191] = 'x';
        ok = ((char *)m)[8191] == 'x' && munmap((void *)m, 8192) == 0;
    }
    printf("old mmap: %s\n", ok ? "ok" : "failed");
    return 0;
}
