/* The physical limit for an SFU on this machine: what one core can send on loopback.
 *
 *   sfu_limit MODE COUNT SIZE [SEGMENTS]   (built and run by benchmarks/sfu_limit.py)
 *
 * The parent sends COUNT datagrams of SIZE bytes with sendmmsg (batches of 64) from one
 * UDP socket to another on 127.0.0.1; a child process drains the receiving socket with
 * recvmmsg (batches of 64), so the sender pays for a real delivery, not for drops at a
 * full buffer. MODE "plain" sends as is; "srtp" first protects each datagram with
 * Debian's libsrtp2 (AES-128-GCM, as negotiated with Chromium), in place, as an SFU must
 * once per subscriber; "evp" protects it with the SFU's own SRTP (src/visavis/sfu/_srtp.c,
 * OpenSSL's EVP, one context per session). "srtp-only" and "evp-only" protect without
 * sending (the cipher's cost alone). "plain-gso" and "evp-gso" send SEGMENTS datagrams
 * (default 8) per message as one UDP_SEGMENT send, as the SFU does for a subscriber's run
 * of equal-sized datagrams. Prints one JSON line: the sending thread's CPU time (its own clock, so
 * other processes on the machine do not count), wall time, and the receiver's packets
 * and CPU time.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <signal.h>
#include <srtp2/srtp.h>

#include "_srtp.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 64
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif
#define BUF 2048

static double clock_of(clockid_t id) {
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void receiver(int fd, int out) {
    static unsigned char bufs[BATCH][BUF];
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        iovs[i].iov_base = bufs[i];
        iovs[i].iov_len = BUF;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    long long got = 0;
    for (;;) {
        int n = recvmmsg(fd, msgs, BATCH, MSG_WAITFORONE, NULL);
        if (n <= 0) continue;
        for (int i = 0; i < n; i++) {
            if (msgs[i].msg_len == 1) {
                char line[128];
                int len = snprintf(line, sizeof line, "%lld %.6f\n", got,
                                   clock_of(CLOCK_PROCESS_CPUTIME_ID));
                if (write(out, line, (size_t)len) < 0) _exit(1);
                _exit(0);
            }
            got++;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: %s plain|srtp|evp|srtp-only|evp-only|plain-gso|evp-gso COUNT SIZE [SEGMENTS]\n",
                argv[0]);
        return 2;
    }
    int segs = strstr(argv[1], "-gso") != NULL ? (argc == 5 ? atoi(argv[4]) : 8) : 1;
    if (segs < 1 || segs > BATCH || BATCH % segs) return 2;
    int use_srtp = strncmp(argv[1], "srtp", 4) == 0, use_evp = strncmp(argv[1], "evp", 3) == 0;
    int send = strstr(argv[1], "-only") == NULL;
    long long count = atoll(argv[2]);
    int size = atoi(argv[3]);
    if (size < 12 || size > BUF - 64) return 2;
    int rx = socket(AF_INET, SOCK_DGRAM, 0), tx = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof addr;
    int big = 8 << 20;
    setsockopt(rx, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    setsockopt(tx, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    if (bind(rx, (struct sockaddr *)&addr, sizeof addr) < 0 ||
        getsockname(rx, (struct sockaddr *)&addr, &alen) < 0)
        return 1;
    int pipefd[2];
    if (pipe(pipefd) < 0) return 1;
    pid_t child = fork();
    if (child == 0) {
        close(tx);
        close(pipefd[0]);
        receiver(rx, pipefd[1]);
    }
    close(pipefd[1]);

    srtp_t session = NULL;
    vv_srtp_t *evp = NULL;
    if (use_evp) {
        unsigned char key[28];
        int status;
        for (int i = 0; i < 28; i++) key[i] = (unsigned char)(i * 7 + 1);
        if ((evp = vv_srtp_create(VV_SRTP_PROFILE_AEAD_AES_128_GCM, key, &status)) == NULL) {
            fprintf(stderr, "vv_srtp_create failed (%d)\n", status);
            return 1;
        }
    }
    if (use_srtp) {
        srtp_init();
        srtp_policy_t policy;
        memset(&policy, 0, sizeof policy);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&policy.rtcp);
        unsigned char key[28];
        for (int i = 0; i < 28; i++) key[i] = (unsigned char)(i * 7 + 1);
        policy.key = key;
        policy.ssrc.type = ssrc_any_outbound;
        policy.window_size = 1024;
        policy.allow_repeat_tx = 1;
        if (srtp_create(&session, &policy) != srtp_err_status_ok) {
            fprintf(stderr, "srtp_create failed\n");
            return 1;
        }
    }
    static unsigned char bufs[BATCH][BUF];
    struct mmsghdr msgs[BATCH];
    struct iovec iovs[BATCH];
    static char ctl[BATCH][CMSG_SPACE(sizeof(uint16_t))];
    memset(msgs, 0, sizeof msgs);
    for (int i = 0; i < BATCH; i++) {
        memset(bufs[i], 0xAB, BUF);
        iovs[i].iov_base = bufs[i];
    }
    for (int m = 0; m < BATCH / segs; m++) { /* message m carries datagrams m*segs.. */
        struct msghdr *h = &msgs[m].msg_hdr;
        h->msg_name = &addr;
        h->msg_namelen = sizeof addr;
        h->msg_iov = &iovs[m * segs];
        h->msg_iovlen = (size_t)segs;
        if (segs > 1) {
            h->msg_control = ctl[m];
            h->msg_controllen = sizeof ctl[m];
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
        }
    }
    usleep(20000);
    double cpu0 = clock_of(CLOCK_THREAD_CPUTIME_ID), wall0 = clock_of(CLOCK_MONOTONIC);
    long long sent = 0, failed = 0;
    unsigned seq = 0;
    while (sent < count) {
        int n = count - sent < BATCH ? (int)(count - sent) : BATCH;
        for (int i = 0; i < n; i++) {
            unsigned char *p = bufs[i];
            int len = size;
            p[0] = 0x80;
            p[1] = 96;
            p[2] = (unsigned char)(seq >> 8);
            p[3] = (unsigned char)seq;
            memcpy(p + 8, "\x01\x02\x03\x04", 4);
            seq++;
            if (session != NULL && srtp_protect(session, p, &len) != srtp_err_status_ok) {
                fprintf(stderr, "srtp_protect failed\n");
                return 1;
            }
            if (evp != NULL && vv_srtp_protect(evp, p, &len) != VV_SRTP_OK) {
                fprintf(stderr, "vv_srtp_protect failed\n");
                return 1;
            }
            iovs[i].iov_len = (size_t)len;
        }
        int nm = (n + segs - 1) / segs; /* messages; every datagram has the same size */
        for (int m = 0; m < nm; m++) {
            msgs[m].msg_hdr.msg_iovlen = (size_t)(n - m * segs < segs ? n - m * segs : segs);
            if (segs > 1) {
                uint16_t seg = (uint16_t)iovs[0].iov_len;
                memcpy(CMSG_DATA(CMSG_FIRSTHDR(&msgs[m].msg_hdr)), &seg, sizeof seg);
            }
        }
        int done = send ? 0 : nm;
        while (done < nm) {
            int r = sendmmsg(tx, msgs + done, (unsigned)(nm - done), 0);
            if (r < 0) {
                failed += (long long)msgs[done].msg_hdr.msg_iovlen;
                done++;
                continue;
            }
            done += r;
        }
        sent += n;
    }
    double cpu = clock_of(CLOCK_THREAD_CPUTIME_ID) - cpu0, wall = clock_of(CLOCK_MONOTONIC) - wall0;
    usleep(50000);
    for (int i = 0; i < 50; i++) {
        sendto(tx, "x", 1, 0, (struct sockaddr *)&addr, sizeof addr);
        usleep(2000);
    }
    char line[128] = {0};
    long long got = 0;
    double rcpu = 0;
    if (read(pipefd[0], line, sizeof line - 1) > 0) sscanf(line, "%lld %lf", &got, &rcpu);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    printf("{\"mode\": \"%s\", \"size\": %d, \"sent\": %lld, \"send_errors\": %lld, "
           "\"sender_cpu_s\": %.6f, \"wall_s\": %.6f, \"received\": %lld, "
           "\"receiver_cpu_s\": %.6f}\n",
           argv[1], size, sent, failed, cpu, wall, got, rcpu);
    return 0;
}
