/* A shared library with real code and not one syscall instruction: the rewriter must answer with
 * the header-only marker ("checked, nothing to patch"), not with a trampoline. */
#include <stddef.h>
#include <stdint.h>

/* Bitwise CRC-32 (IEEE), kept table-free so the library has loops and branches but no data. */
uint32_t nosys_crc32(const unsigned char *p, size_t n) {
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int k = 0; k < 8; k++)
            crc = (crc >> 1) ^ (0xEDB88320u & -(crc & 1u));
    }
    return ~crc;
}

uint64_t nosys_fib(unsigned n) {
    uint64_t a = 0, b = 1;
    while (n--) {
        uint64_t t = a + b;
        a = b;
        b = t;
    }
    return a;
}
