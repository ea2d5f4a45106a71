/* run_view: what a guest can see and change of the file system under `litebox-pack run`.
 *   run_view writes BUNDLE_FILE     create files under /, /usr/lib, /etc and /tmp, make a
 *                                   directory, delete BUNDLE_FILE; print what each call said
 *   run_view exists PATH            "PATH: yes" or "PATH: no"
 *   run_view hidden PATH            try every way to reach PATH (a file the host has and the
 *                                   bundle lacks): each line must say "no"
 *   run_view lookups                look up paths the bundle lacks (absolute, via a dirfd,
 *                                   relative after chdir) and one nobody has
 *   run_view cat PATH               print PATH
 *   run_view write PATH TEXT        write TEXT to PATH
 * Exit status 0 unless an argument is wrong. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static void said(const char *what, const char *path, int ok) {
    printf("%s %s: %s\n", what, path, ok ? "ok" : strerror(errno));
}

static int writes(const char *bundle_file) {
    static const char *const paths[] = {"/litebox-probe", "/usr/lib/litebox-probe",
                                        "/etc/litebox-probe", "/tmp/litebox-probe"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        int fd = open(paths[i], O_CREAT | O_WRONLY | O_TRUNC, 0644);
        said("create", paths[i], fd >= 0);
        if (fd >= 0) {
            said("write", paths[i], write(fd, "changed\n", 8) == 8);
            close(fd);
        }
    }
    said("mkdir", "/etc/litebox-probe-dir", mkdir("/etc/litebox-probe-dir", 0755) == 0);
    said("mkdir", "/litebox-probe-dir", mkdir("/litebox-probe-dir", 0755) == 0);
    said("open for writing", "/etc/litebox-note", open("/etc/litebox-note", O_WRONLY) >= 0);
    said("unlink", bundle_file, unlink(bundle_file) == 0);
    struct stat st;
    printf("%s after unlink: %s\n", bundle_file, stat(bundle_file, &st) == 0 ? "yes" : "gone");
    return 0;
}

static int hidden(const char *path) {
    struct stat st;
    char buf[256];
    printf("open: %s\n", open(path, O_RDONLY) >= 0 ? "yes" : "no");
    printf("stat: %s\n", stat(path, &st) == 0 ? "yes" : "no");
    printf("lstat: %s\n", lstat(path, &st) == 0 ? "yes" : "no");
    printf("access: %s\n", access(path, F_OK) == 0 ? "yes" : "no");
    printf("readlink: %s\n", readlink(path, buf, sizeof buf) >= 0 || errno != ENOENT ? "yes" : "no");
    int root = open("/", O_RDONLY | O_DIRECTORY);
    printf("openat(/): %s\n", openat(root, path + 1, O_RDONLY) >= 0 ? "yes" : "no");
    snprintf(buf, sizeof buf, "/proc/self/root%s", path);
    printf("/proc/self/root: %s\n", open(buf, O_RDONLY) >= 0 ? "yes" : "no");
    printf("chdir / + relative: %s\n",
           chdir("/") == 0 && open(path + 1, O_RDONLY) >= 0 ? "yes" : "no");
    printf("execve: %s\n",
           (execl(path, path, (char *)NULL), errno != ENOENT) ? "yes" : "no");
    /* Every descriptor the process might hold, the runtime's own included, as a dirfd. */
    int reached = 0;
    for (int fd = 0; fd < 65536; fd++) {
        if (openat(fd, path + 1, O_RDONLY) >= 0 || fstatat(fd, path + 1, &st, 0) == 0)
            reached = 1;
        snprintf(buf, sizeof buf, "1/root%s", path);
        if (openat(fd, buf, O_RDONLY) >= 0)
            reached = 1;
    }
    printf("through any descriptor: %s\n", reached ? "yes" : "no");
    return 0;
}

static int lookups(void) {
    struct stat st;
    printf("%d\n", stat("/etc/os-release", &st));
    int root = open("/", O_RDONLY | O_DIRECTORY);
    printf("%d\n", fstatat(root, "usr/./share/../share/zoneinfo/UTC", &st, 0));
    chdir("/");
    printf("%d\n", access("etc/os-release", F_OK));
    printf("%d\n", stat("/no/such/path/anywhere", &st));
    return 0;
}

static int cat(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("%s: %s\n", path, strerror(errno));
        return 0;
    }
    int c;
    while ((c = fgetc(f)) != EOF)
        putchar(c);
    fclose(f);
    return 0;
}

int main(int argc, char **argv) {
    if (argc == 3 && strcmp(argv[1], "writes") == 0)
        return writes(argv[2]);
    if (argc == 3 && strcmp(argv[1], "exists") == 0) {
        struct stat st;
        printf("%s: %s\n", argv[2], stat(argv[2], &st) == 0 ? "yes" : "no");
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "hidden") == 0)
        return hidden(argv[2]);
    if (argc == 2 && strcmp(argv[1], "lookups") == 0)
        return lookups();
    if (argc == 3 && strcmp(argv[1], "cat") == 0)
        return cat(argv[2]);
    if (argc == 4 && strcmp(argv[1], "write") == 0) {
        FILE *f = fopen(argv[2], "w");
        said("write", argv[2], f && fputs(argv[3], f) >= 0 && fclose(f) == 0);
        return 0;
    }
    fprintf(stderr, "usage: run_view writes|exists|hidden|lookups|cat|write ...\n");
    return 2;
}
