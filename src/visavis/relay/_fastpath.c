/* Native fast path of the TURN relay (visavis.relay._fastpath).
 *
 * Drains a ready UDP socket with recvmmsg (one syscall for up to 64 datagrams, and no
 * failing syscall at the end of a drain) and forwards the commonest case itself:
 *
 *   drain_client: ChannelData from a UDP client on a bound channel with a valid
 *                 permission -> payload sent to the peer from the relay socket;
 *   drain_peer:   a datagram from a peer bound to a channel with a valid permission ->
 *                 ChannelData sent to the UDP client from the listener socket.
 *
 * The routes are dictionaries built by the Python shell from the sans-I/O core's state
 * (see visavis.relay.fastpath); a route carries its expiry (min of channel and
 * permission expiry), so an expired route falls through to the core, which drops and
 * counts. Everything else (STUN, unknown channels, IPv6, peers without a channel) is
 * handed to Python as a list of (bytes, (host, port)) for the core. A send that would
 * block is appended to `blocked` as (socket, bytes, (host, port)) for the shell's write
 * queue. The drains are registered with loop.add_reader directly (no Python frame per
 * wake-up): drain(sock, routes, budget, blocked, on_slow) reads the clock itself and calls
 * on_slow(slow list or None, now) only when the core or the write queue has work.
 * Same interface as visavis.relay._fastpath_py, the pure-Python fallback.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifndef __linux__
#error "the native relay fast path needs Linux (recvmmsg)"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#define VLEN 64
#define BUFSZ 65536

static unsigned char bufs[VLEN][BUFSZ];
static struct mmsghdr msgs[VLEN];
static struct iovec iovs[VLEN];
static struct sockaddr_storage addrs[VLEN];

static unsigned long long io_errors = 0;
static long force_eagain = 0; /* tests: treat the next N fast-path sends as EAGAIN */

/* ------------------------------------------------------------------ Counters */
typedef struct {
    PyObject_HEAD
    unsigned long long pkts_out, bytes_out, pkts_in, bytes_in;
} Counters;

static PyMemberDef Counters_members[] = {
    {"pkts_out", T_ULONGLONG, offsetof(Counters, pkts_out), 0, "packets sent to peers"},
    {"bytes_out", T_ULONGLONG, offsetof(Counters, bytes_out), 0, "payload bytes to peers"},
    {"pkts_in", T_ULONGLONG, offsetof(Counters, pkts_in), 0, "packets sent to the client"},
    {"bytes_in", T_ULONGLONG, offsetof(Counters, bytes_in), 0, "payload bytes to the client"},
    {NULL}};

static PyTypeObject CountersType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "visavis.relay._fastpath.Counters",
    .tp_basicsize = sizeof(Counters),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Per-allocation packet and byte counters of the fast path.",
    .tp_new = PyType_GenericNew,
    .tp_members = Counters_members,
};

/* ------------------------------------------------------------------ Route */
typedef struct {
    PyObject_HEAD
    PyObject *sock; /* the socket to send from */
    int fd;
    struct sockaddr_in addr;
    int channel; /* -1: strip the ChannelData header; else prepend one with this number */
    double expiry;
    Counters *counters;
} Route;

static int Route_traverse(Route *self, visitproc visit, void *arg) {
    Py_VISIT(self->sock);
    Py_VISIT(self->counters);
    return 0;
}

static int Route_clear(Route *self) {
    Py_CLEAR(self->sock);
    Py_CLEAR(self->counters);
    return 0;
}

static void Route_dealloc(Route *self) {
    PyObject_GC_UnTrack(self);
    Route_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Route_init(Route *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sock", "host", "port", "channel", "expiry", "counters", NULL};
    PyObject *sock, *counters;
    const char *host;
    int port, channel;
    double expiry;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OsiidO!", kwlist, &sock, &host, &port,
                                     &channel, &expiry, &CountersType, &counters))
        return -1;
    int fd = PyObject_AsFileDescriptor(sock);
    if (fd < 0) return -1;
    if (port < 0 || port > 65535 || channel < -1 || channel > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "bad port or channel");
        return -1;
    }
    memset(&self->addr, 0, sizeof self->addr);
    self->addr.sin_family = AF_INET;
    self->addr.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, host, &self->addr.sin_addr) != 1) {
        PyErr_SetString(PyExc_ValueError, "route host must be an IPv4 address");
        return -1;
    }
    Py_INCREF(sock);
    Py_XSETREF(self->sock, sock);
    Py_INCREF(counters);
    Py_XSETREF(self->counters, (Counters *)counters);
    self->fd = fd;
    self->channel = channel;
    self->expiry = expiry;
    return 0;
}

static PyObject *Route_get_addr(Route *self, void *closure) {
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &self->addr.sin_addr, host, sizeof host);
    return Py_BuildValue("(si)", host, (int)ntohs(self->addr.sin_port));
}

static PyGetSetDef Route_getset[] = {
    {"addr", (getter)Route_get_addr, NULL, "destination (host, port)", NULL}, {NULL}};

static PyMemberDef Route_members[] = {
    {"sock", T_OBJECT_EX, offsetof(Route, sock), READONLY, "socket sent from"},
    {"channel", T_INT, offsetof(Route, channel), READONLY, "-1 strips, else prepends"},
    {"expiry", T_DOUBLE, offsetof(Route, expiry), 0, "valid while expiry >= now"},
    {"counters", T_OBJECT_EX, offsetof(Route, counters), READONLY, "counters"},
    {NULL}};

static PyTypeObject RouteType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "visavis.relay._fastpath.Route",
    .tp_basicsize = sizeof(Route),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Route(sock, host, port, channel, expiry, counters): where a fast-path packet goes.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Route_init,
    .tp_dealloc = (destructor)Route_dealloc,
    .tp_traverse = (traverseproc)Route_traverse,
    .tp_clear = (inquiry)Route_clear,
    .tp_members = Route_members,
    .tp_getset = Route_getset,
};

/* ------------------------------------------------------------------ helpers */
static PyObject *addr_tuple(const struct sockaddr_storage *ss) {
    char host[INET6_ADDRSTRLEN + IF_NAMESIZE + 2];
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *sa = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &sa->sin_addr, host, sizeof host);
        return Py_BuildValue("(si)", host, (int)ntohs(sa->sin_port));
    }
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *sa = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &sa->sin6_addr, host, INET6_ADDRSTRLEN);
        if (sa->sin6_scope_id) {
            size_t len = strlen(host);
            host[len] = '%';
            if (!if_indextoname(sa->sin6_scope_id, host + len + 1))
                snprintf(host + len + 1, IF_NAMESIZE + 1, "%u", (unsigned)sa->sin6_scope_id);
        }
        return Py_BuildValue("(si)", host, (int)ntohs(sa->sin6_port));
    }
    return Py_BuildValue("(si)", "", 0);
}

/* Append (data, addr) to *slow (created on demand). -1 on error. */
static int push_slow(PyObject **slow, const unsigned char *data, size_t len,
                     const struct sockaddr_storage *ss) {
    if (*slow == NULL && (*slow = PyList_New(0)) == NULL) return -1;
    PyObject *b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
    if (b == NULL) return -1;
    PyObject *a = addr_tuple(ss);
    if (a == NULL) {
        Py_DECREF(b);
        return -1;
    }
    PyObject *item = PyTuple_Pack(2, b, a);
    Py_DECREF(b);
    Py_DECREF(a);
    if (item == NULL) return -1;
    int rc = PyList_Append(*slow, item);
    Py_DECREF(item);
    return rc;
}

/* A fast-path send that would block: (sock, whole datagram, addr) for the write queue. */
static int push_blocked(PyObject *blocked, Route *r, const unsigned char *head, size_t hlen,
                        const unsigned char *data, size_t len) {
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(hlen + len));
    if (b == NULL) return -1;
    if (hlen) memcpy(PyBytes_AS_STRING(b), head, hlen);
    memcpy(PyBytes_AS_STRING(b) + hlen, data, len);
    PyObject *a = Route_get_addr(r, NULL);
    if (a == NULL) {
        Py_DECREF(b);
        return -1;
    }
    PyObject *item = PyTuple_Pack(3, r->sock, b, a);
    Py_DECREF(b);
    Py_DECREF(a);
    if (item == NULL) return -1;
    int rc = PyList_Append(blocked, item);
    Py_DECREF(item);
    return rc;
}

/* 0 sent (or failed hard, counted), 1 would block, -1 Python error. */
static int route_send(Route *r, const unsigned char *head, size_t hlen, const unsigned char *data,
                      size_t len) {
    if (force_eagain > 0) {
        force_eagain--;
        return 1;
    }
    struct iovec iov[2];
    int n = 0;
    if (hlen) {
        iov[n].iov_base = (void *)head;
        iov[n].iov_len = hlen;
        n++;
    }
    iov[n].iov_base = (void *)data;
    iov[n].iov_len = len;
    n++;
    struct msghdr mh = {0};
    mh.msg_name = &r->addr;
    mh.msg_namelen = sizeof r->addr;
    mh.msg_iov = iov;
    mh.msg_iovlen = (size_t)n;
    for (;;) {
        if (sendmsg(r->fd, &mh, MSG_DONTWAIT) >= 0) return 0;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS) return 1;
        io_errors++;
        return 0;
    }
}

static int parse_args(PyObject *const *args, Py_ssize_t nargs, const char *name, int *fd,
                      PyObject **routes, long *budget, PyObject **blocked) {
    if (nargs != 5) {
        PyErr_Format(PyExc_TypeError, "%s(sock, routes, budget, blocked, on_slow)", name);
        return -1;
    }
    *fd = PyObject_AsFileDescriptor(args[0]);
    if (*fd < 0) return -1;
    if (!PyDict_Check(args[1]) || !PyList_Check(args[3])) {
        PyErr_SetString(PyExc_TypeError, "routes must be a dict and blocked a list");
        return -1;
    }
    *routes = args[1];
    *budget = PyLong_AsLong(args[2]);
    if (*budget == -1 && PyErr_Occurred()) return -1;
    *blocked = args[3];
    return 0;
}

/* The wall clock, as time.time(). */
static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Hand the core's share to Python: on_slow(slow or None, now), if there is any. */
static PyObject *finish(PyObject *slow, PyObject *blocked, PyObject *on_slow, double now) {
    if (slow == NULL && PyList_GET_SIZE(blocked) == 0) Py_RETURN_NONE;
    PyObject *t = PyFloat_FromDouble(now);
    if (t == NULL) {
        Py_XDECREF(slow);
        return NULL;
    }
    PyObject *args[2] = {slow ? slow : Py_None, t};
    PyObject *res = PyObject_Vectorcall(on_slow, args, 2, NULL);
    Py_DECREF(t);
    Py_XDECREF(slow);
    return res;
}

static void init_msgs(void) {
    for (int i = 0; i < VLEN; i++) {
        iovs[i].iov_base = bufs[i];
        iovs[i].iov_len = BUFSZ;
        memset(&msgs[i].msg_hdr, 0, sizeof msgs[i].msg_hdr);
        msgs[i].msg_hdr.msg_name = &addrs[i];
        msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
        msgs[i].msg_hdr.msg_iov = &iovs[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
}

/* Receive up to `want` datagrams; returns the count (0 when none, errors counted). The
 * kernel only rewrites msg_namelen, msg_flags and msg_len of the entries it filled, so
 * only those are reset for the next call. */
static int receive(int fd, int want) {
    for (;;) {
        int n = recvmmsg(fd, msgs, (unsigned)want, MSG_DONTWAIT, NULL);
        if (n >= 0) return n;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK) io_errors++;
        return 0;
    }
}

static inline Route *lookup(PyObject *routes, unsigned long long key) {
    PyObject *k = PyLong_FromUnsignedLongLong(key);
    if (k == NULL) return NULL;
    PyObject *r = PyDict_GetItemWithError(routes, k);
    Py_DECREF(k);
    if (r == NULL || Py_TYPE(r) != &RouteType) return NULL;
    return (Route *)r;
}

/* ------------------------------------------------------------------ drains */
static PyObject *drain_client(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    PyObject *routes, *blocked, *slow = NULL;
    double now;
    long budget;
    if (parse_args(args, nargs, "drain_client", &fd, &routes, &budget, &blocked) < 0) return NULL;
    now = wall_now();
    long total = 0;
    while (total < budget) {
        int want = budget - total > VLEN ? VLEN : (int)(budget - total);
        int n = receive(fd, want);
        for (int i = 0; i < n; i++) {
            const unsigned char *p = bufs[i];
            size_t len = msgs[i].msg_len;
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                io_errors++;
                continue;
            }
            const struct sockaddr_in *sa = (const struct sockaddr_in *)&addrs[i];
            if (sa->sin_family == AF_INET && len >= 4 && p[0] >= 0x40 && p[0] <= 0x7F) {
                unsigned ch = (unsigned)p[0] << 8 | p[1];
                size_t dlen = (size_t)p[2] << 8 | p[3];
                unsigned long long key = (unsigned long long)ntohl(sa->sin_addr.s_addr) << 32 |
                                         (unsigned long long)ntohs(sa->sin_port) << 16 | ch;
                Route *r = dlen + 4 <= len ? lookup(routes, key) : NULL;
                if (r == NULL && PyErr_Occurred()) goto error;
                if (r != NULL && r->expiry >= now && r->channel < 0) {
                    int rc = route_send(r, NULL, 0, p + 4, dlen);
                    if (rc == 1 && push_blocked(blocked, r, NULL, 0, p + 4, dlen) < 0)
                        goto error;
                    r->counters->pkts_out++;
                    r->counters->bytes_out += dlen;
                    continue;
                }
            }
            if (push_slow(&slow, p, len, &addrs[i]) < 0) goto error;
        }
        for (int i = 0; i < n; i++) {
            msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
            msgs[i].msg_hdr.msg_flags = 0;
        }
        total += n;
        if (n < want) break;
    }
    return finish(slow, blocked, args[4], now);
error:
    init_msgs(); /* the batch was cut short: reset every header */
    Py_XDECREF(slow);
    return NULL;
}

static PyObject *drain_peer(PyObject *mod, PyObject *const *args, Py_ssize_t nargs) {
    int fd;
    PyObject *routes, *blocked, *slow = NULL;
    double now;
    long budget;
    if (parse_args(args, nargs, "drain_peer", &fd, &routes, &budget, &blocked) < 0) return NULL;
    now = wall_now();
    long total = 0;
    while (total < budget) {
        int want = budget - total > VLEN ? VLEN : (int)(budget - total);
        int n = receive(fd, want);
        for (int i = 0; i < n; i++) {
            const unsigned char *p = bufs[i];
            size_t len = msgs[i].msg_len;
            if (msgs[i].msg_hdr.msg_flags & MSG_TRUNC) {
                io_errors++;
                continue;
            }
            const struct sockaddr_in *sa = (const struct sockaddr_in *)&addrs[i];
            if (sa->sin_family == AF_INET && len <= 0xFFFF) {
                unsigned long long key = (unsigned long long)ntohl(sa->sin_addr.s_addr) << 16 |
                                         ntohs(sa->sin_port);
                Route *r = lookup(routes, key);
                if (r == NULL && PyErr_Occurred()) goto error;
                if (r != NULL && r->expiry >= now && r->channel >= 0) {
                    unsigned char head[4] = {(unsigned char)(r->channel >> 8),
                                             (unsigned char)r->channel,
                                             (unsigned char)(len >> 8), (unsigned char)len};
                    int rc = route_send(r, head, 4, p, len);
                    if (rc == 1 && push_blocked(blocked, r, head, 4, p, len) < 0) goto error;
                    r->counters->pkts_in++;
                    r->counters->bytes_in += len;
                    continue;
                }
            }
            if (push_slow(&slow, p, len, &addrs[i]) < 0) goto error;
        }
        for (int i = 0; i < n; i++) {
            msgs[i].msg_hdr.msg_namelen = sizeof addrs[i];
            msgs[i].msg_hdr.msg_flags = 0;
        }
        total += n;
        if (n < want) break;
    }
    return finish(slow, blocked, args[4], now);
error:
    init_msgs(); /* the batch was cut short: reset every header */
    Py_XDECREF(slow);
    return NULL;
}

/* ------------------------------------------------------------------ keys, knobs */
static int ipv4_of(PyObject *host, uint32_t *out) {
    const char *s = PyUnicode_AsUTF8(host);
    if (s == NULL) return -1;
    struct in_addr a;
    if (inet_pton(AF_INET, s, &a) != 1) return 0;
    *out = ntohl(a.s_addr);
    return 1;
}

static PyObject *client_key(PyObject *mod, PyObject *args) {
    PyObject *host;
    int port, channel;
    if (!PyArg_ParseTuple(args, "Uii", &host, &port, &channel)) return NULL;
    uint32_t ip;
    int ok = ipv4_of(host, &ip);
    if (ok < 0) return NULL;
    if (!ok || port < 0 || port > 0xFFFF || channel < 0 || channel > 0xFFFF) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong((unsigned long long)ip << 32 |
                                       (unsigned long long)port << 16 | (unsigned)channel);
}

static PyObject *peer_key(PyObject *mod, PyObject *args) {
    PyObject *host;
    int port;
    if (!PyArg_ParseTuple(args, "Ui", &host, &port)) return NULL;
    uint32_t ip;
    int ok = ipv4_of(host, &ip);
    if (ok < 0) return NULL;
    if (!ok || port < 0 || port > 0xFFFF) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong((unsigned long long)ip << 16 | (unsigned)port);
}

static PyObject *take_io_errors(PyObject *mod, PyObject *unused) {
    unsigned long long n = io_errors;
    io_errors = 0;
    return PyLong_FromUnsignedLongLong(n);
}

static PyObject *set_force_eagain(PyObject *mod, PyObject *arg) {
    long n = PyLong_AsLong(arg);
    if (n == -1 && PyErr_Occurred()) return NULL;
    force_eagain = n;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"drain_client", (PyCFunction)(void (*)(void))drain_client, METH_FASTCALL,
     "drain_client(sock, routes, budget, blocked, on_slow): client datagrams"},
    {"drain_peer", (PyCFunction)(void (*)(void))drain_peer, METH_FASTCALL,
     "drain_peer(sock, routes, budget, blocked, on_slow): peer datagrams"},
    {"client_key", client_key, METH_VARARGS, "client_key(host, port, channel) -> key or None"},
    {"peer_key", peer_key, METH_VARARGS, "peer_key(host, port) -> key or None"},
    {"take_io_errors", take_io_errors, METH_NOARGS, "I/O errors since the last call"},
    {"set_force_eagain", set_force_eagain, METH_O, "tests: the next N sends would block"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_fastpath",
                                       "Native fast path of the TURN relay.", -1, methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    if (PyType_Ready(&CountersType) < 0 || PyType_Ready(&RouteType) < 0) return NULL;
    init_msgs();
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    Py_INCREF(&CountersType);
    Py_INCREF(&RouteType);
    if (PyModule_AddObject(m, "Counters", (PyObject *)&CountersType) < 0 ||
        PyModule_AddObject(m, "Route", (PyObject *)&RouteType) < 0 ||
        PyModule_AddIntConstant(m, "NATIVE", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
