/* run32_sigframe: i386 signal handlers installed without a restorer of their own. glibc leaves
 * that to the kernel's vDSO (when there is one); the runtime supplies its own restorer instead
 * and must hide it when the action is read back. Covers rt frames (SA_SIGINFO), old frames
 * (plain handlers and the raw signal() syscall), and unwinding out of a handler through the
 * signal frame with backtrace(), which recognises a restorer by its bytes. The unwound signal
 * interrupts the program's own code (a ud2), not a syscall: a signal taken on the way out of a
 * trampolined syscall interrupts the runtime, and no unwinder gets past that. */
#define _GNU_SOURCE
#include <execinfo.h>
#include <ucontext.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define SA_RESTORER_FLAG 0x04000000

static volatile int hits;
static int reached_fault;

__attribute__((noinline)) static void trigger(int sig) {
    raise(sig);
    __asm__ volatile("" ::: "memory"); /* keep the return address inside trigger */
}

__attribute__((noinline)) static void fault(void) {
    __asm__ volatile("ud2" ::: "memory"); /* SIGILL; the handler steps over it */
}

static void plain(int sig) { hits += sig; }

static void with_info(int sig, siginfo_t *si, void *uc) {
    (void)uc;
    hits += sig * 100 + (si->si_signo == sig);
}

static void on_ill(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    void *frames[32];
    int n = backtrace(frames, 32);
    for (int i = 0; i < n; i++)
        if ((char *)frames[i] >= (char *)fault && (char *)frames[i] < (char *)fault + 16)
            reached_fault = 1;
    ((ucontext_t *)uc)->uc_mcontext.gregs[REG_EIP] += 2;
}

int main(void) {
    void *warm[1];
    backtrace(warm, 1); /* loads libgcc_s before any handler runs */
    struct sigaction sa, old;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = with_info;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGUSR1, &sa, NULL);
    sigaction(SIGUSR1, NULL, &old);
    printf("SIGUSR1: siginfo %s, restorer flag shown %s\n",
           old.sa_flags & SA_SIGINFO ? "yes" : "no",
           old.sa_flags & SA_RESTORER_FLAG ? "yes" : "no");
    trigger(SIGUSR1);
    printf("after SIGUSR1: hits %d\n", hits);

    sa.sa_sigaction = on_ill;
    sigaction(SIGILL, &sa, NULL);
    fault();
    printf("after SIGILL: backtrace reached the interrupted function: %s\n",
           reached_fault ? "yes" : "no");

    sa.sa_handler = plain;
    sa.sa_flags = 0;
    sigaction(SIGUSR2, &sa, NULL);
    trigger(SIGUSR2);
    printf("after SIGUSR2 (old frame): hits %d\n", hits);

    /* The raw signal() syscall: one-shot, old frame, returns the previous handler. */
    long prev = syscall(SYS_signal, SIGHUP, plain);
    trigger(SIGHUP);
    long again = syscall(SYS_signal, SIGHUP, SIG_IGN);
    printf("signal(): previous %s, hits %d, reset to default after one delivery: %s\n",
           prev == (long)SIG_DFL ? "SIG_DFL" : "other", hits,
           again == (long)SIG_DFL ? "yes" : "no");
    return 0;
}
