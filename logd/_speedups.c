/* logd._speedups: the native fast path for the per-message work.
 *
 * The pure-Python code is the reference and the fallback (logd/speedups.py
 * picks one; LOGD_PURE=1 forces Python). Every function here must give the
 * same results as its Python twin, byte for byte and error for error:
 * tests/unit/test_speedups.py runs one corpus against both.
 *
 *   scan(buf, pos, next_id, more, crc, sizes)  record.scan_records_pure
 *   encode_batch(first_id, bodies)             record.encode_batch_pure
 *   read_records(buf, pos, max_body, Record, limit)
 *       replies.read_records_pure: ReplyParser's run of whole, valid records
 *   frame_args(buf, pos, args, nargs, total, max_message, max_request)
 *       the well-formed, complete part of CommandParser's argument loop; it
 *       stops at anything else and leaves it to the Python loop, so errors
 *       and NEED_DATA are always decided by the Python code (so for read_records).
 *   frame_command(buf, pos, max_line, max_args, max_message, max_request)
 *       CommandParser.next_command's common case, a whole framed command at
 *       once; None for anything else, which the Python parser decides.
 *
 * CRC-32 is zlib's crc32 (as Python's zlib.crc32): Debian's python3-dev
 * depends on zlib1g-dev, so the header is there wherever Python.h is.
 * Short pieces (every record's header, most bodies) go through crc_fast's
 * own sliced tables instead, where they beat zlib's: same CRC.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h> /* T_OBJECT_EX, READONLY */
#include <stdint.h>
#include <string.h>
#include <zlib.h>

#define MAX_HEADER 64

typedef struct {
    unsigned long long id, size, more;
    unsigned long crc;
    Py_ssize_t length; /* '+' to CRLF */
} header_t;

/* A NUMBER as the regex in record.py: [1-9][0-9]{0,18}, or "0" when zero_ok. */
static int
match_number(const unsigned char *p, Py_ssize_t *i, Py_ssize_t lim, int zero_ok,
             unsigned long long *out)
{
    Py_ssize_t j = *i;
    unsigned long long v = 0;
    int n = 0;
    if (j >= lim)
        return 0;
    if (p[j] == '0') {
        if (!zero_ok)
            return 0;
        *out = 0;
        *i = j + 1;
        return 1;
    }
    if (p[j] < '1' || p[j] > '9')
        return 0;
    while (j < lim && n < 19 && p[j] >= '0' && p[j] <= '9') {
        v = v * 10 + (unsigned long long)(p[j] - '0');
        j++;
        n++;
    }
    *out = v;
    *i = j;
    return 1;
}

/* 1 when a whole header matches at pos (within MAX_HEADER bytes), else 0. */
static int
match_header(const unsigned char *p, Py_ssize_t len, Py_ssize_t pos, header_t *h)
{
    Py_ssize_t lim = len < pos + MAX_HEADER ? len : pos + MAX_HEADER;
    Py_ssize_t i = pos;
    unsigned long crc = 0;
    int k;
    if (i >= lim || p[i] != '+')
        return 0;
    i++;
    if (!match_number(p, &i, lim, 0, &h->id) || i >= lim || p[i++] != ' ')
        return 0;
    if (!match_number(p, &i, lim, 1, &h->size) || i >= lim || p[i++] != ' ')
        return 0;
    if (!match_number(p, &i, lim, 1, &h->more) || i >= lim || p[i++] != ' ')
        return 0;
    if (i + 10 > lim)
        return 0;
    for (k = 0; k < 8; k++) {
        unsigned char c = p[i++];
        if (c >= '0' && c <= '9')
            crc = (crc << 4) | (unsigned long)(c - '0');
        else if (c >= 'a' && c <= 'f')
            crc = (crc << 4) | (unsigned long)(c - 'a' + 10);
        else
            return 0;
    }
    if (p[i] != '\r' || p[i + 1] != '\n')
        return 0;
    h->crc = crc;
    h->length = i + 2 - pos;
    return 1;
}

/* record._why: the reason the bytes at pos are not a header, or NULL when
 * more bytes are due. */
static const char *
why(const unsigned char *p, Py_ssize_t len, Py_ssize_t pos)
{
    Py_ssize_t lim, i;
    if (pos >= len)
        return NULL;
    if (p[pos] != '+')
        return "record does not start with '+'";
    lim = len < pos + MAX_HEADER ? len : pos + MAX_HEADER;
    for (i = pos; i + 1 < lim; i++)
        if (p[i] == '\r' && p[i + 1] == '\n')
            return "malformed record header";
    if (len - pos >= MAX_HEADER)
        return "record header too long";
    return NULL;
}

static unsigned long
crc_of(unsigned long crc, const unsigned char *p, Py_ssize_t n)
{
    /* zlib's length is a uInt: feed larger bodies in pieces */
    while (n > 0) {
        uInt chunk = n > (1 << 30) ? (1u << 30) : (uInt)n;
        crc = crc32(crc, p, chunk);
        p += chunk;
        n -= chunk;
    }
    return crc;
}

/* CRC-32 as zlib's crc32 (same polynomial, same pre- and post-inversion),
 * sliced by 8 below CRC_SLICED_MAX bytes: eight table lookups per 8 bytes.
 * For a client's records (a ~20-byte header text and a ~100-byte body) it
 * costs about half of zlib 1.2.13's crc32 (80 against 150 ns here), whose
 * braids win on longer buffers (266 against 258 ns at 512 bytes, 526
 * against 361 at 1024): those go to zlib. Little-endian machines only;
 * elsewhere crc_of. Every record's CRC goes through it: the encoder's, the
 * scanner's (recovery, the follower) and the client reader's. */
#define CRC_SLICED_MAX 512
static uint32_t crc_table[8][256];

static void
crc_table_init(void)
{
    uint32_t i, c;
    int k;
    for (i = 0; i < 256; i++) {
        c = i;
        for (k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0xEDB88320u : c >> 1;
        crc_table[0][i] = c;
    }
    for (i = 0; i < 256; i++)
        for (k = 1; k < 8; k++)
            crc_table[k][i] = (crc_table[k - 1][i] >> 8) ^ crc_table[0][crc_table[k - 1][i] & 0xff];
}

static unsigned long
crc_fast(unsigned long crc_in, const unsigned char *p, Py_ssize_t n)
{
#if PY_LITTLE_ENDIAN
    uint32_t crc = ~(uint32_t)crc_in;
    if (n >= CRC_SLICED_MAX)
        return crc_of(crc_in, p, n);
    for (; n >= 8; p += 8, n -= 8) {
        uint64_t w;
        memcpy(&w, p, 8); /* unaligned */
        w ^= crc;
        crc = crc_table[7][w & 0xff] ^ crc_table[6][(w >> 8) & 0xff] ^
              crc_table[5][(w >> 16) & 0xff] ^ crc_table[4][(w >> 24) & 0xff] ^
              crc_table[3][(w >> 32) & 0xff] ^ crc_table[2][(w >> 40) & 0xff] ^
              crc_table[1][(w >> 48) & 0xff] ^ crc_table[0][w >> 56];
    }
    for (; n > 0; p++, n--)
        crc = (crc >> 8) ^ crc_table[0][(crc ^ *p) & 0xff];
    return (unsigned long)~crc;
#else
    return crc_of(crc_in, p, n);
#endif
}


PyDoc_STRVAR(scan_doc,
"scan(buf, pos, next_id, more, crc, sizes, points=None, base=0, due=0, interval=0) -> tuple\n\n"
"record.scan_records_pure in C: the fields of record.Scan.");

static PyObject *
speedups_scan(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos;
    unsigned long long next_id, more, crc_in;
    PyObject *sizes;
    PyObject *points = Py_None;
    Py_ssize_t base = 0, due = 0, interval = 0;
    PyObject *error = NULL;
    const unsigned char *p;
    Py_ssize_t len, batch_end;
    unsigned long long batch_id;
    unsigned long batch_crc;
    PyObject *result;

    if (!PyArg_ParseTuple(args, "y*nKKKO|Onnn:scan", &view, &pos, &next_id, &more, &crc_in, &sizes,
                          &points, &base, &due, &interval))
        return NULL;
    if ((sizes != Py_None && !PyList_Check(sizes)) || (points != Py_None && !PyList_Check(points))) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_TypeError, "sizes and points must be lists or None");
        return NULL;
    }
    p = (const unsigned char *)view.buf;
    len = view.len;
    if (pos < 0)
        pos = 0;
    batch_end = pos;
    batch_id = next_id - 1;
    batch_crc = (unsigned long)crc_in;
    while (pos < len) {
        header_t h;
        Py_ssize_t start, stop;
        unsigned long crc;
        if (!match_header(p, len, pos, &h)) {
            const char *reason = why(p, len, pos);
            if (reason != NULL)
                error = PyUnicode_FromString(reason);
            break;
        }
        start = pos + h.length;
        if (h.size > (unsigned long long)(len - start) || len - start - (Py_ssize_t)h.size < 2)
            break; /* the record is still arriving */
        stop = start + (Py_ssize_t)h.size;
        if (p[stop] != '\r' || p[stop + 1] != '\n') {
            error = PyUnicode_FromString("record body not followed by CRLF");
            break;
        }
        /* the CRC covers '<id> <len> <more>' (before ' <crc>\r\n') and the body */
        crc = crc_fast(crc_fast(0, p + pos + 1, h.length - 12), p + start, (Py_ssize_t)h.size);
        if (crc != h.crc) {
            error = PyUnicode_FromFormat("checksum mismatch for id %llu", h.id);
            break;
        }
        if (h.id != next_id) {
            error = PyUnicode_FromFormat("expected id %llu, found %llu", next_id, h.id);
            break;
        }
        if (more && h.more != more - 1) {
            error = PyUnicode_FromFormat("record %llu breaks its MSG (more=%llu, expected %llu)",
                                         h.id, h.more, more - 1);
            break;
        }
        if (sizes != Py_None) {
            PyObject *n = PyLong_FromSsize_t(stop + 2 - pos);
            if (n == NULL || PyList_Append(sizes, n) < 0) {
                Py_XDECREF(n);
                PyBuffer_Release(&view);
                return NULL;
            }
            Py_DECREF(n);
        }
        if (points != Py_None && base + pos >= due) {
            /* SparseIndex.add's rule: an entry once ``interval`` past the last */
            PyObject *id = PyLong_FromUnsignedLongLong(h.id);
            PyObject *at = id == NULL ? NULL : PyLong_FromSsize_t(base + pos);
            int bad = at == NULL || PyList_Append(points, id) < 0 || PyList_Append(points, at) < 0;
            Py_XDECREF(id);
            Py_XDECREF(at);
            if (bad) {
                PyBuffer_Release(&view);
                return NULL;
            }
            due = base + pos + interval;
        }
        pos = stop + 2;
        next_id++;
        more = h.more;
        if (more == 0) {
            batch_end = pos;
            batch_id = h.id;
            batch_crc = h.crc;
        }
    }
    PyBuffer_Release(&view);
    if (PyErr_Occurred()) {
        Py_XDECREF(error);
        return NULL;
    }
    if (error == NULL) {
        error = Py_None;
        Py_INCREF(error);
    }
    result = Py_BuildValue("nKKnKkNn", pos, next_id, more, batch_end, batch_id, batch_crc, error, due);
    return result;
}

static int
digits(unsigned long long v)
{
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static char *
put_number(char *out, unsigned long long v, int n)
{
    char *end = out + n;
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return out + n;
}

PyDoc_STRVAR(encode_batch_doc,
"encode_batch(first_id, bodies) -> (bytes, sizes)\n\n"
"record.encode_batch_pure in C.");

static PyObject *
speedups_encode_batch(PyObject *self, PyObject *args)
{
    unsigned long long first_id;
    PyObject *bodies, *seq = NULL, *out = NULL, *sizes = NULL;
    Py_buffer *views = NULL;
    Py_ssize_t n, i, got = 0, total = 0;
    char *w;
    static const char hex[] = "0123456789abcdef";

    if (!PyArg_ParseTuple(args, "KO:encode_batch", &first_id, &bodies))
        return NULL;
    seq = PySequence_Fast(bodies, "bodies must be a sequence");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    views = PyMem_Calloc(n ? (size_t)n : 1, sizeof(Py_buffer));
    if (views == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++, got++) {
        PyObject *b = PySequence_Fast_GET_ITEM(seq, i);
        unsigned long long more = (unsigned long long)(n - 1 - i);
        if (PyObject_GetBuffer(b, &views[i], PyBUF_SIMPLE) < 0)
            goto done;
        /* '+' id ' ' len ' ' more ' ' 8 hex CRLF body CRLF */
        total += 1 + digits(first_id + (unsigned long long)i) + 1 +
                 digits((unsigned long long)views[i].len) + 1 + digits(more) + 1 + 8 + 2 +
                 views[i].len + 2;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    sizes = PyList_New(n);
    if (out == NULL || sizes == NULL)
        goto done;
    w = PyBytes_AS_STRING(out);
    for (i = 0; i < n; i++) {
        char *rec = w, *head;
        unsigned long long more = (unsigned long long)(n - 1 - i);
        unsigned long long id = first_id + (unsigned long long)i;
        unsigned long crc;
        int k;
        PyObject *size;
        *w++ = '+';
        head = w;
        w = put_number(w, id, digits(id));
        *w++ = ' ';
        w = put_number(w, (unsigned long long)views[i].len, digits((unsigned long long)views[i].len));
        *w++ = ' ';
        w = put_number(w, more, digits(more));
        crc = crc_fast(crc_fast(0, (const unsigned char *)head, w - head),
                     (const unsigned char *)views[i].buf, views[i].len);
        *w++ = ' ';
        for (k = 7; k >= 0; k--)
            *w++ = hex[(crc >> (4 * k)) & 0xf];
        *w++ = '\r';
        *w++ = '\n';
        memcpy(w, views[i].buf, (size_t)views[i].len);
        w += views[i].len;
        *w++ = '\r';
        *w++ = '\n';
        size = PyLong_FromSsize_t(w - rec);
        if (size == NULL)
            goto done;
        PyList_SET_ITEM(sizes, i, size);
    }
done:
    for (i = 0; i < got; i++)
        PyBuffer_Release(&views[i]);
    PyMem_Free(views);
    Py_DECREF(seq);
    if (PyErr_Occurred()) {
        Py_XDECREF(out);
        Py_XDECREF(sizes);
        return NULL;
    }
    return Py_BuildValue("NN", out, sizes);
}

PyDoc_STRVAR(frame_args_doc,
"frame_args(buf, pos, args, nargs, total, max_message, max_request) -> (pos, total)\n\n"
"Append to args each complete, well-formed '<len> <bytes>\\r\\n' argument from\n"
"pos while len(args) < nargs; stop at anything else (the caller's loop decides).");

static PyObject *
speedups_frame_args(PyObject *self, PyObject *fargs)
{
    Py_buffer view;
    Py_ssize_t pos, nargs, total, max_message, max_request, len;
    PyObject *list;
    const unsigned char *p;

    if (!PyArg_ParseTuple(fargs, "y*nO!nnnn:frame_args", &view, &pos, &PyList_Type, &list, &nargs,
                          &total, &max_message, &max_request))
        return NULL;
    p = (const unsigned char *)view.buf;
    len = view.len;
    while (PyList_GET_SIZE(list) < nargs && pos >= 0 && pos < len) {
        Py_ssize_t i = pos, size = 0, stop;
        PyObject *arg;
        /* up to 18 digits then ' ': longer ones never fit a limit; Python says so */
        while (i < len && i - pos < 18 && p[i] >= '0' && p[i] <= '9') {
            size = size * 10 + (p[i] - '0');
            i++;
        }
        if (i == pos || i >= len || p[i] != ' ')
            break;
        if (size > max_message || total + size > max_request)
            break;
        stop = i + 1 + size;
        if (stop + 2 > len || p[stop] != '\r' || p[stop + 1] != '\n')
            break;
        arg = PyBytes_FromStringAndSize((const char *)p + i + 1, size);
        if (arg == NULL || PyList_Append(list, arg) < 0) {
            Py_XDECREF(arg);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(arg);
        total += size;
        pos = stop + 2;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("nn", pos, total);
}

PyDoc_STRVAR(frame_command_doc,
"frame_command(buf, pos, max_line, max_args, max_message, max_request) -> (name, args, pos) | None\n\n"
"CommandParser's common case: at pos, a whole framed command 'NAME [N]\\r\\n' (NAME\n"
"letters, N at most 6 digits and max_args) and its N complete '<len> <bytes>\\r\\n'\n"
"arguments within the limits. name is upper-cased, args a list. None for\n"
"anything else (inline words, LF alone, a partial command, an error): the\n"
"Python parser decides those.");

#define MAX_NAME 16

static PyObject *
speedups_frame_command(PyObject *self, PyObject *fargs)
{
    Py_buffer view;
    Py_ssize_t pos, max_line, max_args, max_message, max_request, len, i, start, nargs = 0, total = 0;
    const unsigned char *p;
    char name[MAX_NAME];
    Py_ssize_t name_len = 0, digits = 0;
    PyObject *list = NULL, *out;

    if (!PyArg_ParseTuple(fargs, "y*nnnnn:frame_command", &view, &pos, &max_line, &max_args,
                          &max_message, &max_request))
        return NULL;
    p = (const unsigned char *)view.buf;
    len = view.len;
    if (pos < 0 || pos >= len)
        goto none;
    i = start = pos;
    while (i < len && name_len < MAX_NAME &&
           ((p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= 'a' && p[i] <= 'z'))) {
        name[name_len++] = (char)(p[i] >= 'a' ? p[i] - 32 : p[i]);
        i++;
    }
    if (name_len == 0 || i >= len)
        goto none;
    if (p[i] == ' ') {
        i++;
        while (i < len && digits < 7 && p[i] >= '0' && p[i] <= '9') {
            nargs = nargs * 10 + (p[i] - '0');
            i++;
            digits++;
        }
        if (digits == 0 || digits > 6 || nargs > max_args)
            goto none;
    }
    if (i + 1 >= len || p[i] != '\r' || p[i + 1] != '\n' || i - start > max_line)
        goto none;
    i += 2;
    if ((list = PyList_New(0)) == NULL)
        goto fail;
    while (PyList_GET_SIZE(list) < nargs) {
        Py_ssize_t j = i, size = 0, stop;
        PyObject *arg;
        while (j < len && j - i < 18 && p[j] >= '0' && p[j] <= '9') {
            size = size * 10 + (p[j] - '0');
            j++;
        }
        if (j == i || j >= len || p[j] != ' ' || size > max_message || total + size > max_request)
            goto none;
        stop = j + 1 + size;
        if (stop + 2 > len || p[stop] != '\r' || p[stop + 1] != '\n')
            goto none;
        arg = PyBytes_FromStringAndSize((const char *)p + j + 1, size);
        if (arg == NULL || PyList_Append(list, arg) < 0) {
            Py_XDECREF(arg);
            goto fail;
        }
        Py_DECREF(arg);
        total += size;
        i = stop + 2;
    }
    PyBuffer_Release(&view);
    out = Py_BuildValue("y#Nn", name, name_len, list, i);
    return out;
none:
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    Py_XDECREF(list);
    PyBuffer_Release(&view);
    return NULL;
}

PyDoc_STRVAR(read_records_doc,
"read_records(buf, pos, max_body, record_type, limit) -> (records, end)\n\n"
"ReplyParser's fast path: the whole, valid records of at most max_body bytes\n"
"from pos whose ids run on consecutively, at most limit of them (0: no limit),\n"
"as a list of record_type(id, body, more), and the offset after the last.\n"
"It stops at anything else (more bytes due, +EOF, an error line, a bad\n"
"record, an id out of step) and leaves it to the Python code to judge.");

/* Where record_type keeps id, body and more: the offsets of its slots when
 * they are plain object slots (a slots dataclass, as record.Record), so a
 * record is three stores, not three attribute lookups; else 0, and
 * new_record sets them as object.__setattr__ does (a frozen __init__'s way). */
typedef struct {
    PyTypeObject *type; /* a strong reference; NULL: nothing cached */
    Py_ssize_t offset[3];
    int atomic; /* the three slots are all the object holds: see new_record */
} fields_t;

static PyObject *field_names[3]; /* "id", "body", "more" */
static fields_t fields_cache;

static Py_ssize_t
slot_offset(PyTypeObject *type, PyObject *name)
{
    PyObject *d = PyObject_GetAttr((PyObject *)type, name);
    Py_ssize_t offset = 0;
    if (d == NULL) {
        PyErr_Clear();
        return 0;
    }
    if (Py_IS_TYPE(d, &PyMemberDescr_Type) && PyType_IsSubtype(type, PyDescr_TYPE(d))) {
        PyMemberDef *m = ((PyMemberDescrObject *)d)->d_member;
        if (m->type == T_OBJECT_EX && !(m->flags & READONLY))
            offset = m->offset;
    }
    Py_DECREF(d);
    return offset;
}

/* The fields of type, from the cache (one type: the parser only ever passes
 * Record). Worked out into a local first: slot_offset's getattr may run
 * Python code, which may call read_records with another type. */
static fields_t
fields_of(PyTypeObject *type)
{
    fields_t f;
    PyTypeObject *old;
    int k;
    if (fields_cache.type == type)
        return fields_cache;
    f.type = type;
    f.atomic = 1;
    for (k = 0; k < 3; k++) {
        f.offset[k] = slot_offset(type, field_names[k]);
        f.atomic &= f.offset[k] > 0;
    }
    f.atomic &= type->tp_dictoffset == 0 &&
        type->tp_basicsize == (Py_ssize_t)(sizeof(PyObject) + 3 * sizeof(PyObject *));
    old = fields_cache.type;
    Py_INCREF(type);
    fields_cache = f;
    Py_XDECREF(old);
    return f;
}

/* record_type(id, body, more) as its frozen __init__ would set it; steals
 * the three values (NULL ones included, as failures).
 *
 * A record that holds nothing but its int, bytes and int can be in no
 * reference cycle, so it is untracked by the cycle collector, as CPython
 * untracks tuples of atomic values: a run's records live together, and
 * tracked they cost the client ~10% more (bench/micro.py client read()). */
static PyObject *
new_record(PyTypeObject *type, const fields_t *f, PyObject *values[3])
{
    PyObject *rec = NULL;
    int k;
    if (values[0] != NULL && values[1] != NULL && values[2] != NULL)
        rec = type->tp_alloc(type, 0);
    for (k = 0; k < 3; k++) {
        if (rec != NULL && f->offset[k] > 0) {
            /* tp_alloc zeroed the slot: it takes the reference */
            *(PyObject **)((char *)rec + f->offset[k]) = values[k];
            continue;
        }
        if (rec != NULL && PyObject_GenericSetAttr(rec, field_names[k], values[k]) < 0)
            Py_CLEAR(rec);
        Py_XDECREF(values[k]);
    }
    if (rec != NULL && f->atomic && PyObject_IS_GC(rec))
        PyObject_GC_UnTrack(rec);
    return rec;
}

static PyObject *
speedups_read_records(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, max_body, limit, len;
    PyTypeObject *type;
    fields_t f;
    const unsigned char *p;
    unsigned long long next_id = 0;
    PyObject *list;

    if (!PyArg_ParseTuple(args, "y*nnO!n:read_records", &view, &pos, &max_body, &PyType_Type, &type,
                          &limit))
        return NULL;
    f = fields_of(type);
    list = PyList_New(0);
    if (list == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    p = (const unsigned char *)view.buf;
    len = view.len;
    while (pos >= 0 && pos < len && (limit <= 0 || PyList_GET_SIZE(list) < limit)) {
        header_t h;
        Py_ssize_t start, stop;
        PyObject *values[3], *rec;
        if (!match_header(p, len, pos, &h) || h.size > (unsigned long long)max_body ||
            (next_id != 0 && h.id != next_id))
            break;
        start = pos + h.length;
        if (h.size > (unsigned long long)(len - start) || len - start - (Py_ssize_t)h.size < 2)
            break; /* the record is still arriving */
        stop = start + (Py_ssize_t)h.size;
        if (p[stop] != '\r' || p[stop + 1] != '\n' ||
            crc_fast(crc_fast(0, p + pos + 1, h.length - 12), p + start, (Py_ssize_t)h.size) != h.crc)
            break;
        values[0] = PyLong_FromUnsignedLongLong(h.id);
        values[1] = PyBytes_FromStringAndSize((const char *)p + start, (Py_ssize_t)h.size);
        values[2] = PyLong_FromUnsignedLongLong(h.more);
        rec = new_record(type, &f, values);
        if (rec == NULL || PyList_Append(list, rec) < 0) {
            Py_XDECREF(rec);
            Py_DECREF(list);
            PyBuffer_Release(&view);
            return NULL;
        }
        Py_DECREF(rec);
        next_id = h.id + 1;
        pos = stop + 2;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("Nn", list, pos);
}

static PyMethodDef speedups_methods[] = {
    {"scan", speedups_scan, METH_VARARGS, scan_doc},
    {"encode_batch", speedups_encode_batch, METH_VARARGS, encode_batch_doc},
    {"frame_args", speedups_frame_args, METH_VARARGS, frame_args_doc},
    {"frame_command", speedups_frame_command, METH_VARARGS, frame_command_doc},
    {"read_records", speedups_read_records, METH_VARARGS, read_records_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT, "logd._speedups",
    "The native fast path for logd's per-message work (see logd/speedups.py).", -1,
    speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    crc_table_init();
    field_names[0] = PyUnicode_InternFromString("id");
    field_names[1] = PyUnicode_InternFromString("body");
    field_names[2] = PyUnicode_InternFromString("more");
    if (field_names[0] == NULL || field_names[1] == NULL || field_names[2] == NULL)
        return NULL;
    return PyModule_Create(&speedups_module);
}
