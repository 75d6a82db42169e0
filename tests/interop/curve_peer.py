"""A pyzmq (libzmq) peer speaking CURVE to zfabric, written from
docs/PROTOCOL.md and docs/SECURITY.md. Reuses peer.py's envelope helpers.

Usage: curve_peer.py MODE ROLE ENDPOINT COUNT

MODE: pub | sub | push | pull | req (DEALER) | rep (ROUTER serving COUNT requests)
ROLE: connect (CURVE client: needs ZF_SERVER) or bind (CURVE server; on
      tcp bind to port 0 and print {"endpoint": ...} first)
Keys come from the environment, Z85: ZF_SECRET, ZF_PUBLIC, ZF_SERVER.
ZF_MONITOR=1 prints libzmq socket monitor events to stderr (debugging).
Every result is one JSON object per line on stdout; stdin closing stops
pub/rep early.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import msgpack  # noqa: E402
import zmq  # noqa: E402

from peer import (  # noqa: E402
    CORRELATION, EVENT, ID, KIND, REPLY, REQUEST, SEQ, SOURCE, SOURCE_ID, VERSION,
    DEADLINE, emit, header, parse, stdin_closed,
)

TYPES = {"pub": zmq.PUB, "sub": zmq.SUB, "push": zmq.PUSH, "pull": zmq.PULL,
         "req": zmq.DEALER, "rep": zmq.ROUTER}


def main():
    mode, role, endpoint, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ctx = zmq.Context()
    s = ctx.socket(TYPES[mode])
    s.curve_secretkey = os.environ["ZF_SECRET"].encode()
    s.curve_publickey = os.environ["ZF_PUBLIC"].encode()
    s.setsockopt(zmq.LINGER, 5000)
    s.setsockopt(zmq.RCVTIMEO, 10000)
    if role == "bind":
        s.curve_server = True
        s.bind(endpoint)
        emit({"endpoint": s.getsockopt(zmq.LAST_ENDPOINT).decode()})
    else:
        s.curve_serverkey = os.environ["ZF_SERVER"].encode()
        s.connect(endpoint)
    deadline = time.time() + 30  # bounded: the test never hangs on us
    if os.environ.get("ZF_MONITOR"):
        import threading
        from zmq.utils.monitor import recv_monitor_message
        mon = s.get_monitor_socket()

        def watch():
            while True:
                try:
                    ev = recv_monitor_message(mon)
                except zmq.ZMQError:
                    return
                print("monitor:", ev, file=sys.stderr, flush=True)
        threading.Thread(target=watch, daemon=True).start()

    if mode == "pub":
        seq = 0
        while time.time() < deadline and not stdin_closed():
            s.send_multipart([b"py.data", header(EVENT, seq), msgpack.packb({"name": "py", "n": seq})])
            s.send_multipart([b"other", header(EVENT, seq), msgpack.packb({"name": "no", "n": seq})])
            seq += 1
            time.sleep(0.002)
    elif mode == "sub":
        s.setsockopt(zmq.SUBSCRIBE, b"rs.")
        got = 0
        while got < count and time.time() < deadline:
            frames = s.recv_multipart()
            for h, body in parse(frames[1:]):
                emit({"topic": frames[0].decode(), "seq": h[SEQ], "body": msgpack.unpackb(body)})
                got += 1
    elif mode == "push":
        for n in range(count):
            s.send_multipart([header(EVENT, n), msgpack.packb({"name": "py", "n": n})])
        emit({"pushed": count})
    elif mode == "pull":
        got = 0
        while got < count and time.time() < deadline:
            for h, body in parse(s.recv_multipart()):
                emit({"seq": h[SEQ], "body": msgpack.unpackb(body)})
                got += 1
    elif mode == "req":
        ids = {}
        now_us = int(time.time() * 1e6)
        for n in range(count):
            rid = os.urandom(16)
            ids[rid] = n
            h = msgpack.packb({VERSION: 1, KIND: REQUEST, ID: rid, SOURCE: SOURCE_ID,
                               SEQ: n, DEADLINE: now_us + 10_000_000})
            s.send_multipart([h, msgpack.packb({"name": "py", "n": n})])
        pending = count
        while pending and time.time() < deadline:
            for h, body in parse(s.recv_multipart()):
                pending -= 1
                emit({"n": ids[h[CORRELATION]], "kind": h[KIND], "reply": msgpack.unpackb(body)})
    elif mode == "rep":
        served = 0
        while served < count and time.time() < deadline:
            frames = s.recv_multipart()
            identity, pairs = frames[0], parse(frames[1:])
            for h, body in pairs:
                req = msgpack.unpackb(body)
                rh = msgpack.packb({VERSION: 1, KIND: REPLY, ID: os.urandom(16), SOURCE: SOURCE_ID,
                                    SEQ: served, CORRELATION: h[ID]})
                s.send_multipart([identity, rh, msgpack.packb({"name": req["name"] + "!", "n": req["n"] * 10})])
                served += 1
        emit({"served": served})
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
