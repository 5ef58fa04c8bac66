"""The record walk of `tapeflow_runtime.record_batches`, compiled by numba (cached on disk after the first use).

Kafka's record batch format v2: each record is a zigzag varint length, an attributes byte, varint
timestamp and offset deltas, a varint key length and key, a varint value length and value, and headers
(skipped: the record's length covers them). Every read is checked against the record's and the batch's
end, so a malformed body stops the walk (-1) instead of reading past the buffer.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def varint(buf, i, end):
    """(zigzag varint at `i`, the index after it), or (0, -1) if it runs past `end` or 10 bytes. Unsigned
    while it is read, so a 10-byte varint (|v| >= 2**62) does not sign-extend."""
    shift = np.uint64(0)
    result = np.uint64(0)
    while True:
        if i >= end or shift > np.uint64(63):
            return np.int64(0), -1
        b = buf[i]
        i += 1
        result |= (np.uint64(b) & np.uint64(0x7F)) << shift
        if b < 0x80:
            break
        shift += np.uint64(7)
    return np.int64(result >> np.uint64(1)) ^ -np.int64(result & np.uint64(1)), i


@njit(cache=True, nogil=True)
def gather(buf, i, end, out, pos):
    """A varint length and that many bytes at `i` (-1: null, nothing) copied to `out` at `pos` ->
    (length, the index after them, `pos` after them), or i = -1 if they run past `end`."""
    n, i = varint(buf, i, end)
    if i < 0 or n < -1 or i + max(n, 0) > end:
        return 0, -1, pos
    if n > 0:
        out[pos : pos + n] = buf[i : i + n]
        pos += n
        i += n
    return n, i, pos


@njit(cache=True, nogil=True)
def walk(buf, batches, values, keys, value_len, key_len, offsets):
    """Records of the uncompressed batch bodies in `buf` (rows of `batches`: start, end, record count, base
    offset) -> values and keys gathered into `values` and `keys`, their lengths (-1: null) and offsets.
    Returns (records, value bytes, key bytes), or records = -1 at a malformed record."""
    k = 0
    vpos = 0
    kpos = 0
    for row in range(batches.shape[0]):
        i = batches[row, 0]
        stop = batches[row, 1]
        base = batches[row, 3]
        for _ in range(batches[row, 2]):
            length, i = varint(buf, i, stop)
            if i < 0 or length < 0 or i + length > stop:
                return -1, 0, 0
            end = i + length
            i += 1  # attributes
            _, i = varint(buf, i, end)  # timestamp delta
            if i < 0:
                return -1, 0, 0
            delta, i = varint(buf, i, end)
            if i < 0:
                return -1, 0, 0
            klen, i, kpos = gather(buf, i, end, keys, kpos)
            if i < 0:
                return -1, 0, 0
            vlen, i, vpos = gather(buf, i, end, values, vpos)
            if i < 0:
                return -1, 0, 0
            value_len[k] = vlen
            key_len[k] = klen
            offsets[k] = base + delta
            k += 1
            i = end
    return k, vpos, kpos
