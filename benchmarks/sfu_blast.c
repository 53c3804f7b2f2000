/* The SFU benchmarks' traffic loop in C (built and driven by benchmarks/sfu_load.py).
 *
 * The Python load generator does the control plane (join, offer/answer, ICE check, DTLS)
 * and then hands this program its sockets (inherited file descriptors) and SRTP keys on
 * stdin; this program sends every stream on schedule (SRTP with libsrtp2), drains every
 * socket with recvmmsg, counts the RTP packets that reach the subscribers, samples the
 * forwarding latency (1 in N packets decrypted; the send time is the payload's last 8
 * bytes, CLOCK_MONOTONIC of this same process) both when this program reads the packet
 * ("p50"...) and when the kernel queued it on the subscriber's socket (SO_TIMESTAMPNS,
 * "arrival_p50"...: on loopback that is the server's send, without this program's own
 * wait for a core), reads the server's CPU time from
 * /proc/PID/stat at the start and end of the measurement window, and prints one JSON
 * line. A Python generator cannot send 12,000 and receive 100,000 packets/s on a shared
 * 2-core machine; this one spends about 2 µs per packet.
 *
 * STUN binding requests that arrive (Janus's checks) go to a Unix datagram socket
 * (`U fd`) as [socket id:2][IPv4:4][port:2][datagram] for Python to answer.
 *
 * stdin, one item per line:
 *   C <server pid> <warmup s> <seconds> <sample N> <keyframe every s>
 *   U <fd>
 *   K <id> <fd> <profile> <rx key hex or ->          a socket to drain
 *   T <id> <sock id> <profile> <tx key hex> <ip> <port>   a sender (SRTP context)
 *   S <sender id> <ssrc> <pt> <a|v> <ext2 byte> <ext2 value> <size> <period s> <start s>
 *   G                                                 go
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <srtp2/srtp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAXS 512
#define BATCH 64
#define BUF 2048

typedef struct {
    int fd;
    srtp_t rx;
} Sock;

typedef struct {
    int sock;
    srtp_t tx;
    struct sockaddr_in to;
} Sender;

typedef struct {
    int sender;
    uint32_t ssrc;
    int pt, video, ext2, ext2val, size;
    double period, due, last_key;
    uint16_t seq;
} Stream;

static Sock socks[MAXS];
static Sender senders[MAXS];
static Stream streams[MAXS * 4];
static int nsocks, nsenders, nstreams, ufd = -1;

static double mono(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double proc_cpu(int pid) {
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (f == NULL) return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (p == NULL) return 0;
    unsigned long utime = 0, stime = 0;
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt
     * utime(14) stime(15) */
    sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &utime, &stime);
    return (double)(utime + stime) / (double)sysconf(_SC_CLK_TCK);
}

static int hexkey(const char *hex, unsigned char *out, int max) {
    int n = (int)strlen(hex) / 2;
    if (n > max) return -1;
    for (int i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &out[i]);
    return n;
}

static srtp_t session(int profile, const char *hex, int outbound) {
    if (strcmp(hex, "-") == 0) return NULL;
    unsigned char key[64];
    if (hexkey(hex, key, sizeof key) < 0) return NULL;
    srtp_policy_t policy;
    memset(&policy, 0, sizeof policy);
    srtp_crypto_policy_set_from_profile_for_rtp(&policy.rtp, (srtp_profile_t)profile);
    srtp_crypto_policy_set_from_profile_for_rtcp(&policy.rtcp, (srtp_profile_t)profile);
    policy.key = key;
    policy.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    policy.window_size = 1024;
    srtp_t s = NULL;
    if (srtp_create(&s, &policy) != srtp_err_status_ok) {
        fprintf(stderr, "srtp_create failed\n");
        exit(1);
    }
    return s;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static const unsigned char VP8_KEY[] = {0x10, 0x10, 0x00, 0x00, 0x9D, 0x01,
                                        0x2A, 0x40, 0x01, 0xF0, 0x00};
static const unsigned char VP8_DELTA[] = {0x10, 0x11, 0x00, 0x00};

static void send_stream(Stream *st, double now, int keyframe, long long *sent) {
    unsigned char p[BUF + 64];
    Sender *sd = &senders[st->sender];
    p[0] = 0x90;
    p[1] = (unsigned char)(0x80 | st->pt);
    p[2] = (unsigned char)(st->seq >> 8);
    p[3] = (unsigned char)st->seq;
    st->seq++;
    uint32_t ts = (uint32_t)((unsigned long long)(now * (st->video ? 90000.0 : 48000.0)));
    uint32_t nts = htonl(ts), nssrc = htonl(st->ssrc);
    memcpy(p + 4, &nts, 4);
    memcpy(p + 8, &nssrc, 4);
    unsigned char ext[8] = {0xBE, 0xDE, 0, 1, 0x10, (unsigned char)(st->video ? '1' : '0'),
                            (unsigned char)st->ext2, (unsigned char)st->ext2val};
    memcpy(p + 12, ext, 8);
    int len = 20;
    int body = st->size;
    if (body < 8) body = 8;
    memset(p + len, 0, (size_t)body);
    if (st->video) {
        const unsigned char *h = keyframe ? VP8_KEY : VP8_DELTA;
        size_t hl = keyframe ? sizeof VP8_KEY : sizeof VP8_DELTA;
        if ((size_t)body >= hl + 8) memcpy(p + len, h, hl);
    }
    /* The send time, read now: a loop iteration sends many streams, and this program can
     * be preempted between them (beside a CPU-bound neighbour for milliseconds), which
     * must not count as the server's latency. */
    double sent_at = mono();
    memcpy(p + len + body - 8, &sent_at, 8);
    len += body;
    if (srtp_protect(sd->tx, p, &len) != srtp_err_status_ok) return;
    if (sendto(socks[sd->sock].fd, p, (size_t)len, MSG_DONTWAIT, (struct sockaddr *)&sd->to,
               sizeof sd->to) >= 0)
        (*sent)++;
}

int main(void) {
    srtp_init();
    int pid = 0, sample = 20;
    double warmup = 3, seconds = 8, key_every = 1;
    char line[512];
    while (fgets(line, sizeof line, stdin)) {
        char kind = line[0];
        if (kind == 'C') {
            sscanf(line + 2, "%d %lf %lf %d %lf", &pid, &warmup, &seconds, &sample, &key_every);
        } else if (kind == 'U') {
            sscanf(line + 2, "%d", &ufd);
        } else if (kind == 'K' && nsocks < MAXS) {
            int id, fd, profile;
            char hex[160];
            sscanf(line + 2, "%d %d %d %159s", &id, &fd, &profile, hex);
            socks[id].fd = fd;
            socks[id].rx = session(profile, hex, 0);
            int on = 1;
            setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof on);
            if (id + 1 > nsocks) nsocks = id + 1;
        } else if (kind == 'T' && nsenders < MAXS) {
            int id, sock, profile, port;
            char hex[160], ip[64];
            sscanf(line + 2, "%d %d %d %159s %63s %d", &id, &sock, &profile, hex, ip, &port);
            senders[id].sock = sock;
            senders[id].tx = session(profile, hex, 1);
            senders[id].to.sin_family = AF_INET;
            senders[id].to.sin_port = htons((uint16_t)port);
            inet_pton(AF_INET, ip, &senders[id].to.sin_addr);
            if (id + 1 > nsenders) nsenders = id + 1;
        } else if (kind == 'S' && nstreams < MAXS * 4) {
            Stream *st = &streams[nstreams++];
            char av;
            double start;
            unsigned ssrc;
            sscanf(line + 2, "%d %u %d %c %d %d %d %lf %lf", &st->sender, &ssrc, &st->pt, &av,
                   &st->ext2, &st->ext2val, &st->size, &st->period, &start);
            st->ssrc = ssrc;
            st->video = av == 'v';
            st->due = start;
            st->last_key = -1e9;
            st->seq = (uint16_t)(ssrc & 0x7FFF);
        } else if (kind == 'G') {
            break;
        }
    }
    static unsigned char bufs[BATCH][BUF];
    static struct mmsghdr msgs[BATCH];
    static struct iovec iovs[BATCH];
    static struct sockaddr_in addrs[BATCH];
    static char ctls[BATCH][CMSG_SPACE(sizeof(struct timespec))];
    for (int i = 0; i < BATCH; i++) {
        msgs[i].msg_hdr.msg_control = ctls[i];
        iovs[i].iov_base = bufs[i];
        iovs[i].iov_len = BUF;
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = &addrs[i];
    }
    struct pollfd *pfds = calloc((size_t)nsocks, sizeof *pfds);
    for (int i = 0; i < nsocks; i++) {
        pfds[i].fd = socks[i].fd;
        pfds[i].events = POLLIN;
    }
    size_t lcap = 1 << 20, nlat = 0;
    double *lat = malloc(lcap * sizeof *lat), *alat = malloc(lcap * sizeof *alat);
    size_t nalat = 0;
    struct timespec rt0, mt0; /* kernel timestamps are CLOCK_REALTIME: the offset once */
    clock_gettime(CLOCK_REALTIME, &rt0);
    clock_gettime(CLOCK_MONOTONIC, &mt0);
    long long offset_ns = ((long long)rt0.tv_sec - mt0.tv_sec) * 1000000000LL +
                          (rt0.tv_nsec - mt0.tv_nsec);
    double start = mono(), warm_end = start + warmup, end = warm_end + seconds;
    for (int i = 0; i < nstreams; i++) streams[i].due += start;
    long long sent = 0, rtp = 0, other = 0, seen = 0;
    double cpu0 = 0, wall0 = 0;
    int measuring = 0;
    /* The join transient: the worst sampled latency and the server's CPU per second of
     * the measurement window (the first seconds of a room that starts all at once). */
    enum { SECONDS_MAX = 64 };
    double sec_max[SECONDS_MAX] = {0}, sec_cpu[SECONDS_MAX + 1] = {0};
    int sec_done = 0;
    for (;;) {
        double now = mono();
        if (measuring && sec_done < SECONDS_MAX && now - wall0 >= sec_done + 1)
            sec_cpu[++sec_done] = proc_cpu(pid) - cpu0;
        if (!measuring && now >= warm_end) {
            measuring = 1;
            printf("start\n");
            fflush(stdout);
            cpu0 = proc_cpu(pid);
            wall0 = mono();
            sent = rtp = other = 0;
            nlat = 0;
        }
        if (now >= end) break;
        double next = end;
        for (int i = 0; i < nstreams; i++) {
            Stream *st = &streams[i];
            while (st->due <= now) {
                int key = 0;
                if (st->video && now - st->last_key >= key_every) {
                    key = 1;
                    st->last_key = now;
                }
                send_stream(st, now, key, &sent);
                st->due += st->period;
            }
            if (st->due < next) next = st->due;
        }
        double wait = next - mono();
        struct timespec ts = {0, 0};
        if (wait > 0.005) wait = 0.005;
        if (wait > 0) ts.tv_nsec = (long)(wait * 1e9);
        int ready = ppoll(pfds, (nfds_t)nsocks, &ts, NULL);
        if (ready <= 0) continue;
        for (int s = 0; s < nsocks; s++) {
            if (!(pfds[s].revents & POLLIN)) continue;
            for (;;) {
                for (int i = 0; i < BATCH; i++) {
                    msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
                    msgs[i].msg_hdr.msg_controllen = sizeof ctls[i];
                }
                int n = recvmmsg(socks[s].fd, msgs, BATCH, MSG_DONTWAIT, NULL);
                if (n <= 0) break;
                double t = mono();
                for (int i = 0; i < n; i++) {
                    unsigned char *p = bufs[i];
                    int len = (int)msgs[i].msg_len;
                    if (len < 2 || !(p[0] > 127 && p[0] < 192) || (p[1] >= 192 && p[1] <= 223)) {
                        other++;
                        if (ufd >= 0 && len >= 20 && p[0] < 2 && len <= BUF - 8) {
                            unsigned char m[BUF + 8];
                            m[0] = (unsigned char)(s >> 8);
                            m[1] = (unsigned char)s;
                            memcpy(m + 2, &addrs[i].sin_addr, 4);
                            memcpy(m + 6, &addrs[i].sin_port, 2);
                            memcpy(m + 8, p, (size_t)len);
                            send(ufd, m, (size_t)len + 8, MSG_DONTWAIT);
                        }
                        continue;
                    }
                    rtp++;
                    seen++;
                    if (socks[s].rx != NULL && seen % sample == 0 &&
                        srtp_unprotect(socks[s].rx, p, &len) == srtp_err_status_ok && len >= 20) {
                        double sent_at;
                        memcpy(&sent_at, p + len - 8, 8);
                        if (nlat == lcap) {
                            lcap *= 2;
                            lat = realloc(lat, lcap * sizeof *lat);
                            alat = realloc(alat, lcap * sizeof *alat);
                        }
                        for (struct cmsghdr *c = CMSG_FIRSTHDR(&msgs[i].msg_hdr); c != NULL;
                             c = CMSG_NXTHDR(&msgs[i].msg_hdr, c)) {
                            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_TIMESTAMPNS)
                                continue;
                            struct timespec k;
                            memcpy(&k, CMSG_DATA(c), sizeof k);
                            long long ns = (long long)k.tv_sec * 1000000000LL + k.tv_nsec;
                            alat[nalat++] = ((double)(ns - offset_ns) * 1e-9 - sent_at) * 1000.0;
                        }
                        lat[nlat++] = (t - sent_at) * 1000.0;
                        int sec = measuring ? (int)(t - wall0) : -1;
                        if (sec >= 0 && sec < SECONDS_MAX && lat[nlat - 1] > sec_max[sec])
                            sec_max[sec] = lat[nlat - 1];
                    }
                }
                if (n < BATCH) break;
            }
        }
    }
    double cpu = proc_cpu(pid) - cpu0, wall = mono() - wall0;
    qsort(lat, nlat, sizeof *lat, cmp);
    double p50 = nlat ? lat[nlat / 2] : -1, p99 = nlat ? lat[(size_t)(nlat * 0.99)] : -1,
           p999 = nlat ? lat[(size_t)(nlat * 0.999)] : -1;
    qsort(alat, nalat, sizeof *alat, cmp);
    double a50 = nalat ? alat[nalat / 2] : -1, a99 = nalat ? alat[(size_t)(nalat * 0.99)] : -1,
           a999 = nalat ? alat[(size_t)(nalat * 0.999)] : -1;
    printf("{\"wall\": %.6f, \"cpu\": %.6f, \"sent\": %lld, \"rtp_received\": %lld, "
           "\"other_received\": %lld, \"samples\": %zu, \"p50\": %.4f, \"p99\": %.4f, "
           "\"p999\": %.4f, \"arrival_samples\": %zu, \"arrival_p50\": %.4f, "
           "\"arrival_p99\": %.4f, \"arrival_p999\": %.4f, \"max_ms_by_second\": [",
           wall, cpu, sent, rtp, other, nlat, p50, p99, p999, nalat, a50, a99, a999);
    int secs = (int)wall < SECONDS_MAX ? (int)wall : SECONDS_MAX;
    for (int i = 0; i < secs; i++) printf("%s%.2f", i ? ", " : "", sec_max[i]);
    printf("], \"cpu_s_by_second\": [");
    for (int i = 0; i < sec_done && i < secs; i++)
        printf("%s%.3f", i ? ", " : "", sec_cpu[i + 1] - sec_cpu[i]);
    printf("]}\n");
    return 0;
}
