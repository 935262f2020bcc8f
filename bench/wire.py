"""The two wire protocols the load generator speaks: logd and Redis (RESP).

Pure functions and small state machines, no sockets: the socket loops in
``workloads.py`` are shared, and only the objects below differ between the
two servers. Both codecs are written in the same style (bytes built with
``%``-formatting and ``join``, parsing by ``bytearray.find`` and slicing) so
that the client spends comparable effort per message on either side.

A codec offers:

``encode_write(bodies) -> bytes``
    One write request carrying every body (logd: one ``MSG n``; Redis: n
    pipelined ``XADD``, counted together as one request).
``replies_per_write(n) -> int``
    How many replies that request produces (logd 1, Redis n).
``parse_reply(buf, pos) -> int``
    Consume one write reply at ``pos``; return the position after it, or -1
    when more bytes are due. Raises ``ReplyError`` on an error reply.
``head_request() / parse_head(buf, pos) -> (pos, head) | (-1, None)``
    The newest id (logd ``HEAD``; Redis ``XREVRANGE k + - COUNT 1``).
``range_reader(count) -> reader``
    Reads ``count`` messages from the beginning (logd ``READ 1 count``;
    Redis ``XRANGE`` in sequential pages of ``PAGE``).
``tail_reader(head) -> reader``
    Follows new messages after ``head`` (logd ``READ head+1 0``; Redis
    ``XREAD BLOCK 0 STREAMS k <last id>`` in a loop).

A reader has ``first_request() -> bytes`` and
``feed(buf, pos, bodies) -> (pos, nrecords, next_request | None, done)``:
it consumes every complete record from ``buf[pos:]``, appends each body to
``bodies`` when that is a list, and says what to send next.
"""

from __future__ import annotations

from zlib import crc32

CRLF = b"\r\n"
STREAM = b"bench"  # the Redis stream key
PAGE = 1000  # XRANGE page size


class ReplyError(Exception):
    """The server answered with an error, or with bytes we did not expect."""


# -- logd ----------------------------------------------------------------------


def logd_command(name: bytes, *args: bytes) -> bytes:
    return b"%s %d\r\n" % (name, len(args)) + b"".join([b"%d %s\r\n" % (len(a), a) for a in args])


class LogdCodec:
    name = "logd"

    @staticmethod
    def encode_write(bodies: list[bytes]) -> bytes:
        return b"MSG %d\r\n" % len(bodies) + b"".join([b"%d %s\r\n" % (len(b), b) for b in bodies])

    @staticmethod
    def replies_per_write(n: int) -> int:
        return 1

    @staticmethod
    def parse_reply(buf: bytearray, pos: int) -> int:
        nl = buf.find(CRLF, pos)
        if nl < 0:
            return -1
        if buf[pos : pos + 3] != b"OK ":
            raise ReplyError(bytes(buf[pos:nl]).decode("utf-8", "replace"))
        return nl + 2

    @staticmethod
    def head_request() -> bytes:
        return b"HEAD\r\n"

    @staticmethod
    def parse_head(buf: bytearray, pos: int) -> tuple[int, object]:
        return ok_number(buf, pos)

    @staticmethod
    def range_reader(count: int) -> "LogdReader":
        return LogdReader(1, count)

    @staticmethod
    def tail_reader(head: object) -> "LogdReader":
        return LogdReader(int(head) + 1, 0)  # type: ignore[call-overload]


class LogdReader:
    """``READ start limit``: ``OK``, records, then ``+EOF`` (never, for limit 0).

    A record is ``+<id> <len> <more> <crc>\r\n<body>\r\n`` (logd/record.py).
    Every record is checked like a real reader does: the crc over the header
    text ``<id> <len> <more>`` and the body, and that each id is the previous + 1.
    """

    def __init__(self, start: int, limit: int) -> None:
        self.start = start
        self.limit = limit
        self.next_id = start
        self.got_ok = False

    def first_request(self) -> bytes:
        return logd_command(b"READ", b"%d" % self.start, b"%d" % self.limit)

    def feed(self, buf: bytearray, pos: int, bodies: list | None) -> tuple[int, int, None, bool]:
        if not self.got_ok:
            nl = buf.find(CRLF, pos)
            if nl < 0:
                return pos, 0, None, False
            if nl != pos + 2 or buf[pos:nl] != b"OK":
                raise ReplyError(bytes(buf[pos:nl]).decode("utf-8", "replace"))
            self.got_ok = True
            pos = nl + 2
        end = len(buf)
        n = 0
        expect = self.next_id
        while True:
            nl = buf.find(CRLF, pos, pos + 64)
            if nl < 0:
                break
            if buf[pos] != 0x2B:  # '+'
                raise ReplyError(bytes(buf[pos:nl]).decode("utf-8", "replace"))
            header = buf[pos + 1 : nl]
            if header == b"EOF":
                pos = nl + 2
                self.next_id = expect
                return pos, n, None, True
            # header: <id> <len> <more> <crc>; the crc covers "<id> <len> <more>" and the body
            try:
                idb, lenb, _more, crcb = header.split(b" ")
                stop = nl + 2 + int(lenb)
            except ValueError:
                raise ReplyError(f"malformed record header {bytes(header[:80])!r} where record {expect} "
                                 f"was due; bytes around it: {bytes(buf[max(0, pos - 120) : pos + 80])!r}") from None
            start = nl + 2
            if stop + 2 > end:
                break
            body = bytes(buf[start:stop])
            if crc32(body, crc32(header[:-9])) != int(crcb, 16):
                raise ReplyError(f"checksum mismatch for record {idb.decode()}")
            if int(idb) != expect:
                raise ReplyError(f"record {idb.decode()} where {expect} was due")
            if buf[stop : stop + 2] != CRLF:
                raise ReplyError(f"record {expect} body not followed by CRLF")
            expect += 1
            if bodies is not None:
                bodies.append(body)
            n += 1
            pos = stop + 2
        self.next_id = expect
        return pos, n, None, False


# -- Redis (RESP2) ---------------------------------------------------------------


def resp_command(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join([b"$%d\r\n%s\r\n" % (len(a), a) for a in args])


_XADD = b"*5\r\n$4\r\nXADD\r\n$%d\r\n%s\r\n$1\r\n*\r\n$1\r\nd\r\n" % (len(STREAM), STREAM)


def _resp_error(buf: bytearray, pos: int) -> ReplyError:
    nl = buf.find(CRLF, pos)
    return ReplyError(bytes(buf[pos : nl if nl >= 0 else pos + 200]).decode("utf-8", "replace"))


def _bulk(buf: bytearray, pos: int, end: int) -> tuple[int, bytes | None]:
    """One bulk string at ``pos``: (position after it, its bytes), or (-1, None)."""
    nl = buf.find(CRLF, pos, pos + 24)
    if nl < 0:
        if end - pos >= 24:
            raise _resp_error(buf, pos)
        return -1, None
    if buf[pos] != 0x24:  # '$'
        raise _resp_error(buf, pos)
    start = nl + 2
    stop = start + int(buf[pos + 1 : nl])
    if stop + 2 > end:
        return -1, None
    return stop + 2, bytes(buf[start:stop])


def _entry(buf: bytearray, pos: int, end: int) -> tuple[int, bytes | None, bytes | None]:
    """One stream entry ``*2 [id, [field, value, ...]]``: (pos, id, body of field d)."""
    # "*2\r\n$<idlen>\r\n<id>\r\n*2\r\n" and then the field and the value.
    if end - pos < 4:
        return -1, None, None
    if buf[pos : pos + 4] != b"*2\r\n":
        raise _resp_error(buf, pos)
    pos, eid = _bulk(buf, pos + 4, end)
    if pos < 0:
        return -1, None, None
    nl = buf.find(CRLF, pos, pos + 24)
    if nl < 0:
        return -1, None, None
    if buf[pos] != 0x2A:  # '*'
        raise _resp_error(buf, pos)
    nfields = int(buf[pos + 1 : nl])
    pos = nl + 2
    body = None
    for _ in range(nfields // 2):
        pos, field = _bulk(buf, pos, end)
        if pos < 0:
            return -1, None, None
        pos, value = _bulk(buf, pos, end)
        if pos < 0:
            return -1, None, None
        if field == b"d":
            body = value
    return pos, eid, body


_FIELD_D = b"\r\n*2\r\n$1\r\nd\r\n$"  # between an entry's id and its body's length


def _entries(buf: bytearray, pos: int, left: int, last: bytes | None,
             bodies: list | None) -> tuple[int, int, bytes | None]:
    """Up to ``left`` complete stream entries from ``pos``: (pos, count, last id).

    Inline fast path for our entries' shape, ``*2\r\n$<n>\r\n<id>\r\n*2\r\n
    $1\r\nd\r\n$<len>\r\n<body>\r\n`` (the same work per record as the
    logd reader, minus the checksum that RESP does not have); anything else
    goes through the general ``_entry``.
    """
    end = len(buf)
    find = buf.find
    n = 0
    while left > 0:
        if buf[pos : pos + 5] == b"*2\r\n$":
            nl = find(CRLF, pos + 5, pos + 30)
            if nl >= 0:
                s = nl + 2
                e = s + int(buf[pos + 5 : nl])
                if buf[e : e + 14] == _FIELD_D:
                    nl2 = find(CRLF, e + 14, e + 40)
                    if nl2 < 0:
                        break
                    start = nl2 + 2
                    stop = start + int(buf[e + 14 : nl2])
                    if stop + 2 > end:
                        break
                    if buf[stop : stop + 2] != CRLF:
                        raise _resp_error(buf, pos)
                    last = bytes(buf[s:e])
                    if bodies is not None:
                        bodies.append(bytes(buf[start:stop]))
                    n += 1
                    left -= 1
                    pos = stop + 2
                    continue
        nxt, eid, body = _entry(buf, pos, end)
        if nxt < 0:
            break
        pos = nxt
        last = eid
        if bodies is not None:
            bodies.append(body)
        n += 1
        left -= 1
    return pos, n, last


class RedisCodec:
    name = "redis"

    @staticmethod
    def encode_write(bodies: list[bytes]) -> bytes:
        return b"".join([_XADD + b"$%d\r\n%s\r\n" % (len(b), b) for b in bodies])

    @staticmethod
    def replies_per_write(n: int) -> int:
        return n

    @staticmethod
    def parse_reply(buf: bytearray, pos: int) -> int:
        # XADD answers with the new entry id as a bulk string: $<len>\r\n<id>\r\n
        nl = buf.find(CRLF, pos)
        if nl < 0:
            return -1
        if buf[pos] != 0x24:  # '$'
            raise _resp_error(buf, pos)
        stop = nl + 2 + int(buf[pos + 1 : nl]) + 2
        if stop > len(buf):
            return -1
        return stop

    @staticmethod
    def head_request() -> bytes:
        return resp_command(b"XREVRANGE", STREAM, b"+", b"-", b"COUNT", b"1")

    @staticmethod
    def parse_head(buf: bytearray, pos: int) -> tuple[int, object]:
        end = len(buf)
        nl = buf.find(CRLF, pos)
        if nl < 0:
            return -1, None
        if buf[pos] != 0x2A:  # '*'
            raise _resp_error(buf, pos)
        n = int(buf[pos + 1 : nl])
        if n <= 0:
            return nl + 2, b"0-0"
        pos, eid, _ = _entry(buf, nl + 2, end)
        if pos < 0:
            return -1, None
        return pos, eid

    @staticmethod
    def range_reader(count: int) -> "RedisRangeReader":
        return RedisRangeReader(count)

    @staticmethod
    def tail_reader(head: object) -> "RedisTailReader":
        return RedisTailReader(head)  # type: ignore[arg-type]


class RedisRangeReader:
    """``XRANGE k - + COUNT PAGE``, then ``XRANGE k (<last> + COUNT PAGE``, one page at a time."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.last: bytes | None = None
        self.page_left: int | None = None  # entries still due in the current page
        self.page_size = 0

    def _request(self) -> bytes:
        start = b"-" if self.last is None else b"(" + self.last
        want = min(PAGE, self.count - self.seen)
        return resp_command(b"XRANGE", STREAM, start, b"+", b"COUNT", b"%d" % want)

    def first_request(self) -> bytes:
        return self._request()

    def feed(self, buf: bytearray, pos: int, bodies: list | None) -> tuple[int, int, bytes | None, bool]:
        end = len(buf)
        n = 0
        if self.page_left is None:
            nl = buf.find(CRLF, pos)
            if nl < 0:
                return pos, 0, None, False
            if buf[pos] != 0x2A:  # '*'
                raise _resp_error(buf, pos)
            self.page_left = self.page_size = int(buf[pos + 1 : nl])
            pos = nl + 2
        pos, n, self.last = _entries(buf, pos, self.page_left, self.last, bodies)
        left = self.page_left = self.page_left - n
        self.seen += n
        if left:
            return pos, n, None, False
        self.page_left = None
        if self.seen >= self.count or self.page_size == 0:
            return pos, n, None, True
        return pos, n, self._request(), False


class RedisTailReader:
    """``XREAD BLOCK 0 STREAMS k <last id>`` in a loop, each time from the last id seen.

    A reply is ``*1 [*2 [key, *n [entry...]]]``; ``*-1`` (timeout) cannot
    happen with BLOCK 0 but is handled.
    """

    def __init__(self, head: bytes) -> None:
        self.last = head
        self.left: int | None = None

    def _request(self) -> bytes:
        return resp_command(b"XREAD", b"BLOCK", b"0", b"STREAMS", STREAM, self.last)

    def first_request(self) -> bytes:
        return self._request()

    def feed(self, buf: bytearray, pos: int, bodies: list | None) -> tuple[int, int, bytes | None, bool]:
        end = len(buf)
        n = 0
        if self.left is None:
            # *1\r\n*2\r\n$<k>\r\n<key>\r\n*<n>\r\n
            if buf.startswith(b"*-1\r\n", pos):
                return pos + 5, 0, self._request(), False
            if end - pos < 8:
                return pos, 0, None, False
            if buf[pos : pos + 8] != b"*1\r\n*2\r\n":
                raise _resp_error(buf, pos)
            p, _key = _bulk(buf, pos + 8, end)
            if p < 0:
                return pos, 0, None, False
            nl = buf.find(CRLF, p)
            if nl < 0:
                return pos, 0, None, False
            if buf[p] != 0x2A:
                raise _resp_error(buf, p)
            self.left = int(buf[p + 1 : nl])
            pos = nl + 2
        pos, n, last = _entries(buf, pos, self.left, self.last, bodies)
        self.last = last  # type: ignore[assignment]
        left = self.left = self.left - n
        if left:
            return pos, n, None, False
        self.left = None
        return pos, n, self._request(), False


# -- Redis with WAIT (W1m, W2m) -------------------------------------------------------

_WAIT = resp_command(b"WAIT", b"1", b"0")


class RedisWaitCodec(RedisCodec):
    """Each write request followed by ``WAIT 1 0``: done when one replica has it.

    ``WAIT`` answers ``:<replicas>``; with timeout 0 it blocks until one
    acknowledges, so anything below 1 is an error.
    """

    name = "redis-wait"

    @staticmethod
    def encode_write(bodies: list[bytes]) -> bytes:
        return RedisCodec.encode_write(bodies) + _WAIT

    @staticmethod
    def replies_per_write(n: int) -> int:
        return n + 1

    @staticmethod
    def parse_reply(buf: bytearray, pos: int) -> int:
        if pos < len(buf) and buf[pos] == 0x3A:  # ':' -- WAIT's reply
            nl = buf.find(CRLF, pos)
            if nl < 0:
                return -1
            if int(buf[pos + 1 : nl]) < 1:
                raise ReplyError(f"WAIT 1 0 answered {bytes(buf[pos:nl]).decode()}: no replica acknowledged")
            return nl + 2
        return RedisCodec.parse_reply(buf, pos)


# -- any RESP2 reply, and logd's STATS (control connections, not the load) --------------


def parse_resp(buf: bytearray | bytes, pos: int = 0) -> tuple[int, object]:
    """One RESP2 reply at ``pos``: (position after it, value), or (-1, None).

    ``+`` -> str, ``:`` -> int, ``$`` -> bytes (None for ``$-1``), ``*`` ->
    list (None for ``*-1``); ``-ERR ...`` raises ``ReplyError``.
    """
    nl = buf.find(CRLF, pos)
    if nl < 0:
        return -1, None
    kind, line = buf[pos], bytes(buf[pos + 1 : nl])
    if kind == 0x2B:  # '+'
        return nl + 2, line.decode()
    if kind == 0x2D:  # '-'
        raise ReplyError(line.decode("utf-8", "replace"))
    if kind == 0x3A:  # ':'
        return nl + 2, int(line)
    if kind == 0x24:  # '$'
        n = int(line)
        if n < 0:
            return nl + 2, None
        stop = nl + 2 + n
        if stop + 2 > len(buf):
            return -1, None
        return stop + 2, bytes(buf[nl + 2 : stop])
    if kind == 0x2A:  # '*'
        n = int(line)
        if n < 0:
            return nl + 2, None
        items = []
        pos = nl + 2
        for _ in range(n):
            pos, v = parse_resp(buf, pos)
            if pos < 0:
                return -1, None
            items.append(v)
        return pos, items
    raise ReplyError(f"not a RESP reply: {bytes(buf[pos : pos + 40])!r}")


STATS_REQUEST = b"STATS\r\n"


def ok_number(buf: bytearray | bytes, pos: int) -> tuple[int, int | None]:
    """logd's ``OK <n>\r\n`` line (HEAD; the length of a body): (position after it, n), or (-1, None)."""
    nl = buf.find(CRLF, pos)
    if nl < 0:
        return -1, None
    line = bytes(buf[pos:nl])
    if not (line.startswith(b"OK ") and line[3:].isdigit()):
        raise ReplyError(line.decode("utf-8", "replace"))
    return nl + 2, int(line[3:])


def parse_body_reply(buf: bytearray | bytes, pos: int = 0) -> tuple[int, bytes | None]:
    """logd's ``OK <len>\r\n<body>\r\n`` (STATS): (position after it, body), or (-1, None)."""
    start, n = ok_number(buf, pos)
    if start < 0 or n is None or start + n + 2 > len(buf):
        return -1, None
    return start + n + 2, bytes(buf[start : start + n])


# -- transport-only readers (W4 raw) ----------------------------------------------------
#
# These do not parse records one by one: they count them with C-speed
# ``bytes.count`` on markers that only occur between records *for the
# benchmark's own bodies* (never use them on arbitrary data). They show how
# fast each server delivers the data when the client costs next to nothing.


class RawLogdReader:
    """``READ 1 count``: count ``\r\n+`` (one per record, plus the EOF line) until ``+EOF\r\n``."""

    def __init__(self, count: int) -> None:
        self.count = count

    def first_request(self) -> bytes:
        return logd_command(b"READ", b"1", b"%d" % self.count)

    def feed(self, buf: bytearray, pos: int, bodies: list | None) -> tuple[int, int, None, bool]:
        if buf.startswith(b"ERR"):
            raise ReplyError(bytes(buf[:200]).decode("utf-8", "replace"))
        end = len(buf)
        # a match counted here ends by ``end``, so starts before end-2: resume at end-2
        n = buf.count(b"\r\n+", pos, end)
        if buf.endswith(b"\r\n+EOF\r\n"):
            return end, n - 1, None, True
        return max(pos, end - 2), n, None, False


class RawRedisRangeReader:
    """XRANGE pages: count entries by their ``d`` field marker; the last id from the page's tail."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.seen = 0
        self.last: bytes | None = None
        self.want = 0

    def _request(self) -> bytes:
        start = b"-" if self.last is None else b"(" + self.last
        self.want = min(PAGE, self.count - self.seen)
        return resp_command(b"XRANGE", STREAM, start, b"+", b"COUNT", b"%d" % self.want)

    def first_request(self) -> bytes:
        return self._request()

    def feed(self, buf: bytearray, pos: int, bodies: list | None) -> tuple[int, int, bytes | None, bool]:
        if not buf.endswith(CRLF) or buf.count(_FIELD_D, pos) < self.want:
            return pos, 0, None, False
        m = buf.rfind(_FIELD_D)
        nl = buf.find(CRLF, m + 14)
        if nl < 0 or len(buf) != nl + 2 + int(buf[m + 14 : nl]) + 2:
            return pos, 0, None, False
        self.last = bytes(buf[buf.rfind(b"\n", 0, m) + 1 : m])
        n = self.want
        self.seen += n
        if self.seen >= self.count:
            return len(buf), n, None, True
        return len(buf), n, self._request(), False


CODECS = {"logd": LogdCodec, "redis": RedisCodec, "redis-wait": RedisWaitCodec}
RAW_READERS = {"logd": RawLogdReader, "redis": RawRedisRangeReader}
