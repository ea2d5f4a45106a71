/* run_dlopen: dlopen a plugin (path in argv[1]) twice, with a dlclose in between. ld.so maps
 * the plugin long after start-up, so its trampoline comes from the runtime's mmap hook. */
#include <dlfcn.h>
#include <stdio.h>

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s PLUGIN.so\n", argv[0]);
        return 2;
    }
    for (int round = 1; round <= 2; round++) {
        void *h = dlopen(argv[1], RTLD_NOW);
        if (!h) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 1;
        }
        long (*hello)(int) = (long (*)(int))dlsym(h, "plugin_hello");
        if (!hello) {
            fprintf(stderr, "dlsym: %s\n", dlerror());
            return 1;
        }
        fflush(stdout);
        long r = hello(round);
        printf("round %d: plugin returned %ld\n", round, r);
        dlclose(h);
    }
    return 0;
}
