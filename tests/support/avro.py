"""Avro's binary encoding written from the spec, independently of fastavro (tests that hand-build
bodies: the wire-format tests and the md.book reader's multi-block arrays)."""

from __future__ import annotations


def zigzag_varint(n: int) -> bytes:
    """Avro long encoding: zig-zag, then 7 bits a byte, low bits first."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
