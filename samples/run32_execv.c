/* run32_execv: execv(argv[1], argv + 1), reporting a failure. Lets a test exec any program from
 * an i386 one (the runtime can exec i386 programs only; the other x86 ABI fails with ENOEXEC). */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    execv(argv[1], argv + 1);
    printf("execv %s: %s\n", argv[1], strerror(errno));
    return 3;
}
