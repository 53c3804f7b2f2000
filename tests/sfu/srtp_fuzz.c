/* Random datagrams into every entry point of the SFU's SRTP (src/visavis/sfu/_srtp.c),
 * built with AddressSanitizer and UBSan by tests/sfu/test_srtp_asan.py: each packet sits
 * in a heap buffer of exactly its length (+ the trailer room protect needs), so any read
 * or write outside it aborts the run. Successful protects are unprotected again. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "_srtp.h"
int main(int argc, char **argv) {
    long iterations = argc > 1 ? atol(argv[1]) : 100000;
    srand(1);
    unsigned char key[30];
    for (int i = 0; i < 30; i++) key[i] = (unsigned char)rand();
    int profiles[2] = {VV_SRTP_PROFILE_AEAD_AES_128_GCM, VV_SRTP_PROFILE_AES128_CM_SHA1_80};
    long ok = 0;
    for (int pi = 0; pi < 2; pi++) {
        int st;
        vv_srtp_t *tx = vv_srtp_create(profiles[pi], key, &st);
        vv_srtp_t *rx = vv_srtp_create(profiles[pi], key, &st);
        if (tx == NULL || rx == NULL) return 1;
        for (long it = 0; it < iterations; it++) {
            int len = rand() % 80;
            unsigned char *p = malloc((size_t)len + VV_SRTP_MAX_TRAILER);
            for (int i = 0; i < len; i++) p[i] = (unsigned char)rand();
            if (len > 0 && rand() % 2) p[0] = (unsigned char)(0x80 | (rand() & 0x1F));
            if (len > 11 && rand() % 2) memset(p + 8, 0, 3);  /* few SSRCs: stream reuse */
            int n = len, op = rand() % 4;
            int rc = op == 0   ? vv_srtp_protect(tx, p, &n)
                     : op == 1 ? vv_srtp_protect_rtcp(tx, p, &n)
                     : op == 2 ? vv_srtp_unprotect(rx, p, &n)
                               : vv_srtp_unprotect_rtcp(rx, p, &n);
            if (rc == 0 && op < 2) {
                unsigned char *q = malloc((size_t)n);
                memcpy(q, p, (size_t)n);
                int m = n;
                rc = op == 0 ? vv_srtp_unprotect(rx, q, &m) : vv_srtp_unprotect_rtcp(rx, q, &m);
                if (rc == 0) ok++;
                free(q);
            }
            free(p);
        }
        vv_srtp_free(tx);
        vv_srtp_free(rx);
    }
    printf("%ld round trips\n", ok);
    return 0;
}
