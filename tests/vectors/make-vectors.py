#!/usr/bin/env python3
# SPDX-License-Identifier: LGPL-2.1-or-later
"""Test vectors for the libmnp wire protocol, computed without the C code.

CRC-32C, COBS and every payload layout are implemented here from
PROTOCOL.md alone (Python standard library only), so the C encoder and
this script check each other.

    make-vectors.py            write tests/vectors/vectors.txt, the
                               generated blocks of protocol/PROTOCOL.md and
                               the fuzzers' seed corpora (tests/fuzz/corpus/)
    make-vectors.py --check    exit 1 if either file differs from what
                               this script computes (run by ctest)
"""

import argparse
import difflib
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
VECTORS = os.path.join(HERE, "vectors.txt")
PROTOCOL_MD = os.path.normpath(os.path.join(HERE, "..", "..", "protocol", "PROTOCOL.md"))
CORPUS = os.path.normpath(os.path.join(HERE, "..", "fuzz", "corpus"))

FRAME_VERSION = 1
MAX_STR = 32


# ---- CRC-32C (Castagnoli), reflected, init 0xFFFFFFFF, xorout 0xFFFFFFFF ----

def _crc_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc_table()


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


# ---- COBS (consistent overhead byte stuffing) ----

def cobs_encode(data):
    out = bytearray()
    block = bytearray()
    for b in data:
        if b == 0:
            out.append(len(block) + 1)
            out += block
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(0xFF)
                out += block
                block = bytearray()
    out.append(len(block) + 1)
    out += block
    return bytes(out)


# ---- payloads ----

def u8(v):
    return struct.pack("<B", v)


def u16(v):
    return struct.pack("<H", v)


def i16(v):
    return struct.pack("<h", v)


def u32(v):
    return struct.pack("<I", v)


def string(s):
    b = s.encode("ascii")
    assert len(b) <= MAX_STR and all(0x20 <= c <= 0x7E for c in b)
    return u8(len(b)) + b


HELLO, HELLO_REPLY, ACK, NAK, HEARTBEAT = 0x01, 0x02, 0x03, 0x04, 0x05
SET_DEPTH, SET_SPEED, START, STOP, CLEAR_FAULT = 0x10, 0x11, 0x12, 0x13, 0x14
STATUS, FAULT, CARTRIDGE = 0x20, 0x21, 0x22

# (name, type, seq, payload, description).  The C unit test knows the
# same messages field by field under the same names.
VECTORS_DEF = [
    ("hello", HELLO, 0,
     u8(1) + u8(1) + u32(0x0000000F) + u16(50),
     "versions 1..1, caps 0x0000000f, heartbeat 50 ms"),
    ("hello-reply", HELLO_REPLY, 0,
     u16(0) + u8(1) + u32(0x0000000B) + u32(0x5EED1234) + u32(0) + u32(3000) + u32(50)
     + u16(50) + u16(150) + u16(500) + string("MN-1") + string("SN0001") + string("1.0.0"),
     "to HELLO seq 0, version 1, caps 0x0b, boot id 0x5eed1234, depth 0-3000/50 um, "
     "speed 50-150 Hz, lease <= 500 ms, \"MN-1\" \"SN0001\" \"1.0.0\""),
    ("ack", ACK, 7, u16(3), "acknowledges seq 3"),
    ("nak-out-of-range", NAK, 8, u16(4) + u8(3) + u32(3000),
     "seq 4 refused: out-of-range, detail 3000"),
    ("nak-unsupported-version", NAK, 0, u16(0) + u8(8) + u32(1),
     "HELLO seq 0 refused: unsupported-version, pen's max 1"),
    ("heartbeat-host", HEARTBEAT, 9, u16(200), "renew the lease for 200 ms"),
    ("heartbeat-pen", HEARTBEAT, 12, u16(0), "from the pen, lease 0"),
    ("set-depth", SET_DEPTH, 1, u32(1500), "1500 um"),
    ("set-speed", SET_SPEED, 2, u16(120), "120 Hz"),
    ("start", START, 3, u32(1500) + u16(120) + u16(200), "1500 um, 120 Hz, lease 200 ms"),
    ("stop", STOP, 4, b"", "empty payload"),
    ("clear-fault", CLEAR_FAULT, 5, b"", "empty payload"),
    ("status-running", STATUS, 1,
     u8(2) + u32(0) + u32(1500) + u32(1450) + u16(120) + u16(118) + u8(87) + i16(312)
     + u32(12345) + u16(180) + string("CART-0001"),
     "running, no faults, depth 1500/1450 um, speed 120/118 Hz, battery 87 %, 31.2 C, "
     "needling 12345 ms, lease 180 ms, cartridge \"CART-0001\""),
    ("status-fault", STATUS, 65535,
     u8(3) + u32(0x00000044) + u32(500) + u32(500) + u16(100) + u16(0) + u8(255) + i16(-55)
     + u32(0) + u16(0) + string(""),
     "fault (cartridge-removed, lease-expired), depth 500/500 um, speed 100/0 Hz, mains, "
     "-5.5 C, no cartridge"),
    ("fault", FAULT, 2, u8(3) + u32(0x00000004), "lease-expired, flags 0x00000004"),
    ("cartridge-inserted", CARTRIDGE, 3, u8(1) + string("CART-0001"), "inserted \"CART-0001\""),
    ("cartridge-removed", CARTRIDGE, 4, u8(0) + string(""), "removed"),
]


def raw_frame(type_, seq, payload):
    header = u8(FRAME_VERSION) + u8(type_) + u16(seq)
    body = header + payload
    return body + u32(crc32c(body))


def wire_frame(type_, seq, payload):
    return b"\x00" + cobs_encode(raw_frame(type_, seq, payload)) + b"\x00"


def hexs(b):
    return b.hex() if b else "-"


def spaced(b):
    return " ".join("%02x" % c for c in b)


def render_vectors():
    lines = [
        "# libmnp wire test vectors: generated by tests/vectors/make-vectors.py, do not edit.",
        "# One vector per line: name type seq payload raw wire",
        "#   type, seq: decimal; payload ('-' if empty), raw (header|payload|CRC, before COBS)",
        "#   and wire (0x00|COBS(raw)|0x00): lower-case hex without spaces.",
    ]
    for name, type_, seq, payload, _ in VECTORS_DEF:
        lines.append("%s %d %d %s %s %s" % (name, type_, seq, hexs(payload),
                                             raw_frame(type_, seq, payload).hex(),
                                             wire_frame(type_, seq, payload).hex()))
    return "\n".join(lines) + "\n"


def parse_vectors(text):
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, type_, seq, payload, raw, wire = line.split()
        out.append((name, int(type_), int(seq), bytes.fromhex("" if payload == "-" else payload),
                    bytes.fromhex(raw), bytes.fromhex(wire)))
    return out


def render_md_vectors(vectors):
    desc = {v[0]: v[4] for v in VECTORS_DEF}
    out = []
    for name, type_, seq, payload, raw, wire in vectors:
        out.append("#### `%s`: type 0x%02x, seq %d" % (name, type_, seq))
        out.append("")
        out.append(desc.get(name, ""))
        out.append("")
        out.append("```")
        out.append("payload: " + (spaced(payload) if payload else "(empty)"))
        out.append("raw:     " + spaced(raw))
        out.append("wire:    " + spaced(wire))
        out.append("```")
        out.append("")
    return "\n".join(out)


def render_md_example():
    # A worked example, step by step: the `start` vector.
    name, type_, seq, payload, _ = [v for v in VECTORS_DEF if v[0] == "start"][0]
    header = u8(FRAME_VERSION) + u8(type_) + u16(seq)
    crc = crc32c(header + payload)
    raw = raw_frame(type_, seq, payload)
    cobs = cobs_encode(raw)
    out = [
        "```",
        "header   " + spaced(header) + "                 version 1, type 0x12 START, seq 3",
        "payload  " + spaced(payload) + "     depth 1500, speed 120, lease 200",
        "CRC-32C  0x%08x over header|payload, stored LE: %s" % (crc, spaced(u32(crc))),
        "raw      " + spaced(raw),
        "COBS     " + spaced(cobs),
        "wire     " + spaced(b"\x00" + cobs + b"\x00"),
        "```",
    ]
    return "\n".join(out)


BLOCKS = {
    "vectors": lambda vectors: render_md_vectors(vectors),
    "example": lambda vectors: render_md_example(),
}


def render_md(md, vectors):
    for key, fn in BLOCKS.items():
        begin = "<!-- generated:%s:begin -->" % key
        end = "<!-- generated:%s:end -->" % key
        i = md.find(begin)
        j = md.find(end)
        if i < 0 or j < i:
            raise SystemExit("%s: markers for block '%s' missing" % (PROTOCOL_MD, key))
        md = md[:i + len(begin)] + "\n" + fn(vectors).rstrip("\n") + "\n" + md[j:]
    return md


def write_corpus():
    # corpus/unpack (fuzz-unpack): type byte, then the payload.
    # corpus/frames (fuzz-frames): an options byte (chunk size 16), then [len][header|payload]
    # records; one file per vector and one with all of them in a row.
    unpack_dir = os.path.join(CORPUS, "unpack")
    frames_dir = os.path.join(CORPUS, "frames")
    os.makedirs(unpack_dir, exist_ok=True)
    os.makedirs(frames_dir, exist_ok=True)
    every = bytearray(b"\x0f")
    for name, type_, seq, payload, _ in VECTORS_DEF:
        body = u8(FRAME_VERSION) + u8(type_) + u16(seq) + payload
        with open(os.path.join(unpack_dir, name), "wb") as f:
            f.write(u8(type_) + payload)
        with open(os.path.join(frames_dir, name), "wb") as f:
            f.write(b"\x0f" + u8(len(body)) + body)
        every += u8(len(body)) + body
    with open(os.path.join(frames_dir, "all-vectors"), "wb") as f:
        f.write(bytes(every))


def self_test():
    assert crc32c(b"123456789") == 0xE3069283
    assert cobs_encode(b"") == b"\x01"
    assert cobs_encode(b"\x00") == b"\x01\x01"
    assert cobs_encode(b"\x11\x22\x00\x33") == b"\x03\x11\x22\x02\x33"
    assert cobs_encode(bytes(range(1, 255))) == b"\xff" + bytes(range(1, 255)) + b"\x01"
    for _, _, _, payload, _ in VECTORS_DEF:
        assert len(payload) <= 200


def check(path, want):
    try:
        with open(path, encoding="utf-8") as f:
            have = f.read()
    except OSError as e:
        print("%s: %s" % (path, e), file=sys.stderr)
        return False
    if have == want:
        return True
    sys.stderr.writelines(difflib.unified_diff(have.splitlines(True), want.splitlines(True),
                                               path, path + " (expected)"))
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="compare vectors.txt and PROTOCOL.md with what this script computes")
    args = ap.parse_args()

    self_test()
    vec_text = render_vectors()

    if args.check:
        ok = check(VECTORS, vec_text)
        try:
            with open(PROTOCOL_MD, encoding="utf-8") as f:
                md = f.read()
        except OSError as e:
            print("%s: %s" % (PROTOCOL_MD, e), file=sys.stderr)
            return 1
        # PROTOCOL.md must show exactly the vectors of vectors.txt as
        # committed (and vectors.txt must be what this script computes).
        ok = check(PROTOCOL_MD, render_md(md, parse_vectors(vec_text))) and ok
        if not ok:
            print("out of date: run tests/vectors/make-vectors.py", file=sys.stderr)
        return 0 if ok else 1

    with open(VECTORS, "w", encoding="utf-8") as f:
        f.write(vec_text)
    write_corpus()
    if os.path.exists(PROTOCOL_MD):
        with open(PROTOCOL_MD, encoding="utf-8") as f:
            md = f.read()
        with open(PROTOCOL_MD, "w", encoding="utf-8") as f:
            f.write(render_md(md, parse_vectors(vec_text)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
