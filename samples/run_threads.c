/* run_threads: pthreads under the runtime. Each thread is a clone3 child starting on its own
 * stack (the runtime must hand it the guest's registers there), does syscalls of its own and
 * meets the others at a barrier (futex). The output does not depend on scheduling. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define THREADS 4

static pthread_barrier_t barrier;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static long total;

struct job {
    int index;
    long sum;
    int own_tid; /* the thread saw a tid different from the main thread's */
};

static void *work(void *arg) {
    struct job *j = arg;
    pid_t main_pid = getpid();
    j->own_tid = syscall(SYS_gettid) != main_pid;
    for (int i = 1; i <= 1000 * (j->index + 1); i++)
        j->sum += i;
    pthread_barrier_wait(&barrier);
    for (int i = 0; i < 100; i++) { /* contended lock: futex wait/wake through trampolines */
        pthread_mutex_lock(&lock);
        total += j->index;
        pthread_mutex_unlock(&lock);
        sched_yield();
    }
    return j;
}

int main(void) {
    pthread_t t[THREADS];
    struct job jobs[THREADS];
    pthread_barrier_init(&barrier, NULL, THREADS);
    for (int i = 0; i < THREADS; i++) {
        memset(&jobs[i], 0, sizeof jobs[i]);
        jobs[i].index = i;
        if (pthread_create(&t[i], NULL, work, &jobs[i]) != 0) {
            perror("pthread_create");
            return 1;
        }
    }
    for (int i = 0; i < THREADS; i++) {
        void *ret;
        pthread_join(t[i], &ret);
        struct job *j = ret;
        printf("thread %d: sum %ld, own tid %s\n", j->index, j->sum, j->own_tid ? "yes" : "no");
    }
    printf("total %ld\n", total);
    return 0;
}
