/* run32_paths: the size of one file (argv[1]) as each i386 path syscall sees it: open, openat,
 * stat64, lstat64, fstatat64, statx, the old stat, access. Under the runtime an absolute path
 * the bundle holds must resolve to the bundle's copy every time; the test compares with that
 * copy's size (natively, with the host file's). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

struct old_kstat { /* struct stat for the i386 stat syscall (106) */
    unsigned short st_dev, pad1;
    unsigned long st_ino;
    unsigned short st_mode, st_nlink, st_uid, st_gid, st_rdev, pad2;
    unsigned long st_size, st_blksize, st_blocks, times[6], unused[2];
};

static long size_of_fd(int fd) {
    long n = fd < 0 ? -1 : (long)lseek(fd, 0, SEEK_END);
    if (fd >= 0)
        close(fd);
    return n;
}

int main(int argc, char **argv) {
    if (argc < 2)
        return 2;
    const char *p = argv[1];
    struct stat64 s64;
    struct old_kstat old;
    struct statx sx;
    printf("open %ld\n", size_of_fd((int)syscall(SYS_open, p, O_RDONLY)));
    printf("openat %ld\n", size_of_fd((int)syscall(SYS_openat, AT_FDCWD, p, O_RDONLY)));
    printf("stat64 %lld\n", syscall(SYS_stat64, p, &s64) == 0 ? (long long)s64.st_size : -1LL);
    printf("lstat64 %lld\n", syscall(SYS_lstat64, p, &s64) == 0 ? (long long)s64.st_size : -1LL);
    printf("fstatat64 %lld\n",
           syscall(SYS_fstatat64, AT_FDCWD, p, &s64, 0) == 0 ? (long long)s64.st_size : -1LL);
    printf("statx %lld\n", syscall(SYS_statx, AT_FDCWD, p, 0, STATX_SIZE, &sx) == 0
                               ? (long long)sx.stx_size
                               : -1LL);
    printf("stat %ld\n", syscall(SYS_stat, p, &old) == 0 ? (long)old.st_size : -1L);
    printf("access %ld\n", syscall(SYS_access, p, R_OK));
    return 0;
}
