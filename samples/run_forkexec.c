/* run_forkexec: fork + execve + wait, and posix_spawn (a CLONE_VM|CLONE_VFORK child on its own
 * stack), each running this same program again in "child" mode. Under the runtime every new
 * image must be loaded with its trampolines again; exit statuses travel back through wait. */
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int child(const char *how) {
    printf("child (%s): pid differs from parent: %s\n", how,
           getppid() != getpid() ? "yes" : "no");
    fflush(stdout);
    return strcmp(how, "fork") == 0 ? 7 : 9;
}

int main(int argc, char **argv) {
    if (argc > 2 && strcmp(argv[1], "child") == 0)
        return child(argv[2]);
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return 1;
    }
    if (pid == 0) {
        char *args[] = {argv[0], "child", "fork", NULL};
        execv(argv[0], args);
        perror("execv");
        _exit(127);
    }
    int status;
    if (waitpid(pid, &status, 0) != pid)
        perror("waitpid");
    printf("fork child exited with %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);

    char *args[] = {argv[0], "child", "spawn", NULL};
    int err = posix_spawn(&pid, argv[0], NULL, NULL, args, environ);
    if (err) {
        printf("posix_spawn failed: %s\n", strerror(err));
        return 1;
    }
    waitpid(pid, &status, 0);
    printf("spawned child exited with %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);

    /* A failing exec must come back as an error, not as a dead child. */
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        char *none[] = {"/nonexistent/program", NULL};
        execv(none[0], none);
        printf("exec of a missing program failed as expected\n");
        fflush(stdout);
        _exit(3);
    }
    waitpid(pid, &status, 0);
    printf("third child exited with %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
}
