/* run32_proc: what an i386 program learns about itself from the kernel: /proc/self/exe, comm
 * and cmdline, and the auxiliary vector entries a program may read (page size, platform,
 * AT_EXECFN, whether a vDSO entry is there). Under the runtime all of it must read as it does
 * natively, although the process is the runtime's. */
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/auxv.h>
#include <unistd.h>

static void show_file(const char *path) {
    char buf[4096];
    FILE *f = fopen(path, "rb");
    size_t n = f ? fread(buf, 1, sizeof buf, f) : 0;
    if (f)
        fclose(f);
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\0')
            buf[i] = ' ';
    printf("%s: %.*s\n", path, (int)n, buf);
}

int main(int argc, char **argv) {
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    exe[n > 0 ? n : 0] = '\0';
    printf("exe is argv[0]: %s\n", strcmp(exe, argv[0]) == 0 ? "yes" : exe);
    show_file("/proc/self/comm");
    show_file("/proc/self/cmdline");
    printf("argc %d, page size %lu, platform %s\n", argc, getauxval(AT_PAGESZ),
           (const char *)getauxval(AT_PLATFORM));
    printf("execfn is argv[0]: %s\n",
           strcmp((const char *)getauxval(AT_EXECFN), argv[0]) == 0 ? "yes" : "no");
    printf("sysinfo entry given: %s\n", getauxval(AT_SYSINFO) ? "yes" : "no");
    return 0;
}
