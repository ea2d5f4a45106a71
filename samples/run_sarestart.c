/* run_sarestart: a blocking read interrupted by a timer signal.
 *
 * With SA_RESTART the kernel restarts the read inside the runtime's callback, so the program
 * sees one successful read; without it the read fails with EINTR. To keep the output
 * deterministic the data is only sent after the handler ran: the handler pokes a helper
 * process, which then writes to the pipe the main program is blocked on (and a timer that
 * fires before the read began is simply armed again). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t handled, reading;
static int poke_fd;

static void arm(void) {
    struct itimerval t = {{0, 0}, {0, 20000}}; /* once, after 20 ms */
    setitimer(ITIMER_REAL, &t, NULL);
}

static void on_alarm(int sig) {
    (void)sig;
    if (!reading) { /* fired before the read began (a busy machine): try again later */
        arm();
        return;
    }
    handled++;
    char c = 'x';
    if (write(poke_fd, &c, 1) != 1)
        _exit(2);
}

static int round_trip(int restart) {
    int data[2], poke[2];
    if (pipe(data) || pipe(poke))
        return 1;
    pid_t helper = fork();
    if (helper == 0) { /* waits for the poke, then sends the data */
        char c;
        close(data[0]);
        close(poke[1]);
        if (read(poke[0], &c, 1) == 1 && write(data[1], "data", 4) == 4)
            _exit(0);
        _exit(1);
    }
    close(data[1]);
    close(poke[0]);
    poke_fd = poke[1];
    handled = 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigaction(SIGALRM, &sa, NULL);
    arm();

    char buf[16] = {0};
    reading = 1;
    ssize_t n = read(data[0], buf, sizeof buf - 1);
    int err = errno;
    if (n < 0 && err == EINTR) { /* without SA_RESTART: the data is still coming */
        printf("%s: read failed with EINTR after %d signal(s)\n", restart ? "SA_RESTART" : "plain",
               (int)handled);
        n = read(data[0], buf, sizeof buf - 1);
    } else {
        printf("%s: read returned without EINTR after %d signal(s)\n",
               restart ? "SA_RESTART" : "plain", (int)handled);
    }
    printf("%s: got %zd bytes: %s\n", restart ? "SA_RESTART" : "plain", n, n > 0 ? buf : "-");
    reading = 0;
    int status;
    waitpid(helper, &status, 0);
    close(data[0]);
    close(poke[1]);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    int rc = round_trip(1);
    rc |= round_trip(0);
    return rc;
}
