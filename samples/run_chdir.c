/* run_chdir: chdir(argv[1]), print getcwd(), then print the file argv[2] opened by a relative
 * path. Under `run`, a directory only the bundle has (an image's WORKDIR) must work as the
 * working directory, getcwd must name it as the guest knows it, and a relative path must find
 * bundle files from there and from host directories alike. */
#include <stdio.h>
#include <unistd.h>
#include <string.h>
int main(int argc, char **argv) {
    char buf[4096];
    if (chdir(argv[1]) != 0) { perror("chdir"); return 1; }
    if (!getcwd(buf, sizeof buf)) { perror("getcwd"); return 1; }
    printf("cwd=%s\n", buf);
    FILE *f = fopen(argv[2], "r");
    if (!f) { perror("fopen"); return 1; }
    char line[256];
    while (fgets(line, sizeof line, f)) fputs(line, stdout);
    return 0;
}
