/* ECDSA P-256 sign + verify in a loop with the system's libcrypto.
 * Usage: ecdsa_p256 [ROUNDS]   Prints "failures F of N"; exit status 0 only when F == 0.
 * With libcrypto's P-256 precomputed table corrupted (a 0F 05 pair in it patched as a
 * syscall), a few percent of the signatures fail to verify. */
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>

static int round_ok(EVP_PKEY *key, int i) {
    unsigned char msg[32], sig[128];
    size_t siglen = sizeof sig;
    for (int k = 0; k < 32; k++) msg[k] = (unsigned char)(i * 31 + k);
    EVP_MD_CTX *s = EVP_MD_CTX_new(), *v = EVP_MD_CTX_new();
    int ok = s && v && EVP_DigestSignInit(s, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestSign(s, sig, &siglen, msg, sizeof msg) == 1 &&
             EVP_DigestVerifyInit(v, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerify(v, sig, siglen, msg, sizeof msg) == 1;
    EVP_MD_CTX_free(s);
    EVP_MD_CTX_free(v);
    return ok;
}

int main(int argc, char **argv) {
    int rounds = argc > 1 ? atoi(argv[1]) : 1000;
    EVP_PKEY *key = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (!key) {
        fprintf(stderr, "keygen failed\n");
        return 2;
    }
    int failures = 0;
    for (int i = 0; i < rounds; i++) failures += !round_ok(key, i);
    EVP_PKEY_free(key);
    printf("failures %d of %d\n", failures, rounds);
    return failures != 0;
}
