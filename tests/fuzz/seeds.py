"""Writes the fuzz targets' seed corpus (tests/fuzz/corpus/<target>/) from
the shared test vectors (tests/fixtures/vectors.json), so the fuzzer
starts from real messages. Run from the repository root:
    python3 tests/fuzz/seeds.py
"""
import json
import os
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VECTORS = json.load(open(os.path.join(ROOT, "tests", "fixtures", "vectors.json")))["vectors"]
CORPUS = os.path.join(ROOT, "tests", "fuzz", "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def frame(body, more):
    """One ZMTP 3 frame: flags (MORE, LONG), size, body."""
    flags = 0x01 if more else 0x00
    if len(body) > 255:
        return bytes([flags | 0x02]) + struct.pack(">Q", len(body)) + body
    return bytes([flags, len(body)]) + body


def greeting():
    g = bytearray(64)
    g[0], g[9], g[10], g[11] = 0xFF, 0x7F, 3, 1
    g[12:16] = b"NULL"
    return bytes(g)


def ready(socket_type):
    name = b"Socket-Type"
    cmd = b"\x05READY" + bytes([len(name)]) + name + struct.pack(">I", len(socket_type)) + socket_type
    return bytes([0x04, len(cmd)]) + cmd


for v in VECTORS:
    frames = [bytes.fromhex(h) for h in v["frames"]]
    # The header is the frame before the body (the last one); a batch
    # repeats header/body pairs.
    header = frames[-2] if len(frames) >= 2 else frames[0]
    write("header", v["name"], header)
    body = frames[-1]
    write("node_message", v["name"], struct.pack(">H", len(header)) + header + body)
    stream = greeting() + ready(b"DEALER")
    for i, f in enumerate(frames):
        stream += frame(f, i + 1 < len(frames))
    # The first byte picks the read size: whole, and split into 7-byte reads.
    write("frames", v["name"] + "-whole", bytes([255]) + stream)
    write("frames", v["name"] + "-split", bytes([7]) + stream)

# CURVE: a HELLO-shaped command (the right size and prefix; its box does
# not open), then an INITIATE-shaped one.
hello = b"\x05HELLO" + bytes([1, 0]) + bytes(72) + bytes(32) + bytes(8) + bytes(80)
initiate = b"\x08INITIATE" + bytes(96) + bytes(8) + bytes(128)
write("curve_server", "hello_initiate", struct.pack(">H", len(hello)) + hello + initiate)
write("curve_server", "short", b"\x00\x06\x05HELLO")
