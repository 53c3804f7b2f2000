/* Native forwarding path of the SFU (visavis.sfu._fastpath).
 *
 * The per-packet path, from a datagram on the media port to the datagrams for every
 * subscriber, without a Python object per packet:
 *
 *   recvmmsg -> the link of the source address (a dict of int keys) -> SRTP unprotect
 *   (_srtp.c on OpenSSL) -> the source of the SSRC (a dict per link) -> reception stats,
 *   NACK history, audio level -> per sink: simulcast decision (Selector, on keyframes
 *   found per codec: is_keyframe), layer limits (VP9 spatial, VP8/VP9 temporal), sequence and
 *   timestamp rewrite (Rewriter), new header with the sink's SSRC, payload type and
 *   header extensions (abs-send-time or audio level; the link's transport-wide sequence
 *   number when negotiated, its send time and size remembered for TWCC feedback) ->
 *   SRTP protect -> sendmmsg, where consecutive datagrams to one subscriber leave as one
 *   UDP_SEGMENT (GSO) send when they have the same size (the last may be shorter).
 *
 * Python (visavis.sfu.room, udp, transport) keeps the control plane and builds these
 * tables: Link (one per transport: SRTP sessions, destination, sources by SSRC), Source
 * (one per producer layer; the Layer class derives from it), Sink (one per consumer;
 * the Consumer class derives from it), Rewriter and Selector (the consumer's sequence
 * rewriter and simulcast selector, also used by Python directly). Everything the fast
 * path does not handle goes back to Python in one call per drain:
 * on_slow(raw, received, outgoing, now): `raw` datagrams (STUN, DTLS, RTCP, unknown
 * addresses, links without SRTP yet) as (bytes, (host, port)); `received` decrypted RTP
 * of SSRCs with no source (to learn simulcast SSRCs, drop RTX) as (link, bytes);
 * `outgoing` plain RTP for links without a UDP destination (ICE-TCP) as (link, bytes).
 *
 * The pure-Python twin is visavis.sfu._fastpath_py: same interface, same bytes out.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#ifndef __linux__
#error "the native SFU fast path needs Linux (recvmmsg, sendmmsg)"
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <math.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/udp.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>

#include "_srtp.h"

#define VLEN 64         /* datagrams per recvmmsg */
#define RECVSZ 4096     /* larger datagrams are truncated: dropped as garbage */
#define OUTN 128        /* datagrams per sendmmsg */
#define OUTSZ (RECVSZ + 64 + VV_SRTP_MAX_TRAILER)
#define MAXHIST 64      /* rewriter segments remembered at most */
#define TWCC_RING 4096  /* packets whose send time a link remembers (transport-wide CC) */
#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103 /* Linux >= 4.18; older headers lack the name */
#endif
#define GSO_SEGS 64       /* UDP_MAX_SEGMENTS: datagrams per segmented send at most */
#define GSO_BYTES 65000   /* a segmented send is one UDP payload of at most 64 KiB */
#define GSO_SEG_MAX 1472  /* larger datagrams go alone: an Ethernet MTU's UDP payload, the
                             kernel refuses a segment bigger than the path's MTU */

static PyObject *SrtpError;
static PyObject *DecisionDrop, *DecisionForward, *DecisionSwitch;

/* ------------------------------------------------------------------ helpers */
static inline unsigned u16(const unsigned char *p) { return (unsigned)p[0] << 8 | p[1]; }
static inline uint32_t u32(const unsigned char *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline void put16(unsigned char *p, unsigned v) {
    p[0] = (unsigned char)(v >> 8);
    p[1] = (unsigned char)v;
}
static inline void put32(unsigned char *p, uint32_t v) {
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}
static inline int seq_delta(unsigned a, unsigned b) {
    int d = (int)((a - b) & 0xFFFF);
    return d >= 0x8000 ? d - 0x10000 : d;
}

static double monotonic_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Offset of the payload (after CSRCs and the extension block); -1 if it overruns. */
static long payload_offset(const unsigned char *d, size_t n) {
    size_t pos = 12 + 4 * (size_t)(d[0] & 0x0F);
    if (d[0] & 0x10) {
        if (pos + 4 > n) return -1;
        pos += 4 + 4 * (size_t)u16(d + pos + 2);
    }
    return pos > n ? -1 : (long)pos;
}

/* One header extension's value (RFC 8285), as visavis.protocol.rtp.extensions.
 * find_extension: sets *len and returns a pointer, or NULL. */
static const unsigned char *find_extension(const unsigned char *d, size_t n, int id,
                                           size_t *len) {
    if (!(d[0] & 0x10)) return NULL;
    size_t pos = 12 + 4 * (size_t)(d[0] & 0x0F);
    if (n < pos + 4) return NULL;
    unsigned profile = u16(d + pos);
    size_t end = pos + 4 + 4 * (size_t)u16(d + pos + 2);
    if (end > n) return NULL;
    pos += 4;
    if (profile == 0xBEDE) {
        while (pos < end) {
            unsigned byte = d[pos];
            if (byte == 0) {
                pos++;
                continue;
            }
            int i = (int)(byte >> 4);
            if (i == 15) return NULL;
            size_t length = (byte & 0x0F) + 1;
            if (i == id) {
                if (pos + 1 + length > end) return NULL;
                *len = length;
                return d + pos + 1;
            }
            pos += 1 + length;
        }
    } else if ((profile & 0xFFF0) == 0x1000) {
        while (pos + 1 < end) {
            int i = d[pos];
            if (i == 0) {
                pos++;
                continue;
            }
            size_t length = d[pos + 1];
            if (i == id) {
                if (pos + 2 + length > end) return NULL;
                *len = length;
                return d + pos + 2;
            }
            pos += 2 + length;
        }
    }
    return NULL;
}

/* VP8 keyframe start (RFC 7741 s4.2), as visavis.protocol.rtp.vp8.is_vp8_keyframe. */
static int is_vp8_keyframe(const unsigned char *p, size_t n) {
    if (n < 1) return 0;
    unsigned first = p[0];
    if (!(first & 0x10) || (first & 0x07)) return 0;
    size_t pos = 1;
    if (first & 0x80) {
        if (n < 2) return 0;
        unsigned ext = p[1];
        pos = 2;
        if (ext & 0x80) {
            if (n <= pos) return 0;
            pos += (p[pos] & 0x80) ? 2 : 1;
        }
        if (ext & 0x40) pos += 1;
        if (ext & 0x30) pos += 1;
    }
    if (n <= pos) return 0;
    return !(p[pos] & 0x01);
}

/* VP9 keyframe start (RFC 9628 s4.2), as visavis.protocol.rtp.vp9.is_vp9_keyframe:
 * B (start of a layer frame), P = 0 (not inter-picture predicted), SID 0. */
static int is_vp9_keyframe(const unsigned char *p, size_t n) {
    if (n < 1) return 0;
    unsigned first = p[0];
    size_t pos = 1;
    if (first & 0x80) {
        if (n <= pos) return 0;
        pos += (p[pos] & 0x80) ? 2 : 1;
    }
    unsigned sid = 0;
    if (first & 0x20) {
        if (n <= pos) return 0;
        sid = (p[pos] >> 1) & 0x07;
        pos += 1;
    }
    if (n < pos) return 0;
    return (first & 0x08) && !(first & 0x40) && sid == 0;
}

/* Where a VP8/VP9 packet sits in the layer structure, as
 * visavis.protocol.rtp.keyframes.layer_info: spatial and temporal ids, start of a picture,
 * end of a layer frame (VP9 E), keyframe start. */
typedef struct {
    int sid, tid, start, end, intra;
} LayerInfo;

static int vp9_info(const unsigned char *p, size_t n, LayerInfo *li) {
    if (n < 1) return 0;
    unsigned first = p[0];
    size_t pos = 1;
    if (first & 0x80) {
        if (n <= pos) return 0;
        pos += (p[pos] & 0x80) ? 2 : 1;
    }
    li->sid = li->tid = 0;
    if (first & 0x20) {
        if (n <= pos) return 0;
        li->tid = p[pos] >> 5;
        li->sid = (p[pos] >> 1) & 0x07;
        pos += 1;
    }
    if (n < pos) return 0;
    li->start = (first & 0x08) && li->sid == 0;
    li->end = (first & 0x04) != 0;
    li->intra = li->start && !(first & 0x40);
    return 1;
}

static int vp8_info(const unsigned char *p, size_t n, LayerInfo *li) {
    if (n < 1) return 0;
    li->sid = li->tid = 0;
    li->end = 0;
    li->start = (p[0] & 0x10) && !(p[0] & 0x07);
    li->intra = is_vp8_keyframe(p, n);
    if (!(p[0] & 0x80)) return 1;
    if (n < 2) return 0;
    unsigned ext = p[1];
    size_t pos = 2;
    if (ext & 0x80) {
        if (n <= pos) return 0;
        pos += (p[pos] & 0x80) ? 2 : 1;
    }
    if (ext & 0x40) pos += 1;
    if (!(ext & 0x20)) return 1;
    if (n <= pos) return 0;
    li->tid = p[pos] >> 6;
    return 1;
}

/* AV1 dependency descriptor (AV1 RTP spec appendix A), as
 * visavis.protocol.rtp.av1.parse_dependency_descriptor: a keyframe attaches the template
 * structure (each template's spatial and temporal id), kept per source; a packet's layers
 * are its template's. Only the fields that route are kept; the rest is skipped, but a
 * descriptor too short for its structure is malformed, as in Python. */
typedef struct {
    int count, offset; /* templates of the structure in force (0: none), template_id_offset */
    unsigned char sid[64], tid[64];
} DdStructure;

typedef struct {
    const unsigned char *d;
    size_t bits, pos; /* bits available, bits read */
    int bad;          /* read past the end */
} Bits;

static unsigned bits_f(Bits *b, unsigned count) {
    unsigned v = 0;
    if (b->pos + count > b->bits) {
        b->bad = 1;
        return 0;
    }
    for (unsigned i = 0; i < count; i++, b->pos++)
        v = v << 1 | ((b->d[b->pos >> 3] >> (7 - (b->pos & 7))) & 1);
    return v;
}

static void bits_skip(Bits *b, size_t count) {
    if (b->pos + count > b->bits) b->bad = 1;
    else b->pos += count;
}

static unsigned bits_ns(Bits *b, unsigned n) { /* ns(n), n >= 1 */
    unsigned w = 0;
    for (unsigned x = n; x; x >>= 1) w++;
    unsigned m = (1u << w) - n;
    unsigned v = bits_f(b, w - 1);
    if (v < m) return v;
    return (v << 1) - m + bits_f(b, 1);
}

static int dd_structure(Bits *b, DdStructure *s) {
    s->offset = (int)bits_f(b, 6);
    unsigned dt_cnt = bits_f(b, 5) + 1;
    unsigned count = 0, sid = 0, tid = 0;
    for (;;) { /* template_layers */
        if (count == 64 || b->bad) return 0;
        s->sid[count] = (unsigned char)sid;
        s->tid[count] = (unsigned char)tid;
        count++;
        unsigned idc = bits_f(b, 2);
        if (idc == 1) tid++;
        else if (idc == 2) tid = 0, sid++;
        else if (idc == 3) break;
    }
    bits_skip(b, (size_t)2 * count * dt_cnt); /* template_dtis */
    for (unsigned i = 0; i < count && !b->bad; i++) /* template_fdiffs */
        while (bits_f(b, 1)) bits_f(b, 4);
    unsigned chains = bits_ns(b, dt_cnt + 1);
    if (chains) {
        for (unsigned i = 0; i < dt_cnt; i++) bits_ns(b, chains);
        bits_skip(b, (size_t)4 * count * chains);
    }
    if (bits_f(b, 1)) bits_skip(b, (size_t)32 * (sid + 1)); /* resolutions */
    s->count = (int)count;
    return !b->bad;
}

/* A packet's layers from its descriptor `v`, with `known` the source's structure (replaced
 * by one the packet attaches): 1 known, 0 no structure yet, -1 malformed (as
 * keyframes.dd_layer_info after parse_dependency_descriptor). */
static int dd_info(const unsigned char *v, size_t n, DdStructure *known, LayerInfo *li) {
    if (n < 3) return -1;
    Bits b = {v, n * 8, 0, 0};
    unsigned start = bits_f(&b, 1), end = bits_f(&b, 1), template_id = bits_f(&b, 6);
    bits_f(&b, 16); /* frame_number */
    DdStructure attached;
    int has = 0;
    if (n > 3) {
        unsigned present = bits_f(&b, 1);
        bits_f(&b, 4); /* active decode targets, custom dtis / fdiffs / chains flags */
        if (present) {
            if (!dd_structure(&b, &attached)) return -1;
            has = 1;
        }
    }
    const DdStructure *s = has ? &attached : known;
    if (s->count == 0) return 0;
    unsigned index = (template_id + 64 - (unsigned)s->offset) % 64;
    if (index >= (unsigned)s->count) return -1;
    li->sid = s->sid[index];
    li->tid = s->tid[index];
    li->start = start && li->sid == 0;
    li->end = end != 0;
    li->intra = start && has;
    if (has) *known = attached;
    return 1;
}

/* H.264 (RFC 6184): a packet holding an SPS (7) or the start of an IDR slice (5), as
 * visavis.protocol.rtp.h264.is_h264_keyframe. */
static inline int h264_key_type(unsigned t) { return t == 5 || t == 7; }

static int is_h264_keyframe(const unsigned char *p, size_t n) {
    if (n < 1) return 0;
    unsigned nal = p[0] & 0x1F;
    if (nal >= 1 && nal <= 23) return h264_key_type(nal);
    if (nal == 24) { /* STAP-A */
        size_t pos = 1;
        while (pos + 2 < n) {
            size_t size = (size_t)u16(p + pos);
            if (size == 0 || pos + 2 + size > n) break;
            if (h264_key_type(p[pos + 2] & 0x1F)) return 1;
            pos += 2 + size;
        }
        return 0;
    }
    if (nal == 28 && n >= 2 && (p[1] & 0x80)) return h264_key_type(p[1] & 0x1F); /* FU-A */
    return 0;
}

enum { CODEC_VP8 = 0, CODEC_VP9 = 1, CODEC_H264 = 2, CODEC_AV1 = 3 };

/* As visavis.protocol.rtp.keyframes.is_keyframe: the dependency descriptor when the
 * packet has one (dd != NULL: start of frame and template structure present), else the
 * codec's payload header (AV1: the aggregation header's N bit). */
static int is_keyframe(int codec, const unsigned char *p, size_t n, const unsigned char *dd,
                       size_t ddlen) {
    if (dd != NULL) return ddlen > 3 && (dd[0] & 0x80) && (dd[3] & 0x80);
    switch (codec) {
    case CODEC_VP8: return is_vp8_keyframe(p, n);
    case CODEC_VP9: return is_vp9_keyframe(p, n);
    case CODEC_H264: return is_h264_keyframe(p, n);
    case CODEC_AV1: return n >= 1 && (p[0] & 0x08);
    default: return 0;
    }
}

/* ------------------------------------------------------------------ Session */
typedef struct {
    PyObject_HEAD
    vv_srtp_t *srtp;
} Session;

static void Session_dealloc(Session *self) {
    vv_srtp_free(self->srtp); /* wipes the keys */
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Session_init(Session *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"key", "profile", "outbound", NULL};
    Py_buffer key;
    int profile, outbound;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*ip", kwlist, &key, &profile, &outbound))
        return -1;
    /* `outbound` only named libsrtp2's template direction: no effect on the bytes */
    int want = vv_srtp_key_length(profile);
    if (want < 0) {
        PyBuffer_Release(&key);
        PyErr_SetString(PyExc_ValueError, "unsupported SRTP profile");
        return -1;
    }
    if (key.len != want) {
        PyBuffer_Release(&key);
        PyErr_Format(PyExc_ValueError, "SRTP master key+salt must be %d bytes", want);
        return -1;
    }
    vv_srtp_free(self->srtp);
    int rc;
    self->srtp = vv_srtp_create(profile, (const unsigned char *)key.buf, &rc);
    PyBuffer_Release(&key);
    if (self->srtp == NULL) {
        PyErr_Format(SrtpError, "SRTP session set-up failed (%d)", rc);
        return -1;
    }
    return 0;
}

typedef int (*srtp_fn)(vv_srtp_t *, unsigned char *, int *);

static PyObject *session_apply(Session *self, PyObject *arg, srtp_fn fn) {
    Py_buffer in;
    if (self->srtp == NULL) {
        PyErr_SetString(SrtpError, "session not initialised");
        return NULL;
    }
    if (PyObject_GetBuffer(arg, &in, PyBUF_SIMPLE) < 0) return NULL;
    if (in.len > RECVSZ + 64) {
        PyBuffer_Release(&in);
        PyErr_SetString(SrtpError, "packet too large");
        return NULL;
    }
    unsigned char buf[RECVSZ + 64 + VV_SRTP_MAX_TRAILER];
    memcpy(buf, in.buf, (size_t)in.len);
    int len = (int)in.len;
    PyBuffer_Release(&in);
    int rc = fn(self->srtp, buf, &len);
    if (rc != VV_SRTP_OK) {
        PyErr_Format(SrtpError, "SRTP operation failed (%d)", rc);
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)buf, len);
}

static PyObject *Session_protect(Session *s, PyObject *a) {
    return session_apply(s, a, vv_srtp_protect);
}
static PyObject *Session_unprotect(Session *s, PyObject *a) {
    return session_apply(s, a, vv_srtp_unprotect);
}
static PyObject *Session_protect_rtcp(Session *s, PyObject *a) {
    return session_apply(s, a, vv_srtp_protect_rtcp);
}
static PyObject *Session_unprotect_rtcp(Session *s, PyObject *a) {
    return session_apply(s, a, vv_srtp_unprotect_rtcp);
}

static PyMethodDef Session_methods[] = {
    {"protect", (PyCFunction)Session_protect, METH_O, "RTP -> SRTP"},
    {"unprotect", (PyCFunction)Session_unprotect, METH_O, "SRTP -> RTP (SrtpError if bad)"},
    {"protect_rtcp", (PyCFunction)Session_protect_rtcp, METH_O, "RTCP -> SRTCP"},
    {"unprotect_rtcp", (PyCFunction)Session_unprotect_rtcp, METH_O, "SRTCP -> RTCP"},
    {NULL}};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "visavis.sfu._fastpath.Session",
    .tp_basicsize = sizeof(Session),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Session(key, profile, outbound): one direction of SRTP (_srtp.c, OpenSSL).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Session_init,
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_methods = Session_methods,
};

/* ------------------------------------------------------------------ Rewriter */
typedef struct {
    long tag; /* -1: None */
    unsigned in_start, out_start, seq_offset;
    uint32_t ts_offset;
} Segment;

typedef struct {
    PyObject_HEAD
    int clock_rate;
    unsigned last_out_seq;
    uint32_t last_out_ts;
    double last_out_time;
    int has_time;
    unsigned highest_in;
    Segment segs[MAXHIST];
    int first, count, cap; /* ring of the last `cap` segments */
    int pending;
    long pending_tag;
    int skip_pending; /* packets were dropped: the next one continues the output seq */
} Rewriter;

static int Rewriter_init(Rewriter *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"clock_rate", "initial_seq", "initial_ts", "history", NULL};
    int clock_rate, history = 16;
    long long initial_seq = 0, initial_ts = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "i|$LLi", kwlist, &clock_rate, &initial_seq,
                                     &initial_ts, &history))
        return -1;
    if (history < 1 || history > MAXHIST || clock_rate <= 0) {
        PyErr_SetString(PyExc_ValueError, "bad clock rate or history");
        return -1;
    }
    self->clock_rate = clock_rate;
    self->last_out_seq = (unsigned)((initial_seq - 1) & 0xFFFF);
    self->last_out_ts = (uint32_t)(initial_ts & 0xFFFFFFFF);
    self->has_time = 0;
    self->last_out_time = 0;
    self->highest_in = 0;
    self->first = self->count = 0;
    self->cap = history;
    self->pending = 1;
    self->pending_tag = -1;
    self->skip_pending = 0;
    return 0;
}

static inline Segment *rw_last(Rewriter *r) {
    return &r->segs[(r->first + r->count - 1) % r->cap];
}

/* A new segment (the oldest is forgotten when the ring is full). */
static Segment *rw_push(Rewriter *r) {
    Segment *s;
    if (r->count < r->cap) {
        s = &r->segs[(r->first + r->count) % r->cap];
        r->count++;
    } else {
        s = &r->segs[r->first];
        r->first = (r->first + 1) % r->cap;
    }
    return s;
}

/* Packet `seq` of the current source is not forwarded (a spatial layer above the
 * subscriber's): the next forwarded packet continues the output sequence without a gap
 * (a new segment with the same tag and timestamp offset), as seq.py's skip(). */
static void rw_skip(Rewriter *r, unsigned seq) {
    if (r->pending || r->count == 0 || seq_delta(seq, r->highest_in) <= 0) return;
    r->highest_in = seq;
    r->skip_pending = 1;
}

/* 1 with the output seq and ts set, or 0 to drop. */
static int rw_rewrite(Rewriter *r, unsigned seq, uint32_t ts, double now, unsigned *out_seq,
                      uint32_t *out_ts) {
    if (r->skip_pending && !r->pending && seq_delta(seq, r->highest_in) > 0) {
        r->skip_pending = 0;
        Segment last = *rw_last(r);
        Segment *s = rw_push(r);
        unsigned os = (r->last_out_seq + 1) & 0xFFFF;
        s->tag = last.tag;
        s->in_start = seq;
        s->out_start = os;
        s->seq_offset = (os - seq) & 0xFFFF;
        s->ts_offset = last.ts_offset;
        r->highest_in = seq;
        r->last_out_seq = os;
        r->last_out_ts = ts + last.ts_offset;
        r->last_out_time = now;
        r->has_time = 1;
        *out_seq = os;
        *out_ts = ts + last.ts_offset;
        return 1;
    }
    if (r->pending) {
        r->pending = 0;
        r->skip_pending = 0;
        long long gap = 1;
        if (r->has_time) {
            double g = nearbyint((now - r->last_out_time) * (double)r->clock_rate);
            gap = g > 1 ? (long long)g : 1;
        }
        unsigned os = (r->last_out_seq + 1) & 0xFFFF;
        uint32_t ot = (uint32_t)(((unsigned long long)r->last_out_ts + (unsigned long long)gap) &
                                 0xFFFFFFFFULL);
        Segment *s = rw_push(r);
        s->tag = r->pending_tag;
        s->in_start = seq;
        s->out_start = os;
        s->seq_offset = (os - seq) & 0xFFFF;
        s->ts_offset = ot - ts;
        r->highest_in = seq;
        r->last_out_seq = os;
        r->last_out_ts = ot;
        r->last_out_time = now;
        r->has_time = 1;
        *out_seq = os;
        *out_ts = ot;
        return 1;
    }
    Segment *s = rw_last(r);
    if (seq_delta(seq, s->in_start) < 0) return 0;
    unsigned os = (seq + s->seq_offset) & 0xFFFF;
    uint32_t ot = ts + s->ts_offset;
    if (seq_delta(seq, r->highest_in) > 0) {
        r->highest_in = seq;
        r->last_out_seq = os;
        r->last_out_ts = ot;
        r->last_out_time = now;
        r->has_time = 1;
    }
    *out_seq = os;
    *out_ts = ot;
    return 1;
}

static PyObject *Rewriter_switch(Rewriter *self, PyObject *tag) {
    long t = PyLong_AsLong(tag);
    if (t == -1 && PyErr_Occurred()) return NULL;
    if (t < 0) {
        PyErr_SetString(PyExc_ValueError, "tag must be a non-negative int");
        return NULL;
    }
    self->pending = 1;
    self->pending_tag = t;
    Py_RETURN_NONE;
}

static PyObject *Rewriter_skip(Rewriter *self, PyObject *arg) {
    long seq = PyLong_AsLong(arg);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    rw_skip(self, (unsigned)(seq & 0xFFFF));
    Py_RETURN_NONE;
}

static PyObject *Rewriter_rewrite(Rewriter *self, PyObject *args) {
    unsigned long seq, ts;
    double now;
    if (!PyArg_ParseTuple(args, "kkd", &seq, &ts, &now)) return NULL;
    unsigned os;
    uint32_t ot;
    if (!rw_rewrite(self, (unsigned)(seq & 0xFFFF), (uint32_t)ts, now, &os, &ot)) Py_RETURN_NONE;
    return Py_BuildValue("(kk)", (unsigned long)os, (unsigned long)ot);
}

static PyObject *Rewriter_timestamp_offset(Rewriter *self, PyObject *unused) {
    if (self->count == 0) Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(rw_last(self)->ts_offset);
}

static PyObject *Rewriter_lookup(Rewriter *self, PyObject *arg) {
    long out_seq = PyLong_AsLong(arg);
    if (out_seq == -1 && PyErr_Occurred()) return NULL;
    unsigned o = (unsigned)(out_seq & 0xFFFF);
    for (int k = self->count - 1; k >= 0; k--) {
        Segment *s = &self->segs[(self->first + k) % self->cap];
        if (seq_delta(o, s->out_start) >= 0) {
            if (seq_delta(o, self->last_out_seq) > 0) Py_RETURN_NONE;
            if (k + 1 < self->count) {
                Segment *nxt = &self->segs[(self->first + k + 1) % self->cap];
                if (seq_delta(o, nxt->out_start) >= 0) Py_RETURN_NONE;
            }
            PyObject *tag = s->tag < 0 ? Py_NewRef(Py_None) : PyLong_FromLong(s->tag);
            if (tag == NULL) return NULL;
            return Py_BuildValue("(Nkk)", tag, (unsigned long)((o - s->seq_offset) & 0xFFFF),
                                 (unsigned long)s->ts_offset);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *Rewriter_get_last_sequence(Rewriter *self, void *c) {
    return PyLong_FromUnsignedLong(self->last_out_seq);
}
static PyObject *Rewriter_get_last_timestamp(Rewriter *self, void *c) {
    return PyLong_FromUnsignedLong(self->last_out_ts);
}

static PyMethodDef Rewriter_methods[] = {
    {"switch", (PyCFunction)Rewriter_switch, METH_O, "the next packet comes from source tag"},
    {"skip", (PyCFunction)Rewriter_skip, METH_O, "packet seq is not forwarded: close the gap"},
    {"rewrite", (PyCFunction)Rewriter_rewrite, METH_VARARGS, "(seq, ts, now) -> mapped or None"},
    {"timestamp_offset", (PyCFunction)Rewriter_timestamp_offset, METH_NOARGS,
     "current segment's timestamp offset"},
    {"lookup", (PyCFunction)Rewriter_lookup, METH_O, "out seq -> (tag, in seq, ts offset)"},
    {NULL}};

static PyGetSetDef Rewriter_getset[] = {
    {"last_sequence", (getter)Rewriter_get_last_sequence, NULL, "highest output seq", NULL},
    {"last_timestamp", (getter)Rewriter_get_last_timestamp, NULL, "newest output ts", NULL},
    {NULL}};

static PyMemberDef Rewriter_members[] = {
    {"clock_rate", T_INT, offsetof(Rewriter, clock_rate), READONLY, "RTP clock rate"}, {NULL}};

static PyTypeObject RewriterType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "visavis.sfu._fastpath.Rewriter",
    .tp_basicsize = sizeof(Rewriter),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Native twin of visavis.sfu.seq.SequenceRewriter (int tags).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Rewriter_init,
    .tp_methods = Rewriter_methods,
    .tp_getset = Rewriter_getset,
    .tp_members = Rewriter_members,
};

/* ------------------------------------------------------------------ Selector */
typedef struct {
    PyObject_HEAD
    int target;
    int current; /* -1: None */
} Selector;

enum { DROP = 0, FORWARD = 1, SWITCH = 2 };

static int Selector_init(Selector *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"target", NULL};
    int target = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|i", kwlist, &target)) return -1;
    self->target = target;
    self->current = -1;
    return 0;
}

static inline int sel_decide(Selector *s, int layer, int keyframe) {
    int current = s->current;
    if (layer == s->target && current != layer) {
        if (keyframe) {
            s->current = layer;
            return SWITCH;
        }
        return DROP;
    }
    if (layer == current) return FORWARD;
    if (current < 0 && keyframe && layer < s->target) {
        s->current = layer;
        return SWITCH;
    }
    return DROP;
}

static PyObject *Selector_decide(Selector *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"layer", "keyframe", NULL};
    int layer, keyframe;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ip", kwlist, &layer, &keyframe)) return NULL;
    int d = sel_decide(self, layer, keyframe);
    return Py_NewRef(d == DROP ? DecisionDrop : d == FORWARD ? DecisionForward : DecisionSwitch);
}

static PyObject *Selector_set_target(Selector *self, PyObject *arg) {
    long t = PyLong_AsLong(arg);
    if (t == -1 && PyErr_Occurred()) return NULL;
    self->target = (int)t;
    Py_RETURN_NONE;
}

static PyObject *Selector_reset(Selector *self, PyObject *unused) {
    self->current = -1;
    Py_RETURN_NONE;
}

static PyObject *Selector_get_current(Selector *self, void *c) {
    if (self->current < 0) Py_RETURN_NONE;
    return PyLong_FromLong(self->current);
}

static PyObject *Selector_get_wants_keyframe(Selector *self, void *c) {
    return PyBool_FromLong(self->target >= 0 && self->current != self->target);
}

static PyMethodDef Selector_methods[] = {
    {"decide", (PyCFunction)(void (*)(void))Selector_decide, METH_VARARGS | METH_KEYWORDS,
     "Decision for a packet of layer"},
    {"set_target", (PyCFunction)Selector_set_target, METH_O, "change the wanted layer"},
    {"reset", (PyCFunction)Selector_reset, METH_NOARGS, "forget the current layer"},
    {NULL}};

static PyGetSetDef Selector_getset[] = {
    {"current", (getter)Selector_get_current, NULL, "layer forwarded now, or None", NULL},
    {"wants_keyframe", (getter)Selector_get_wants_keyframe, NULL, "waiting for a switch", NULL},
    {NULL}};

static PyMemberDef Selector_members[] = {
    {"target", T_INT, offsetof(Selector, target), 0, "wanted layer"}, {NULL}};

static PyTypeObject SelectorType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "visavis.sfu._fastpath.Selector",
    .tp_basicsize = sizeof(Selector),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Native twin of visavis.sfu.simulcast.LayerSelector.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Selector_init,
    .tp_methods = Selector_methods,
    .tp_getset = Selector_getset,
    .tp_members = Selector_members,
};

/* ------------------------------------------------------------------ Link */
typedef struct {
    double time;
    long long seq; /* transport-wide sequence number (extended for arrivals); -1: empty */
    unsigned size; /* bytes sent (sent packets only) */
} TwccRecord;

typedef struct {
    PyObject_HEAD
    PyObject *owner;
    PyObject *rx; /* Session or None */
    PyObject *tx;
    PyObject *sources; /* dict: SSRC -> Source */
    double last_seen;
    struct sockaddr_in dest;
    int has_dest;
    int twcc_id;       /* transport-wide-cc extension id, -1: not negotiated */
    unsigned twcc_seq; /* the next transport-wide sequence number */
    TwccRecord *sent;       /* ring of TWCC_RING, allocated when twcc_id is first set */
    int rx_twcc_id;         /* the id the client stamps its packets with, -1: none */
    long long rx_twcc_max;  /* highest extended transport-wide seq received, -1: none */
    long long rx_twcc_base; /* the first one received */
    TwccRecord *arrived;    /* ring of TWCC_RING, allocated when rx_twcc_id is first set */
} Link;

/* Remember when the client's packet `d` (decrypted RTP) with a transport-wide sequence
 * number arrived (as _fastpath_py.Link.twcc_received). */
static void link_note(Link *l, const unsigned char *d, size_t n, double now) {
    size_t vlen = 0;
    const unsigned char *v = find_extension(d, n, l->rx_twcc_id, &vlen);
    if (v == NULL || vlen != 2 || l->arrived == NULL) return;
    unsigned seq = u16(v);
    long long ext = seq;
    if (l->rx_twcc_max < 0) {
        l->rx_twcc_max = l->rx_twcc_base = ext;
    } else {
        ext = l->rx_twcc_max + seq_delta(seq, (unsigned)(l->rx_twcc_max & 0xFFFF));
        if (ext < 0) return;
        if (ext > l->rx_twcc_max) l->rx_twcc_max = ext;
    }
    l->arrived[ext % TWCC_RING].time = now;
    l->arrived[ext % TWCC_RING].seq = ext;
}

/* Take the link's next transport-wide sequence number for a packet of `size` bytes
 * sent at `now`, remembering both (as _fastpath_py.Link.twcc_stamp). */
static unsigned link_stamp(Link *l, size_t size, double now) {
    unsigned seq = l->twcc_seq;
    l->twcc_seq = (seq + 1) & 0xFFFF;
    if (l->sent != NULL) {
        l->sent[seq % TWCC_RING].time = now;
        l->sent[seq % TWCC_RING].seq = seq;
        l->sent[seq % TWCC_RING].size = (unsigned)size;
    }
    return seq;
}

static int Link_traverse(Link *self, visitproc visit, void *arg) {
    Py_VISIT(self->owner);
    Py_VISIT(self->rx);
    Py_VISIT(self->tx);
    Py_VISIT(self->sources);
    return 0;
}

static int Link_clear(Link *self) {
    Py_CLEAR(self->owner);
    Py_CLEAR(self->rx);
    Py_CLEAR(self->tx);
    Py_CLEAR(self->sources);
    return 0;
}

static void Link_dealloc(Link *self) {
    PyObject_GC_UnTrack(self);
    Link_clear(self);
    PyMem_Free(self->sent);
    PyMem_Free(self->arrived);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Link_init(Link *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"owner", NULL};
    PyObject *owner;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O", kwlist, &owner)) return -1;
    Py_XSETREF(self->owner, Py_NewRef(owner));
    Py_XSETREF(self->rx, Py_NewRef(Py_None));
    Py_XSETREF(self->tx, Py_NewRef(Py_None));
    PyObject *d = PyDict_New();
    if (d == NULL) return -1;
    Py_XSETREF(self->sources, d);
    self->has_dest = 0;
    self->last_seen = 0;
    self->twcc_id = -1;
    self->twcc_seq = 0;
    self->rx_twcc_id = -1;
    self->rx_twcc_max = self->rx_twcc_base = -1;
    return 0;
}

static PyObject *Link_get_rx_twcc_id(Link *s, void *c) { return PyLong_FromLong(s->rx_twcc_id); }
/* Set a transport-wide CC extension id (-1: none, else 1..max) and allocate its ring of
 * records on first use: the rings cost 96 KiB, so links without TWCC have none. */
static int set_twcc_id(int *slot, TwccRecord **ring, PyObject *v, long max, const char *name) {
    long id = v == NULL ? -1 : PyLong_AsLong(v);
    if (id == -1 && PyErr_Occurred()) return -1;
    if (id > max || id < -1 || id == 0) {
        PyErr_Format(PyExc_ValueError, "%s must be 1-%ld or -1", name, max);
        return -1;
    }
    if (id >= 0 && *ring == NULL) {
        if ((*ring = PyMem_Calloc(TWCC_RING, sizeof **ring)) == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (int i = 0; i < TWCC_RING; i++) (*ring)[i].seq = -1;
    }
    *slot = (int)id;
    return 0;
}

static int Link_set_rx_twcc_id(Link *s, PyObject *v, void *c) {
    return set_twcc_id(&s->rx_twcc_id, &s->arrived, v, 255, "rx_twcc_id");
}

static PyObject *Link_twcc_received(Link *self, PyObject *args) {
    Py_buffer b;
    double now;
    if (!PyArg_ParseTuple(args, "y*d", &b, &now)) return NULL;
    if (self->rx_twcc_id >= 0 && b.len >= 12) link_note(self, b.buf, (size_t)b.len, now);
    PyBuffer_Release(&b);
    Py_RETURN_NONE;
}

static PyObject *Link_arrivals(Link *self, PyObject *args) {
    long long first, last;
    if (!PyArg_ParseTuple(args, "LL", &first, &last)) return NULL;
    if (last < first || last - first >= TWCC_RING) {
        PyErr_SetString(PyExc_ValueError, "arrivals(first, last): at most TWCC_RING, in order");
        return NULL;
    }
    PyObject *out = PyList_New((Py_ssize_t)(last - first + 1));
    if (out == NULL) return NULL;
    for (long long e = first; e <= last; e++) {
        PyObject *item;
        if (self->arrived != NULL && e >= 0 && self->arrived[e % TWCC_RING].seq == e) {
            item = PyFloat_FromDouble(self->arrived[e % TWCC_RING].time);
            if (item == NULL) {
                Py_DECREF(out);
                return NULL;
            }
        } else {
            item = Py_NewRef(Py_None);
        }
        PyList_SET_ITEM(out, (Py_ssize_t)(e - first), item);
    }
    return out;
}

static PyObject *Link_get_twcc_id(Link *s, void *c) { return PyLong_FromLong(s->twcc_id); }
static int Link_set_twcc_id(Link *s, PyObject *v, void *c) {
    /* one-byte header extensions: ids 1-14 */
    return set_twcc_id(&s->twcc_id, &s->sent, v, 14, "twcc_id");
}
static PyObject *Link_get_twcc_seq(Link *s, void *c) { return PyLong_FromUnsignedLong(s->twcc_seq); }
static int Link_set_twcc_seq(Link *s, PyObject *v, void *c) {
    long seq = v == NULL ? 0 : PyLong_AsLong(v);
    if (seq == -1 && PyErr_Occurred()) return -1;
    s->twcc_seq = (unsigned)(seq & 0xFFFF);
    return 0;
}

static PyObject *Link_twcc_stamp(Link *self, PyObject *args) {
    Py_ssize_t size;
    double now;
    if (!PyArg_ParseTuple(args, "nd", &size, &now)) return NULL;
    return PyLong_FromUnsignedLong(link_stamp(self, size < 0 ? 0 : (size_t)size, now));
}

static PyObject *Link_sent(Link *self, PyObject *arg) {
    long seq = PyLong_AsLong(arg);
    if (seq == -1 && PyErr_Occurred()) return NULL;
    seq &= 0xFFFF;
    if (self->sent == NULL || self->sent[seq % TWCC_RING].seq != (long long)seq) Py_RETURN_NONE;
    return Py_BuildValue("(dk)", self->sent[seq % TWCC_RING].time,
                         (unsigned long)self->sent[seq % TWCC_RING].size);
}

static int set_session(PyObject **slot, PyObject *value) {
    if (value == NULL || (value != Py_None && !PyObject_TypeCheck(value, &SessionType))) {
        PyErr_SetString(PyExc_TypeError, "expected a Session or None");
        return -1;
    }
    Py_XSETREF(*slot, Py_NewRef(value));
    return 0;
}
static PyObject *Link_get_rx(Link *s, void *c) { return Py_NewRef(s->rx); }
static int Link_set_rx(Link *s, PyObject *v, void *c) { return set_session(&s->rx, v); }
static PyObject *Link_get_tx(Link *s, void *c) { return Py_NewRef(s->tx); }
static int Link_set_tx(Link *s, PyObject *v, void *c) { return set_session(&s->tx, v); }

static PyObject *Link_get_destination(Link *self, void *c) {
    if (!self->has_dest) Py_RETURN_NONE;
    char host[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &self->dest.sin_addr, host, sizeof host);
    return Py_BuildValue("(si)", host, (int)ntohs(self->dest.sin_port));
}

static PyObject *Link_set_destination(Link *self, PyObject *args) {
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port)) return NULL;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    if (port < 0 || port > 0xFFFF || inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        self->has_dest = 0; /* not IPv4: Python sends (outgoing list) */
        Py_RETURN_FALSE;
    }
    sa.sin_port = htons((uint16_t)port);
    self->dest = sa;
    self->has_dest = 1;
    Py_RETURN_TRUE;
}

static PyObject *Link_clear_destination(Link *self, PyObject *unused) {
    self->has_dest = 0;
    Py_RETURN_NONE;
}

static PyMethodDef Link_methods[] = {
    {"set_destination", (PyCFunction)Link_set_destination, METH_VARARGS,
     "(host, port): send media here natively; False (and Python sends) if not IPv4"},
    {"clear_destination", (PyCFunction)Link_clear_destination, METH_NOARGS,
     "media for this link goes to Python (owner.send_rtp)"},
    {"twcc_stamp", (PyCFunction)Link_twcc_stamp, METH_VARARGS,
     "(size, now) -> the next transport-wide seq, remembered with its send time and size"},
    {"sent", (PyCFunction)Link_sent, METH_O, "transport-wide seq -> (send time, size) or None"},
    {"twcc_received", (PyCFunction)Link_twcc_received, METH_VARARGS,
     "(plain RTP, now): note its transport-wide seq's arrival (packets Python received)"},
    {"arrivals", (PyCFunction)Link_arrivals, METH_VARARGS,
     "(first, last) extended seqs -> [arrival time or None]"},
    {NULL}};

static PyGetSetDef Link_getset[] = {
    {"rx", (getter)Link_get_rx, (setter)Link_set_rx, "inbound Session or None", NULL},
    {"tx", (getter)Link_get_tx, (setter)Link_set_tx, "outbound Session or None", NULL},
    {"destination", (getter)Link_get_destination, NULL, "(host, port) or None", NULL},
    {"twcc_id", (getter)Link_get_twcc_id, (setter)Link_set_twcc_id,
     "transport-wide-cc extension id written on every packet, -1: none", NULL},
    {"twcc_seq", (getter)Link_get_twcc_seq, (setter)Link_set_twcc_seq,
     "the next transport-wide sequence number", NULL},
    {"rx_twcc_id", (getter)Link_get_rx_twcc_id, (setter)Link_set_rx_twcc_id,
     "transport-wide-cc id of the client's packets (their arrival is noted), -1: none", NULL},
    {NULL}};

static PyMemberDef Link_members[] = {
    {"owner", T_OBJECT_EX, offsetof(Link, owner), READONLY, "the Python transport"},
    {"sources", T_OBJECT_EX, offsetof(Link, sources), READONLY, "SSRC -> Source"},
    {"last_seen", T_DOUBLE, offsetof(Link, last_seen), 0, "time of the last valid packet"},
    {"rx_twcc_max", T_LONGLONG, offsetof(Link, rx_twcc_max), READONLY,
     "highest extended transport-wide seq received, -1: none"},
    {"rx_twcc_base", T_LONGLONG, offsetof(Link, rx_twcc_base), READONLY,
     "the first extended transport-wide seq received, -1: none"},
    {NULL}};

static PyTypeObject LinkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "visavis.sfu._fastpath.Link",
    .tp_basicsize = sizeof(Link),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Link(owner): one transport's SRTP sessions, destination and sources.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Link_init,
    .tp_dealloc = (destructor)Link_dealloc,
    .tp_traverse = (traverseproc)Link_traverse,
    .tp_clear = (inquiry)Link_clear,
    .tp_methods = Link_methods,
    .tp_getset = Link_getset,
    .tp_members = Link_members,
};

/* ------------------------------------------------------------------ Source, Sink */
typedef struct {
    PyObject_HEAD
    int index, audio_level_id;
    int quiet_above; /* muted audio: packets with a level above this (-dBov) are dropped; -1 off */
    int codec;       /* video: CODEC_* (how keyframes are found) */
    int dd_id;       /* dependency descriptor extension id, -1: none */
    DdStructure dd;  /* AV1: the template structure of the last keyframe (dd_info) */
    char is_video;
    PyObject *history; /* list or None */
    PyObject *sinks;   /* list of Sink */
    PyObject *on_level; /* callable(level, now) or None */
    long long base_seq; /* -1: none yet */
    long long max_seq, cycles, received, octets_window;
    double last_packet;
} Source;

static int Source_traverse(Source *self, visitproc visit, void *arg) {
    Py_VISIT(self->history);
    Py_VISIT(self->sinks);
    Py_VISIT(self->on_level);
    return 0;
}

static int Source_clear(Source *self) {
    Py_CLEAR(self->history);
    Py_CLEAR(self->sinks);
    Py_CLEAR(self->on_level);
    return 0;
}

static void Source_dealloc(Source *self) {
    PyObject_GC_UnTrack(self);
    Source_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Source_init(Source *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"index", "is_video", "audio_level_id", "history", "sinks",
                             "on_level", NULL};
    int index, is_video, audio_level_id;
    PyObject *history, *sinks, *on_level;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ipiOO!O", kwlist, &index, &is_video,
                                     &audio_level_id, &history, &PyList_Type, &sinks, &on_level))
        return -1;
    if (history != Py_None && (!PyList_Check(history) || PyList_GET_SIZE(history) == 0)) {
        PyErr_SetString(PyExc_TypeError, "history must be a non-empty list or None");
        return -1;
    }
    self->index = index;
    self->is_video = (char)(is_video != 0);
    self->audio_level_id = audio_level_id;
    Py_XSETREF(self->history, Py_NewRef(history));
    Py_XSETREF(self->sinks, Py_NewRef(sinks));
    Py_XSETREF(self->on_level, Py_NewRef(on_level));
    self->quiet_above = -1;
    self->codec = CODEC_VP8;
    self->dd_id = -1;
    self->dd.count = 0;
    self->base_seq = -1;
    self->max_seq = self->cycles = self->received = self->octets_window = 0;
    self->last_packet = -1e9;
    return 0;
}

static PyMemberDef Source_members[] = {
    {"index", T_INT, offsetof(Source, index), READONLY, "simulcast layer index"},
    {"is_video", T_BOOL, offsetof(Source, is_video), READONLY, "video (else audio)"},
    {"audio_level_id", T_INT, offsetof(Source, audio_level_id), 0, "extension id, -1 none"},
    {"quiet_above", T_INT, offsetof(Source, quiet_above), 0,
     "-1, or drop packets quieter than this level (-dBov): audio not among the loudest"},
    {"codec", T_INT, offsetof(Source, codec), 0, "video codec: 0 VP8, 1 VP9, 2 H.264, 3 AV1"},
    {"dd_id", T_INT, offsetof(Source, dd_id), 0, "dependency descriptor extension id, -1 none"},
    {"dd_templates", T_INT, offsetof(Source, dd.count), READONLY,
     "AV1: templates of the dependency descriptor structure in force, 0 none"},
    {"history", T_OBJECT_EX, offsetof(Source, history), READONLY, "NACK history or None"},
    {"sinks", T_OBJECT_EX, offsetof(Source, sinks), READONLY, "the consumers (shared list)"},
    {"on_level", T_OBJECT_EX, offsetof(Source, on_level), 0, "callable(level, now) or None"},
    {"base_seq", T_LONGLONG, offsetof(Source, base_seq), 0, "first seq seen, -1 none"},
    {"max_seq", T_LONGLONG, offsetof(Source, max_seq), 0, "highest seq seen"},
    {"cycles", T_LONGLONG, offsetof(Source, cycles), 0, "seq wraps << 16"},
    {"received", T_LONGLONG, offsetof(Source, received), 0, "packets received"},
    {"octets_window", T_LONGLONG, offsetof(Source, octets_window), 0, "bytes since reset"},
    {"last_packet", T_DOUBLE, offsetof(Source, last_packet), 0, "time of the last packet"},
    {NULL}};

static PyTypeObject SourceType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "visavis.sfu._fastpath.Source",
    .tp_basicsize = sizeof(Source),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Source(index, is_video, audio_level_id, history, sinks, on_level).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Source_init,
    .tp_dealloc = (destructor)Source_dealloc,
    .tp_traverse = (traverseproc)Source_traverse,
    .tp_clear = (inquiry)Source_clear,
    .tp_members = Source_members,
};

typedef struct {
    PyObject_HEAD
    Link *link;
    unsigned long ssrc;
    int pt, abs_send_time_id, audio_level_id;
    Rewriter *rewriter;
    Selector *selector;
    long long packets, octets;
    int spatial, spatial_target;   /* VP9/AV1 SVC: highest spatial layer forwarded / wanted (7: all) */
    int temporal, temporal_target; /* VP8/VP9/AV1: highest temporal layer forwarded / wanted */
    int dd_id; /* AV1: the dependency descriptor goes along with this id, -1: not sent */
} Sink;

static int Sink_traverse(Sink *self, visitproc visit, void *arg) {
    Py_VISIT(self->link);
    Py_VISIT(self->rewriter);
    Py_VISIT(self->selector);
    return 0;
}

static int Sink_clear(Sink *self) {
    Py_CLEAR(self->link);
    Py_CLEAR(self->rewriter);
    Py_CLEAR(self->selector);
    return 0;
}

static void Sink_dealloc(Sink *self) {
    PyObject_GC_UnTrack(self);
    Sink_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int Sink_init(Sink *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"link", "ssrc", "pt", "abs_send_time_id", "audio_level_id",
                             "rewriter", "selector", NULL};
    PyObject *link, *rewriter, *selector;
    unsigned long ssrc;
    int pt, abs_id, level_id;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!kiiiO!O!", kwlist, &LinkType, &link, &ssrc,
                                     &pt, &abs_id, &level_id, &RewriterType, &rewriter,
                                     &SelectorType, &selector))
        return -1;
    Py_XSETREF(self->link, (Link *)Py_NewRef(link));
    Py_XSETREF(self->rewriter, (Rewriter *)Py_NewRef(rewriter));
    Py_XSETREF(self->selector, (Selector *)Py_NewRef(selector));
    self->ssrc = ssrc & 0xFFFFFFFFUL;
    self->pt = pt & 0x7F;
    self->abs_send_time_id = abs_id;
    self->audio_level_id = level_id;
    self->packets = self->octets = 0;
    self->spatial = self->spatial_target = 7;
    self->temporal = self->temporal_target = 7;
    self->dd_id = -1;
    return 0;
}

static PyMemberDef Sink_members[] = {
    {"link", T_OBJECT_EX, offsetof(Sink, link), READONLY, "the subscriber's Link"},
    {"ssrc", T_ULONG, offsetof(Sink, ssrc), READONLY, "SSRC towards the subscriber"},
    {"pt", T_INT, offsetof(Sink, pt), READONLY, "payload type towards the subscriber"},
    {"abs_send_time_id", T_INT, offsetof(Sink, abs_send_time_id), READONLY, "-1: none"},
    {"audio_level_id", T_INT, offsetof(Sink, audio_level_id), READONLY, "-1: none"},
    {"rewriter", T_OBJECT_EX, offsetof(Sink, rewriter), READONLY, "sequence rewriter"},
    {"selector", T_OBJECT_EX, offsetof(Sink, selector), READONLY, "simulcast selector"},
    {"packets", T_LONGLONG, offsetof(Sink, packets), 0, "packets forwarded"},
    {"octets", T_LONGLONG, offsetof(Sink, octets), 0, "payload bytes forwarded"},
    {"spatial", T_INT, offsetof(Sink, spatial), 0, "VP9/AV1 SVC: highest spatial layer forwarded"},
    {"spatial_target", T_INT, offsetof(Sink, spatial_target), 0,
     "VP9/AV1 SVC: highest spatial layer wanted (7: all); up on a keyframe, down on a picture"},
    {"temporal", T_INT, offsetof(Sink, temporal), 0, "VP8/VP9/AV1: highest temporal layer forwarded"},
    {"temporal_target", T_INT, offsetof(Sink, temporal_target), 0,
     "VP8/VP9/AV1: highest temporal layer wanted (7: all); up on a keyframe, down on a picture"},
    {"dd_id", T_INT, offsetof(Sink, dd_id), 0,
     "AV1: send the dependency descriptor with this extension id (two-byte elements), -1 not"},
    {NULL}};

static PyTypeObject SinkType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "visavis.sfu._fastpath.Sink",
    .tp_basicsize = sizeof(Sink),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Sink(link, ssrc, pt, abs_send_time_id, audio_level_id, rewriter, selector).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Sink_init,
    .tp_dealloc = (destructor)Sink_dealloc,
    .tp_traverse = (traverseproc)Sink_traverse,
    .tp_clear = (inquiry)Sink_clear,
    .tp_members = Sink_members,
};

/* ------------------------------------------------------------------ Forwarder */
typedef struct {
    long long packets_in, forwarded, bytes, srtp_auth, malformed, send_failed, garbage;
    long long segmented; /* datagrams sent inside a segmented send (several per message) */
} Tally;

typedef struct {
    PyObject_HEAD
    PyObject *sock; /* or None: no socket (forward() only; every send goes to Python) */
    int fd;
    PyObject *links; /* dict: link key -> Link */
    PyObject *stats; /* SfuStats */
    PyObject *on_slow;
    unsigned char (*rbufs)[RECVSZ];
    struct mmsghdr *rmsgs;
    struct iovec *riovs;
    struct sockaddr_storage *raddrs;
    unsigned char (*obufs)[OUTSZ];
    struct mmsghdr *omsgs;
    struct iovec *oiovs;
    struct sockaddr_in *oaddrs;
    int nout;
    /* the same datagrams grouped per subscriber for segmented sends (GSO) */
    struct mmsghdr *gmsgs;
    struct iovec *giovs;
    unsigned char (*gctl)[CMSG_SPACE(sizeof(uint16_t))];
    int *gsegs;          /* datagrams in each grouped message */
    unsigned char *used; /* datagram i is already in a group */
    int gso;             /* 1: group (the default where the kernel has UDP_SEGMENT) */
    PyObject *outgoing; /* list being built during a call, or NULL */
    Tally tally;
} Forwarder;

static int Forwarder_traverse(Forwarder *self, visitproc visit, void *arg) {
    Py_VISIT(self->sock);
    Py_VISIT(self->links);
    Py_VISIT(self->stats);
    Py_VISIT(self->on_slow);
    return 0;
}

static int Forwarder_clear(Forwarder *self) {
    Py_CLEAR(self->sock);
    Py_CLEAR(self->links);
    Py_CLEAR(self->stats);
    Py_CLEAR(self->on_slow);
    Py_CLEAR(self->outgoing);
    return 0;
}

static void Forwarder_dealloc(Forwarder *self) {
    PyObject_GC_UnTrack(self);
    Forwarder_clear(self);
    PyMem_Free(self->rbufs);
    PyMem_Free(self->rmsgs);
    PyMem_Free(self->riovs);
    PyMem_Free(self->raddrs);
    PyMem_Free(self->obufs);
    PyMem_Free(self->omsgs);
    PyMem_Free(self->oiovs);
    PyMem_Free(self->oaddrs);
    PyMem_Free(self->gmsgs);
    PyMem_Free(self->giovs);
    PyMem_Free(self->gctl);
    PyMem_Free(self->gsegs);
    PyMem_Free(self->used);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void reset_rmsgs(Forwarder *f, int n) {
    for (int i = 0; i < n; i++) {
        f->rmsgs[i].msg_hdr.msg_namelen = sizeof f->raddrs[i];
        f->rmsgs[i].msg_hdr.msg_flags = 0;
    }
}

/* Whether the kernel knows UDP_SEGMENT on this socket (Linux >= 4.18). */
static int udp_segment_supported(int fd) {
    int zero = 0;
    return setsockopt(fd, SOL_UDP, UDP_SEGMENT, &zero, sizeof zero) == 0;
}

static int Forwarder_init(Forwarder *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"sock", "links", "stats", "on_slow", NULL};
    PyObject *sock, *links, *stats, *on_slow;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!OO", kwlist, &sock, &PyDict_Type, &links,
                                     &stats, &on_slow))
        return -1;
    int fd = -1;
    if (sock != Py_None) {
        fd = PyObject_AsFileDescriptor(sock);
        if (fd < 0) return -1;
    }
    if (self->rbufs == NULL) {
        self->rbufs = PyMem_Calloc(VLEN, RECVSZ);
        self->rmsgs = PyMem_Calloc(VLEN, sizeof(struct mmsghdr));
        self->riovs = PyMem_Calloc(VLEN, sizeof(struct iovec));
        self->raddrs = PyMem_Calloc(VLEN, sizeof(struct sockaddr_storage));
        self->obufs = PyMem_Calloc(OUTN, OUTSZ);
        self->omsgs = PyMem_Calloc(OUTN, sizeof(struct mmsghdr));
        self->oiovs = PyMem_Calloc(OUTN, sizeof(struct iovec));
        self->oaddrs = PyMem_Calloc(OUTN, sizeof(struct sockaddr_in));
        self->gmsgs = PyMem_Calloc(OUTN, sizeof(struct mmsghdr));
        self->giovs = PyMem_Calloc(OUTN, sizeof(struct iovec));
        self->gctl = PyMem_Calloc(OUTN, sizeof *self->gctl);
        self->gsegs = PyMem_Calloc(OUTN, sizeof(int));
        self->used = PyMem_Calloc(OUTN, 1);
        if (!self->rbufs || !self->rmsgs || !self->riovs || !self->raddrs || !self->obufs ||
            !self->omsgs || !self->oiovs || !self->oaddrs || !self->gmsgs || !self->giovs ||
            !self->gctl || !self->gsegs || !self->used) {
            PyErr_NoMemory();
            return -1;
        }
        for (int i = 0; i < VLEN; i++) {
            self->riovs[i].iov_base = self->rbufs[i];
            self->riovs[i].iov_len = RECVSZ;
            self->rmsgs[i].msg_hdr.msg_name = &self->raddrs[i];
            self->rmsgs[i].msg_hdr.msg_iov = &self->riovs[i];
            self->rmsgs[i].msg_hdr.msg_iovlen = 1;
        }
        reset_rmsgs(self, VLEN);
        for (int i = 0; i < OUTN; i++) {
            self->oiovs[i].iov_base = self->obufs[i];
            self->omsgs[i].msg_hdr.msg_name = &self->oaddrs[i];
            self->omsgs[i].msg_hdr.msg_namelen = sizeof(struct sockaddr_in);
            self->omsgs[i].msg_hdr.msg_iov = &self->oiovs[i];
            self->omsgs[i].msg_hdr.msg_iovlen = 1;
        }
    }
    Py_XSETREF(self->sock, Py_NewRef(sock));
    self->fd = fd;
    Py_XSETREF(self->links, Py_NewRef(links));
    Py_XSETREF(self->stats, Py_NewRef(stats));
    Py_XSETREF(self->on_slow, Py_NewRef(on_slow));
    self->nout = 0;
    self->gso = fd >= 0 && udp_segment_supported(fd);
    memset(&self->tally, 0, sizeof self->tally);
    return 0;
}

static inline int same_dest(const struct sockaddr_in *a, const struct sockaddr_in *b) {
    return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
}

/* Send one datagram of a group alone (a route that cannot segment). */
static void send_alone(Forwarder *f, const struct msghdr *h, const struct iovec *iov) {
    while (sendto(f->fd, iov->iov_base, iov->iov_len, MSG_DONTWAIT, h->msg_name,
                  h->msg_namelen) < 0) {
        if (errno == EINTR) continue;
        f->tally.send_failed++;
        return;
    }
}

/* sendmmsg `n` messages; a message that fails loses its datagrams (a full buffer, an ICMP
 * error: media that cannot leave now is stale when it could), except that a segmented
 * send the route refuses (EMSGSIZE: a segment above its MTU; EIO: no checksum offload;
 * EINVAL) is sent datagram by datagram
 * and segmentation is turned off for this forwarder. */
static void send_all(Forwarder *f, struct mmsghdr *m, int n, const int *segs) {
    int done = 0;
    while (done < n) {
        int r = sendmmsg(f->fd, m + done, (unsigned)(n - done), MSG_DONTWAIT);
        if (r >= 0) {
            for (int i = done; i < done + r; i++)
                if (segs[i] > 1) f->tally.segmented += segs[i];
            done += r;
            continue;
        }
        if (errno == EINTR) continue;
        struct msghdr *h = &m[done].msg_hdr;
        if (segs[done] > 1 && (errno == EIO || errno == EINVAL || errno == EMSGSIZE)) {
            f->gso = 0;
            for (size_t k = 0; k < h->msg_iovlen; k++) send_alone(f, h, &h->msg_iov[k]);
        } else {
            f->tally.send_failed += segs[done];
        }
        done++;
    }
}

/* Send what forward_one queued. With segmentation, the datagrams to one subscriber are
 * taken in their order while they have the size of the group's first (a shorter one ends
 * the group, a longer one starts the next): one send, one route lookup and one pass down
 * the stack for up to 64 datagrams, which the receiver gets exactly as if sent one by one.
 * The order between subscribers changes; the order to each does not. */
static void flush(Forwarder *f) {
    int n = f->nout;
    f->nout = 0;
    if (n == 0) return;
    if (!f->gso) {
        static const int ones[OUTN] = {[0 ... OUTN - 1] = 1};
        send_all(f, f->omsgs, n, ones);
        return;
    }
    memset(f->used, 0, (size_t)n);
    int nm = 0, ni = 0;
    for (int i = 0; i < n; i++) {
        if (f->used[i]) continue;
        size_t seg = f->oiovs[i].iov_len, total = seg;
        struct iovec *first = &f->giovs[ni];
        f->giovs[ni++] = f->oiovs[i];
        int count = 1;
        for (int j = i + 1; seg <= GSO_SEG_MAX && j < n && count < GSO_SEGS; j++) {
            if (f->used[j] || !same_dest(&f->oaddrs[i], &f->oaddrs[j])) continue;
            size_t len = f->oiovs[j].iov_len;
            if (len > seg || total + len > GSO_BYTES) break;
            f->used[j] = 1;
            f->giovs[ni++] = f->oiovs[j];
            count++;
            total += len;
            if (len < seg) break;
        }
        struct msghdr *h = &f->gmsgs[nm].msg_hdr;
        h->msg_name = &f->oaddrs[i];
        h->msg_namelen = sizeof(struct sockaddr_in);
        h->msg_iov = first;
        h->msg_iovlen = (size_t)count;
        h->msg_control = NULL;
        h->msg_controllen = 0;
        h->msg_flags = 0;
        if (count > 1) {
            h->msg_control = f->gctl[nm];
            h->msg_controllen = sizeof f->gctl[nm];
            struct cmsghdr *c = CMSG_FIRSTHDR(h);
            c->cmsg_level = SOL_UDP;
            c->cmsg_type = UDP_SEGMENT;
            c->cmsg_len = CMSG_LEN(sizeof(uint16_t));
            uint16_t size = (uint16_t)seg;
            memcpy(CMSG_DATA(c), &size, sizeof size);
        }
        f->gsegs[nm++] = count;
    }
    send_all(f, f->gmsgs, nm, f->gsegs);
}

/* An extension element's header: one-byte (id << 4 | length - 1) or two-byte (id,
 * length) form; returns its size. */
static size_t ext_element(unsigned char *e, int two, int id, size_t n) {
    if (!two) {
        e[0] = (unsigned char)((id << 4) | (int)(n - 1));
        return 1;
    }
    e[0] = (unsigned char)id;
    e[1] = (unsigned char)n;
    return 2;
}

static int push_pair(PyObject **list, PyObject *a, const unsigned char *data, size_t len) {
    if (*list == NULL && (*list = PyList_New(0)) == NULL) return -1;
    PyObject *b = PyBytes_FromStringAndSize((const char *)data, (Py_ssize_t)len);
    if (b == NULL) return -1;
    PyObject *item = PyTuple_Pack(2, a, b);
    Py_DECREF(b);
    if (item == NULL) return -1;
    int rc = PyList_Append(*list, item);
    Py_DECREF(item);
    return rc;
}

/* The whole per-packet forwarding of one decrypted RTP packet of `src` (as
 * visavis.sfu._fastpath_py.Forwarder.forward). -1 on a Python error. */
static int forward_one(Forwarder *f, Source *src, const unsigned char *d, size_t size,
                       double now) {
    unsigned seq = u16(d + 2);
    uint32_t ts = u32(d + 4);
    if (src->base_seq < 0) {
        src->base_seq = src->max_seq = seq;
    } else {
        unsigned delta = (seq - (unsigned)src->max_seq) & 0xFFFF;
        if (delta > 0 && delta < 0x8000) {
            if (seq < (unsigned)src->max_seq) src->cycles += 1 << 16;
            src->max_seq = seq;
        }
    }
    src->received++;
    src->octets_window += (long long)size;
    src->last_packet = now;
    long offset = payload_offset(d, size);
    if (offset < 0) {
        f->tally.malformed++;
        return 0;
    }
    int li_state = 0; /* layer info: 0 not parsed yet, 1 parsed, -1 unknown or truncated */
    LayerInfo li = {0, 0, 0, 0, 0};
    size_t ddlen = 0;
    const unsigned char *dd = src->dd_id >= 0 ? find_extension(d, size, src->dd_id, &ddlen) : NULL;
    if (dd != NULL && src->codec == CODEC_AV1) {
        /* AV1's layers come from the dependency descriptor, which keeps the source's
         * template structure up to date; a malformed one drops the packet. */
        li_state = dd_info(dd, ddlen, &src->dd, &li);
        if (li_state < 0) {
            f->tally.malformed++;
            return 0;
        }
        if (li_state == 0) li_state = -1;
    }
    if (src->history != Py_None) {
        Py_ssize_t slots = PyList_GET_SIZE(src->history);
        PyObject *copy = PyBytes_FromStringAndSize((const char *)d, (Py_ssize_t)size);
        if (copy == NULL) return -1;
        PyList_SetItem(src->history, (Py_ssize_t)(seq % (unsigned)slots), copy);
    }
    int level = -1;
    if (src->audio_level_id >= 0) {
        size_t vlen = 0;
        const unsigned char *v = find_extension(d, size, src->audio_level_id, &vlen);
        if (v != NULL && vlen > 0) {
            level = v[0];
            if (src->on_level != Py_None) {
                PyObject *r = PyObject_CallFunction(src->on_level, "id", level & 0x7F, now);
                if (r == NULL) return -1;
                Py_DECREF(r);
            }
        }
    }
    if (src->quiet_above >= 0 && (level < 0 || (level & 0x7F) > src->quiet_above)) return 0;
    const unsigned char *payload = d + offset;
    size_t plen = size - (size_t)offset;
    unsigned flags = 0x80 | (d[0] & 0x20);
    unsigned marker = d[1] & 0x80;
    int keyframe = -1;
    int index = src->index;
    uint32_t abs = (uint32_t)((unsigned long long)(now * 262144.0) & 0xFFFFFF);
    PyObject *sinks = src->sinks;
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(sinks); k++) {
        PyObject *item = PyList_GET_ITEM(sinks, k);
        if (!PyObject_TypeCheck(item, &SinkType)) continue;
        Sink *sink = (Sink *)item;
        if (src->is_video) {
            Selector *sel = sink->selector;
            if (!(index == sel->current && sel->current == sel->target)) {
                if (keyframe < 0) keyframe = is_keyframe(src->codec, payload, plen, dd, ddlen);
                int dec = sel_decide(sel, index, keyframe);
                if (dec == DROP) continue;
                if (dec == SWITCH) {
                    sink->rewriter->pending = 1;
                    sink->rewriter->pending_tag = index;
                }
            }
        }
        unsigned mark = marker;
        if (src->codec != CODEC_H264 &&
            (sink->spatial < 7 || sink->spatial_target < 7 || sink->temporal < 7 ||
             sink->temporal_target < 7)) {
            /* Layer limits (VP9/AV1 SVC spatial layers, VP8/VP9/AV1 temporal layers): they
             * go down at a picture start, up at a keyframe; packets above them are not
             * forwarded (the rewriter closes the gap); the last forwarded spatial layer
             * ends the picture. AV1's were read from the descriptor above. */
            if (li_state == 0)
                li_state = src->codec != CODEC_AV1 &&
                                   (src->codec == CODEC_VP9 ? vp9_info : vp8_info)(payload,
                                                                                  plen, &li)
                               ? 1
                               : -1;
            if (li_state > 0) {
                if (li.start) {
                    if (sink->spatial_target < sink->spatial || li.intra)
                        sink->spatial = sink->spatial_target;
                    if (sink->temporal_target < sink->temporal || li.intra)
                        sink->temporal = sink->temporal_target;
                }
                if (li.sid > sink->spatial || li.tid > sink->temporal) {
                    rw_skip(sink->rewriter, seq);
                    continue;
                }
                if (li.end && li.sid == sink->spatial) mark = 0x80;
            }
        }
        unsigned os;
        uint32_t ot;
        if (!rw_rewrite(sink->rewriter, seq, ts, now, &os, &ot)) continue;
        Link *link = sink->link;
        int native = f->fd >= 0 && link->has_dest;
        if (native && f->nout == OUTN) flush(f);
        unsigned char tmp[OUTSZ];
        unsigned char *out = native ? f->obufs[f->nout] : tmp;
        /* Extension elements: abs-send-time or audio level, then the transport-wide
         * sequence number, then (AV1) the dependency descriptor; zero padding to 32 bits.
         * One-byte elements, or two-byte ones (RFC 8285 s4.3) in a packet that carries
         * the descriptor, which may be longer than 16 bytes. */
        int two = sink->dd_id >= 0 && dd != NULL;
        unsigned char *e = out + 16;
        size_t elen = 0, twcc_at = 0;
        if (sink->abs_send_time_id >= 0) {
            elen += ext_element(e + elen, two, sink->abs_send_time_id, 3);
            e[elen] = (unsigned char)(abs >> 16);
            e[elen + 1] = (unsigned char)(abs >> 8);
            e[elen + 2] = (unsigned char)abs;
            elen += 3;
        } else if (sink->audio_level_id >= 0 && level >= 0) {
            elen += ext_element(e + elen, two, sink->audio_level_id, 1);
            e[elen++] = (unsigned char)level;
        }
        if (link->twcc_id >= 0) {
            elen += ext_element(e + elen, two, link->twcc_id, 2);
            twcc_at = elen;
            elen += 2;
        }
        if (two) {
            elen += ext_element(e + elen, two, sink->dd_id, ddlen);
            memcpy(e + elen, dd, ddlen);
            elen += ddlen;
        }
        size_t hlen = 12;
        unsigned fl = flags;
        if (elen) {
            while (elen % 4) e[elen++] = 0;
            fl |= 0x10;
            out[12] = two ? 0x10 : 0xBE, out[13] = two ? 0x00 : 0xDE;
            put16(out + 14, (unsigned)(elen / 4));
            hlen = 16 + elen;
        }
        out[0] = (unsigned char)fl;
        out[1] = (unsigned char)(mark | (unsigned)sink->pt);
        put16(out + 2, os);
        put32(out + 4, ot);
        put32(out + 8, (uint32_t)sink->ssrc);
        if (hlen + plen > RECVSZ + 64) { /* cannot happen: payload <= RECVSZ - 12 */
            f->tally.malformed++;
            continue;
        }
        if (twcc_at) put16(e + twcc_at, link_stamp(link, hlen + plen, now));
        memcpy(out + hlen, payload, plen);
        int len = (int)(hlen + plen);
        if (native) {
            if (link->tx != Py_None) {
                if (vv_srtp_protect(((Session *)link->tx)->srtp, out, &len) == VV_SRTP_OK) {
                    f->oiovs[f->nout].iov_len = (size_t)len;
                    f->oaddrs[f->nout] = link->dest;
                    f->nout++;
                } else {
                    f->tally.send_failed++;
                }
            }
        } else if (push_pair(&f->outgoing, (PyObject *)link, out, (size_t)len) < 0) {
            return -1;
        }
        sink->packets++;
        sink->octets += (long long)plen;
        f->tally.forwarded++;
        f->tally.bytes += (long long)(hlen + plen);
    }
    return 0;
}

static int add_attr(PyObject *obj, const char *name, long long n) {
    if (n == 0) return 0;
    PyObject *v = PyObject_GetAttrString(obj, name);
    if (v == NULL) return -1;
    PyObject *d = PyLong_FromLongLong(n);
    if (d == NULL) {
        Py_DECREF(v);
        return -1;
    }
    PyObject *s = PyNumber_Add(v, d);
    Py_DECREF(v);
    Py_DECREF(d);
    if (s == NULL) return -1;
    int rc = PyObject_SetAttrString(obj, name, s);
    Py_DECREF(s);
    return rc;
}

static int add_drop(PyObject *stats, const char *reason, long long n) {
    if (n == 0) return 0;
    PyObject *r = PyObject_CallMethod(stats, "drop", "sL", reason, n);
    if (r == NULL) return -1;
    Py_DECREF(r);
    return 0;
}

/* Fold this call's counts into the SfuStats object. */
static int fold(Forwarder *f) {
    Tally t = f->tally;
    memset(&f->tally, 0, sizeof f->tally);
    PyObject *s = f->stats;
    if (add_attr(s, "packets_in", t.packets_in) < 0 ||
        add_attr(s, "packets_forwarded", t.forwarded) < 0 ||
        add_attr(s, "bytes_forwarded", t.bytes) < 0 ||
        add_drop(s, "srtp_auth", t.srtp_auth) < 0 ||
        add_drop(s, "malformed_rtp", t.malformed) < 0 ||
        add_attr(s, "segmented_datagrams", t.segmented) < 0 ||
        add_drop(s, "send_failed", t.send_failed) < 0 || add_drop(s, "garbage", t.garbage) < 0)
        return -1;
    return 0;
}

/* Flush, fold the counters, hand the rest to Python. Steals raw/received. */
static PyObject *finish(Forwarder *f, PyObject *raw, PyObject *received, double now, int ok) {
    if (f->fd >= 0) flush(f);
    PyObject *outgoing = f->outgoing;
    f->outgoing = NULL;
    if (!ok || fold(f) < 0) {
        Py_XDECREF(raw);
        Py_XDECREF(received);
        Py_XDECREF(outgoing);
        return NULL;
    }
    if (raw == NULL && received == NULL && outgoing == NULL) Py_RETURN_NONE;
    PyObject *t = PyFloat_FromDouble(now);
    PyObject *res = NULL;
    if (t != NULL) {
        PyObject *args[4] = {raw ? raw : Py_None, received ? received : Py_None,
                             outgoing ? outgoing : Py_None, t};
        res = PyObject_Vectorcall(f->on_slow, args, 4, NULL);
        Py_DECREF(t);
    }
    Py_XDECREF(raw);
    Py_XDECREF(received);
    Py_XDECREF(outgoing);
    return res;
}

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

static int push_raw(PyObject **raw, const unsigned char *data, size_t len,
                    const struct sockaddr_storage *ss) {
    if (*raw == NULL && (*raw = PyList_New(0)) == NULL) return -1;
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
    int rc = PyList_Append(*raw, item);
    Py_DECREF(item);
    return rc;
}

static inline Link *lookup_link(PyObject *links, const struct sockaddr_storage *ss) {
    if (ss->ss_family != AF_INET) return NULL;
    const struct sockaddr_in *sa = (const struct sockaddr_in *)ss;
    unsigned long long key =
        (unsigned long long)ntohl(sa->sin_addr.s_addr) << 16 | ntohs(sa->sin_port);
    PyObject *k = PyLong_FromUnsignedLongLong(key);
    if (k == NULL) return NULL;
    PyObject *l = PyDict_GetItemWithError(links, k);
    Py_DECREF(k);
    if (l == NULL || !PyObject_TypeCheck(l, &LinkType)) return NULL;
    return (Link *)l;
}

static PyObject *Forwarder_drain(Forwarder *self, PyObject *const *args, Py_ssize_t nargs) {
    double now = -1.0;
    long budget = 256;
    if (nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "drain(now=-1.0, budget=256)");
        return NULL;
    }
    if (nargs >= 1) {
        now = PyFloat_AsDouble(args[0]);
        if (now == -1.0 && PyErr_Occurred()) return NULL;
    }
    if (nargs == 2) {
        budget = PyLong_AsLong(args[1]);
        if (budget == -1 && PyErr_Occurred()) return NULL;
    }
    if (self->fd < 0) {
        PyErr_SetString(PyExc_ValueError, "no socket");
        return NULL;
    }
    if (now < 0) now = monotonic_now();
    PyObject *raw = NULL, *received = NULL;
    long total = 0;
    int ok = 1;
    while (total < budget && ok) {
        int want = budget - total > VLEN ? VLEN : (int)(budget - total);
        int n;
        for (;;) {
            n = recvmmsg(self->fd, self->rmsgs, (unsigned)want, MSG_DONTWAIT, NULL);
            if (n >= 0 || errno != EINTR) break;
        }
        if (n <= 0) break;
        for (int i = 0; i < n && ok; i++) {
            unsigned char *p = self->rbufs[i];
            size_t len = self->rmsgs[i].msg_len;
            if (self->rmsgs[i].msg_hdr.msg_flags & MSG_TRUNC || len == 0) {
                self->tally.garbage++;
                continue;
            }
            if (p[0] > 127 && p[0] < 192 && len >= 2 && !(p[1] >= 192 && p[1] <= 223)) {
                Link *link = lookup_link(self->links, &self->raddrs[i]);
                if (link == NULL && PyErr_Occurred()) {
                    ok = 0;
                    break;
                }
                if (link != NULL && link->rx != Py_None) {
                    int plen = (int)len;
                    if (vv_srtp_unprotect(((Session *)link->rx)->srtp, p, &plen) !=
                        VV_SRTP_OK) {
                        self->tally.srtp_auth++;
                        continue;
                    }
                    link->last_seen = now;
                    self->tally.packets_in++;
                    if (plen < 12) {
                        self->tally.malformed++;
                        continue;
                    }
                    if (link->rx_twcc_id >= 0) link_note(link, p, (size_t)plen, now);
                    PyObject *k = PyLong_FromUnsignedLong(u32(p + 8));
                    if (k == NULL) {
                        ok = 0;
                        break;
                    }
                    PyObject *src = PyDict_GetItemWithError(link->sources, k);
                    Py_DECREF(k);
                    if (src != NULL && PyObject_TypeCheck(src, &SourceType)) {
                        Py_INCREF(src);
                        if (forward_one(self, (Source *)src, p, (size_t)plen, now) < 0) ok = 0;
                        Py_DECREF(src);
                    } else if (PyErr_Occurred()) {
                        ok = 0;
                    } else if (push_pair(&received, (PyObject *)link, p, (size_t)plen) < 0) {
                        ok = 0;
                    }
                    continue;
                }
            }
            if (push_raw(&raw, p, len, &self->raddrs[i]) < 0) ok = 0;
        }
        reset_rmsgs(self, n);
        total += n;
        if (n < want) break;
    }
    if (!ok) reset_rmsgs(self, VLEN);
    return finish(self, raw, received, now, ok);
}

static PyObject *Forwarder_forward(Forwarder *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3 || !PyObject_TypeCheck(args[0], &SourceType)) {
        PyErr_SetString(PyExc_TypeError, "forward(source, plain, now)");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[2]);
    if (now == -1.0 && PyErr_Occurred()) return NULL;
    Py_buffer b;
    if (PyObject_GetBuffer(args[1], &b, PyBUF_SIMPLE) < 0) return NULL;
    int ok = 1;
    if (b.len < 12) {
        self->tally.malformed++;
    } else if (b.len > RECVSZ) {
        self->tally.garbage++;
    } else {
        ok = forward_one(self, (Source *)args[0], b.buf, (size_t)b.len, now) == 0;
    }
    PyBuffer_Release(&b);
    return finish(self, NULL, NULL, now, ok);
}

static PyMemberDef Forwarder_members[] = {
    {"gso", T_INT, offsetof(Forwarder, gso), 0,
     "1: datagrams to one subscriber leave in segmented sends (UDP_SEGMENT); set 0 to send "
     "each alone (turned off by itself where the route refuses)"},
    {NULL}};

static PyMethodDef Forwarder_methods[] = {
    {"drain", (PyCFunction)(void (*)(void))Forwarder_drain, METH_FASTCALL,
     "drain(now=-1.0, budget=256): read the socket, forward, hand the rest to on_slow"},
    {"forward", (PyCFunction)(void (*)(void))Forwarder_forward, METH_FASTCALL,
     "forward(source, plain, now): forward one decrypted RTP packet"},
    {NULL}};

static PyTypeObject ForwarderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "visavis.sfu._fastpath.Forwarder",
    .tp_basicsize = sizeof(Forwarder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Forwarder(sock, links, stats, on_slow): the media port's per-packet path.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Forwarder_init,
    .tp_dealloc = (destructor)Forwarder_dealloc,
    .tp_traverse = (traverseproc)Forwarder_traverse,
    .tp_clear = (inquiry)Forwarder_clear,
    .tp_methods = Forwarder_methods,
    .tp_members = Forwarder_members,
};

/* ------------------------------------------------------------------ module */
static PyObject *link_key(PyObject *mod, PyObject *args) {
    const char *host;
    int port;
    if (!PyArg_ParseTuple(args, "si", &host, &port)) return NULL;
    struct in_addr a;
    if (port < 0 || port > 0xFFFF || inet_pton(AF_INET, host, &a) != 1) Py_RETURN_NONE;
    return PyLong_FromUnsignedLongLong((unsigned long long)ntohl(a.s_addr) << 16 |
                                       (unsigned)port);
}

static PyObject *py_is_vp8_keyframe(PyObject *mod, PyObject *arg) {
    Py_buffer b;
    if (PyObject_GetBuffer(arg, &b, PyBUF_SIMPLE) < 0) return NULL;
    int k = is_vp8_keyframe(b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyBool_FromLong(k);
}

static PyObject *py_is_keyframe(PyObject *mod, PyObject *args) {
    int codec;
    Py_buffer b, dd = {0};
    PyObject *ddobj = Py_None;
    if (!PyArg_ParseTuple(args, "iy*|O", &codec, &b, &ddobj)) return NULL;
    if (ddobj != Py_None && PyObject_GetBuffer(ddobj, &dd, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&b);
        return NULL;
    }
    int k = is_keyframe(codec, b.buf, (size_t)b.len, ddobj != Py_None ? dd.buf : NULL,
                        ddobj != Py_None ? (size_t)dd.len : 0);
    if (ddobj != Py_None) PyBuffer_Release(&dd);
    PyBuffer_Release(&b);
    return PyBool_FromLong(k);
}

static PyObject *py_srtp_kdf(PyObject *mod, PyObject *args) {
    Py_buffer key, salt;
    int label, length;
    if (!PyArg_ParseTuple(args, "y*y*ii", &key, &salt, &label, &length)) return NULL;
    unsigned char out[64];
    int rc = key.len == 16 && salt.len <= 14 && length >= 0 && length <= 64
                 ? vv_srtp_kdf(key.buf, salt.buf, (int)salt.len, label, out, length)
                 : VV_SRTP_BAD_PARAM;
    PyBuffer_Release(&key);
    PyBuffer_Release(&salt);
    if (rc != VV_SRTP_OK) {
        PyErr_SetString(PyExc_ValueError, "srtp_kdf(key[16], salt[<=14], label, length<=64)");
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)out, length);
}

static PyMethodDef methods[] = {
    {"link_key", link_key, METH_VARARGS, "link_key(host, port) -> dict key, None if not IPv4"},
    {"is_vp8_keyframe", py_is_vp8_keyframe, METH_O, "the native VP8 keyframe test"},
    {"is_keyframe", py_is_keyframe, METH_VARARGS,
     "is_keyframe(codec, payload, dependency_descriptor=None): the native keyframe test"},
    {"srtp_kdf", py_srtp_kdf, METH_VARARGS,
     "srtp_kdf(master_key, master_salt, label, length): the RFC 3711 AES-CM PRF (tests)"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef moduledef = {PyModuleDef_HEAD_INIT, "_fastpath",
                                       "Native forwarding path of the SFU.", -1, methods};

PyMODINIT_FUNC PyInit__fastpath(void) {
    PyTypeObject *types[] = {&SessionType, &RewriterType, &SelectorType, &LinkType,
                             &SourceType,  &SinkType,     &ForwarderType};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyType_Ready(types[i]) < 0) return NULL;
    PyObject *simulcast = PyImport_ImportModule("visavis.sfu.simulcast");
    if (simulcast == NULL) return NULL;
    PyObject *decision = PyObject_GetAttrString(simulcast, "Decision");
    Py_DECREF(simulcast);
    if (decision == NULL) return NULL;
    DecisionDrop = PyObject_GetAttrString(decision, "DROP");
    DecisionForward = PyObject_GetAttrString(decision, "FORWARD");
    DecisionSwitch = PyObject_GetAttrString(decision, "SWITCH");
    Py_DECREF(decision);
    if (!DecisionDrop || !DecisionForward || !DecisionSwitch) return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL) return NULL;
    SrtpError = PyErr_NewException("visavis.sfu._fastpath.SrtpError", NULL, NULL);
    if (SrtpError == NULL || PyModule_AddObject(m, "SrtpError", Py_NewRef(SrtpError)) < 0)
        goto fail;
    const char *names[] = {"Session", "Rewriter", "Selector", "Link",
                           "Source",  "Sink",     "Forwarder"};
    for (size_t i = 0; i < sizeof types / sizeof *types; i++)
        if (PyModule_AddObject(m, names[i], Py_NewRef((PyObject *)types[i])) < 0) goto fail;
    if (PyModule_AddIntConstant(m, "NATIVE", 1) < 0 ||
        PyModule_AddIntConstant(m, "PROFILE_AES128_CM_SHA1_80",
                                VV_SRTP_PROFILE_AES128_CM_SHA1_80) < 0 ||
        PyModule_AddIntConstant(m, "PROFILE_AEAD_AES_128_GCM", VV_SRTP_PROFILE_AEAD_AES_128_GCM) <
            0)
        goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
