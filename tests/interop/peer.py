"""A zfabric peer written only from docs/PROTOCOL.md (pyzmq + msgpack).

Usage: peer.py MODE ENDPOINT [COUNT]

MODE is one of:
  pub   publish COUNT events on topic "py.data" until stdin closes
  sub   subscribe to "rs." and print the first COUNT events as JSON lines
  push  push COUNT events
  pull  pull COUNT events and print them
  req   make COUNT requests, then one bad request; print replies/errors
Every result is one JSON object per line on stdout.
"""

import json
import os
import select
import sys
import time

import msgpack
import zmq

VERSION, KIND, ID, SOURCE, SEQ, CORRELATION, DEADLINE = 0, 1, 2, 3, 4, 5, 7
EVENT, REQUEST, REPLY, ERROR = 0, 1, 2, 3
SOURCE_ID = int.from_bytes(os.urandom(8), "big")


def header(kind, seq, **extra):
    h = {VERSION: 1, KIND: kind, ID: os.urandom(16), SOURCE: SOURCE_ID, SEQ: seq}
    h.update(extra)
    return msgpack.packb(h)


def parse(frames):
    """Split [header, body, header, body...] into (header dict, body) pairs."""
    assert len(frames) % 2 == 0 and frames, f"odd frame count {len(frames)}"
    out = []
    for i in range(0, len(frames), 2):
        h = msgpack.unpackb(frames[i], strict_map_key=False)
        out.append((h, frames[i + 1]))
    return out


def emit(obj):
    print(json.dumps(obj), flush=True)


def stdin_closed():
    r, _, _ = select.select([sys.stdin], [], [], 0)
    return bool(r) and sys.stdin.read(1) == ""


def main():
    mode, endpoint = sys.argv[1], sys.argv[2]
    count = int(sys.argv[3]) if len(sys.argv) > 3 else 10
    ctx = zmq.Context()
    deadline = time.time() + 30  # bounded: the test never hangs on us

    if mode == "pub":
        s = ctx.socket(zmq.PUB)
        s.connect(endpoint)
        seq = 0
        # Publish until the test closes stdin (it has seen enough), bounded.
        while time.time() < deadline and not stdin_closed():
            body = msgpack.packb({"name": "py", "n": seq})
            s.send_multipart([b"py.data", header(EVENT, seq), body])
            seq += 1
            time.sleep(0.002)
        emit({"published": seq})

    elif mode == "sub":
        s = ctx.socket(zmq.SUB)
        s.connect(endpoint)
        s.setsockopt(zmq.SUBSCRIBE, b"rs.")
        s.setsockopt(zmq.RCVTIMEO, 10000)
        got = 0
        while got < count and time.time() < deadline:
            frames = s.recv_multipart()
            topic = frames[0]
            for h, body in parse(frames[1:]):
                emit({"topic": topic.decode(), "kind": h[KIND], "source": h[SOURCE],
                      "seq": h[SEQ], "id_len": len(h[ID]), "body": msgpack.unpackb(body)})
                got += 1

    elif mode == "push":
        s = ctx.socket(zmq.PUSH)
        s.connect(endpoint)
        for n in range(count):
            s.send_multipart([header(EVENT, n), msgpack.packb({"name": "py", "n": n})])
        s.setsockopt(zmq.LINGER, 5000)
        emit({"pushed": count})

    elif mode == "pull":
        s = ctx.socket(zmq.PULL)
        s.connect(endpoint)
        s.setsockopt(zmq.RCVTIMEO, 10000)
        got = 0
        while got < count and time.time() < deadline:
            for h, body in parse(s.recv_multipart()):
                emit({"kind": h[KIND], "seq": h[SEQ], "body": msgpack.unpackb(body)})
                got += 1

    elif mode == "req":
        s = ctx.socket(zmq.DEALER)
        s.connect(endpoint)
        s.setsockopt(zmq.RCVTIMEO, 10000)
        ids = {}
        now_us = int(time.time() * 1e6)
        for n in range(count):
            rid = os.urandom(16)
            ids[rid] = n
            h = msgpack.packb({VERSION: 1, KIND: REQUEST, ID: rid, SOURCE: SOURCE_ID,
                               SEQ: n, DEADLINE: now_us + 10_000_000})
            s.send_multipart([h, msgpack.packb({"name": "py", "n": n})])
        bad = os.urandom(16)
        s.send_multipart([msgpack.packb({VERSION: 1, KIND: REQUEST, ID: bad, SOURCE: SOURCE_ID,
                                         SEQ: count, DEADLINE: now_us + 10_000_000}),
                          msgpack.packb("not a request")])
        pending = count + 1
        while pending and time.time() < deadline:
            for h, body in parse(s.recv_multipart()):
                corr = h[CORRELATION]
                pending -= 1
                if corr == bad:
                    emit({"bad": True, "kind": h[KIND], "error": msgpack.unpackb(body)})
                else:
                    emit({"n": ids[corr], "kind": h[KIND], "reply": msgpack.unpackb(body)})
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
