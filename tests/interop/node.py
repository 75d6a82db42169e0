"""A zfabric node in Python (pyzmq + msgpack), written from docs/PROTOCOL.md.

It guarantees: before anything else it checks the shared test vectors
(tests/fixtures/vectors.json) against its own encoder and decoder, and exits
1 if one disagrees. Then it joins a fabric from one seed (hello over a DEALER
with its own source id; it answers hellos on its own ROUTER, says hello to
every member each heartbeat interval, greets the peers gossip names, expires
silent members), serves services by name (op 1), takes fabric publishes on
the topic prefixes its hello names (op 5), calls services and publishes on
command, and leaves gracefully (op 3); with --curve every connection is
CURVE (§1.1) and its hello advertises its key. It does not: authorize the
CURVE clients that connect to it (any key is let in), join multicast groups (op 4 is answered not_in_group) or take unicasts (op 6 is
answered no_inbox), retry calls, or run longer than --max-seconds.

Usage:
  node.py check VECTORS
  node.py run VECTORS --seed EP [--name N] [--serve SVC ...] [--topic P ...]
              [--heartbeat-ms MS] [--gone-ms MS] [--delay-ms MS] [--max-seconds S]
              [--curve]

In `run`, stdin takes one JSON command per line:
  {"cmd": "call", "tag": T, "service": S, "body": V, "timeout_ms": MS}
  {"cmd": "publish", "tag": T, "topic": S, "body": V}
  {"cmd": "leave"}
and stdout gets one JSON event per line (ready, member, gone, left, served,
message, reply, published, left_fabric). Closing stdin stops the node
without a leave (as a crash would, seen from the fabric).
"""

import argparse
import json
import os
import sys
import time

import msgpack
import zmq

# §3: header keys, in the order zfabric writes them (ascending).
FIELDS = [
    "version", "kind", "id", "source", "seq", "correlation", "reply_to",
    "deadline", "attempt", "traceparent", "content_type", "service",
    "call_id", "priority", "hops", "op", "tracestate",
]
KEY = {name: k for k, name in enumerate(FIELDS)}
UINT = {"version", "kind", "source", "seq", "deadline", "attempt",
        "content_type", "call_id", "priority", "hops", "op"}
BIN16 = {"id", "correlation"}
STR = {"reply_to", "traceparent", "service", "tracestate"}
ZERO_DEFAULT = {"attempt", "content_type", "call_id", "priority", "hops"}
REQUIRED = ["version", "kind", "id", "source", "seq"]
LIMITS = {"attempt": 2**32 - 1, "priority": 255, "hops": 255}
EVENT, REQUEST, REPLY, ERROR, CONTROL = 0, 1, 2, 3, 4
KINDS = {"event": 0, "request": 1, "reply": 2, "error": 3, "control": 4}
OPS = {"call": 1, "hello": 2, "leave": 3, "deliver": 4, "publish": 5, "unicast": 6}
CALL, HELLO, LEAVE, DELIVER, PUBLISH, UNICAST = 1, 2, 3, 4, 5, 6
MAX_HOPS = 32  # §6: a call whose hops exceed it is too_many_hops
MAX_HEADER = 16 * 1024
PEER_FIELDS = ["id", "name", "endpoints", "services", "groups", "topics", "curve_key"]


class Reject(Exception):
    """A message the receiver drops; args[0] is the drop reason (§3)."""


# ---------------------------------------------------------------- header


def _uint(buf, i, field):
    m = buf[i]
    if m <= 0x7F:
        return m, i + 1
    width = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}.get(m)
    if width is None:  # signed and every other encoding: refused
        raise Reject("malformed_header", f"{field}: not an unsigned integer")
    if i + 1 + width > len(buf):
        raise Reject("malformed_header", f"{field}: truncated")
    return int.from_bytes(buf[i + 1:i + 1 + width], "big"), i + 1 + width


def _sized(buf, i, markers, fixmask, field):
    m = buf[i]
    if fixmask is not None and m & 0xE0 == fixmask:
        n, i = m & 0x1F, i + 1
    elif m in markers:
        w = markers[m]
        n, i = int.from_bytes(buf[i + 1:i + 1 + w], "big"), i + 1 + w
    else:
        raise Reject("malformed_header", f"{field}: wrong type")
    if i + n > len(buf):
        raise Reject("malformed_header", f"{field}: truncated")
    return bytes(buf[i:i + n]), i + n


def decode_header(buf):
    """A header frame as a dict by field name (absent = default), or Reject."""
    if len(buf) > MAX_HEADER:
        raise Reject("header_too_large")
    try:
        return _decode_header(buf)
    except IndexError:
        raise Reject("malformed_header", "truncated")


def _decode_header(buf):
    m = buf[0]
    if m & 0xF0 == 0x80:
        n, i = m & 0x0F, 1
    elif m == 0xDE:
        n, i = int.from_bytes(buf[1:3], "big"), 3
    elif m == 0xDF:
        n, i = int.from_bytes(buf[1:5], "big"), 5
    else:
        raise Reject("malformed_header", "not a map")
    h = {}
    for _ in range(n):
        k, i = _uint(buf, i, "key")
        name = FIELDS[k] if k < len(FIELDS) else None
        if name in UINT:
            h[name], i = _uint(buf, i, name)
        elif name in BIN16:
            b, i = _sized(buf, i, {0xC4: 1, 0xC5: 2, 0xC6: 4}, None, name)
            if len(b) != 16:
                raise Reject("malformed_header", f"{name}: not 16 bytes")
            h[name] = b
        elif name in STR:
            b, i = _sized(buf, i, {0xD9: 1, 0xDA: 2, 0xDB: 4}, 0xA0, name)
            try:
                h[name] = b.decode("utf-8")
            except UnicodeDecodeError:
                raise Reject("malformed_header", f"{name}: not UTF-8")
        else:  # unknown key: skip its value, whatever it is
            u = msgpack.Unpacker(raw=True, strict_map_key=False, max_buffer_size=len(buf))
            u.feed(bytes(buf[i:]))
            try:
                u.skip()
            except Exception:
                raise Reject("malformed_header", "unknown field truncated")
            i += u.tell()
    if i != len(buf):
        raise Reject("malformed_header", "trailing bytes")
    for f in REQUIRED:
        if f not in h:
            raise Reject("malformed_header", f"{f} missing")
    if h["version"] != 1:
        raise Reject("unsupported_version")
    if h["kind"] > CONTROL:
        raise Reject("unknown_kind")
    if h.get("content_type", 0) > 1:
        raise Reject("unknown_content_type")
    if "op" in h and h["op"] not in OPS.values():
        raise Reject("malformed_header", "unknown op")
    for f, top in LIMITS.items():
        if h.get(f, 0) > top:
            raise Reject("malformed_header", f"{f} out of range")
    return h


def encode_header(h):
    """Fields in ascending key order, defaults left out (as zfabric writes)."""
    out = {}
    for name in FIELDS:
        v = h.get(name)
        if v is None or (name in ZERO_DEFAULT and v == 0):
            continue
        out[KEY[name]] = v
    return msgpack.packb(out, use_bin_type=True)


def decode_pairs(frames):
    if not frames or len(frames) % 2:
        raise Reject("bad_frame_count")
    return [(decode_header(frames[i]), frames[i + 1]) for i in range(0, len(frames), 2)]


# ---------------------------------------------------------------- bodies


def peer_body(p):
    """A peer of a hello in its field order; curve_key only when present."""
    out = {"id": p["id"], "name": p["name"]}
    for f in ("endpoints", "services", "groups", "topics"):
        out[f] = p.get(f, [])
    if p.get("curve_key") is not None:
        out["curve_key"] = p["curve_key"]
    return out


def hello_body(from_, incarnation, known, client=False):
    h = {"from": peer_body(from_), "incarnation": incarnation,
         "known": [peer_body(p) for p in known]}
    if client:
        h["client"] = True
    return h


def pack(v):
    return msgpack.packb(v, use_bin_type=True)


def unpack(b):
    return msgpack.unpackb(b, raw=False, strict_map_key=False)


def encode_body(b):
    t = b["type"]
    if t == "raw":
        return bytes.fromhex(b["hex"])
    v = b["value"]
    if t == "hello":
        return pack(hello_body(v["from"], v["incarnation"], v["known"], v.get("client", False)))
    if t == "leave":
        return pack({"id": v["id"], "incarnation": v["incarnation"]})
    if t == "error":
        return pack({"code": v["code"], "message": v["message"]})
    return pack(v)


def body_meaning(t, raw):
    if t == "raw":
        return {"type": "raw", "hex": raw.hex()}
    return {"type": t, "value": unpack(raw)}


def header_meaning(h):
    return {k: (v.hex() if isinstance(v, bytes) else v) for k, v in h.items()}


def header_from_meaning(m):
    return {k: (bytes.fromhex(v) if k in BIN16 else v) for k, v in m.items()}


# ---------------------------------------------------------------- vectors


def check_vectors(path):
    """Every vector decodes to its meaning; canonical ones encode to their bytes."""
    doc = json.load(open(path))
    assert doc["format"] == 1, "vectors format"
    assert doc["header_keys"] == KEY, "header keys differ from the document's"
    assert doc["kinds"] == KINDS and doc["ops"] == OPS, "kinds/ops differ"
    failures, encoded = [], 0
    for v in doc["vectors"]:
        name, m = v["name"], v["meaning"]
        frames = [bytes.fromhex(f) for f in v["frames"]]
        try:
            if "reject" in m:
                try:
                    decode_pairs(frames)
                    got = "accepted"
                except Reject as e:
                    got = e.args[0]
                if got != m["reject"]:
                    failures.append(f"{name}: expected {m['reject']}, got {got}")
                continue
            pairs = frames
            if "topic" in m:
                if frames[0].decode() != m["topic"]:
                    failures.append(f"{name}: topic")
                pairs = frames[1:]
            envs = decode_pairs(pairs)
            if len(envs) != len(m["envelopes"]):
                failures.append(f"{name}: {len(envs)} envelopes")
                continue
            for (h, body), w in zip(envs, m["envelopes"]):
                if header_meaning(h) != w["header"]:
                    failures.append(f"{name}: header decodes as {header_meaning(h)}")
                got = body_meaning(w["body"]["type"], body)
                if got != w["body"]:
                    failures.append(f"{name}: body decodes as {got}")
            if v["canonical"]:
                enc = [m["topic"].encode()] if "topic" in m else []
                for w in m["envelopes"]:
                    enc += [encode_header(header_from_meaning(w["header"])), encode_body(w["body"])]
                encoded += 1
                if enc != frames:
                    failures.append(f"{name}: encodes as {[f.hex() for f in enc]}")
        except Reject as e:
            failures.append(f"{name}: refused ({e.args})")
    return len(doc["vectors"]), encoded, failures


# ---------------------------------------------------------------- node


def emit(**ev):
    print(json.dumps(ev), flush=True)


def now_us():
    return time.time_ns() // 1000


class Link:
    """A DEALER to one endpoint; requests in flight by message id."""

    def __init__(self, node, endpoint, server_key=None):
        self.endpoint = endpoint
        self.sock = node.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if node.curve:
            # §1.1: a CURVE client with our key pair, expecting the key the
            # member advertises (or the seed's configured key).
            self.sock.curve_secretkey = node.curve["secret"].encode()
            self.sock.curve_publickey = node.curve["public"].encode()
            self.sock.curve_serverkey = server_key.encode()
        self.sock.connect(endpoint)
        node.poller.register(self.sock, zmq.POLLIN)


class Node:
    def __init__(self, args):
        self.args = args
        self.ctx = zmq.Context()
        self.poller = zmq.Poller()
        self.id = int.from_bytes(os.urandom(8), "big")
        self.incarnation = now_us()
        self.counter = 0
        self.prefix = os.urandom(8)
        self.curve = None
        if args.curve:
            self.curve = {"secret": os.environ["ZF_SECRET"], "public": os.environ["ZF_PUBLIC"],
                          "seed": os.environ["ZF_SEED_KEY"]}
        self.router = self.ctx.socket(zmq.ROUTER)
        self.router.setsockopt(zmq.LINGER, 0)
        if self.curve:
            # A CURVE server with our key pair. Without a ZAP handler libzmq
            # lets in every CURVE client (this node authorizes no one).
            self.router.curve_secretkey = self.curve["secret"].encode()
            self.router.curve_publickey = self.curve["public"].encode()
            self.router.curve_server = True
        self.router.bind("tcp://127.0.0.1:*")
        self.endpoint = self.router.getsockopt(zmq.LAST_ENDPOINT).decode()
        self.poller.register(self.router, zmq.POLLIN)
        self.poller.register(sys.stdin.fileno(), zmq.POLLIN)
        self.links = {}  # endpoint -> Link
        self.members = {}  # id -> {"info", "incarnation", "last_seen"}
        self.left = {}  # id -> incarnation it left with
        self.pending = {}  # message id -> (link, what, context, deadline in s)
        self.later = []  # (time, identity, reply frames): delayed replies
        self.rr = 0
        self.stdin_buf = b""
        self.stop = False

    # -- identity

    def next_id(self):
        self.counter += 1
        return self.prefix + self.counter.to_bytes(8, "big")

    def me(self):
        me = {"id": self.id, "name": self.args.name, "endpoints": [self.endpoint],
              "services": self.args.serve, "groups": [], "topics": self.args.topic}
        if self.curve:
            me["curve_key"] = self.curve["public"]
        return me

    def hello(self):
        known = [m["info"] for m in self.members.values()]
        return hello_body(self.me(), self.incarnation, known)

    # -- sending

    def link(self, endpoint, server_key=None):
        if endpoint not in self.links:
            if self.curve and not server_key:
                return None  # with security on, a peer without a key is ignored
            self.links[endpoint] = Link(self, endpoint, server_key)
        return self.links[endpoint]

    def request(self, link, what, ctx, timeout_s, body, **fields):
        mid = self.next_id()
        h = {"version": 1, "kind": REQUEST, "id": mid, "source": self.id, "seq": 0,
             "deadline": now_us() + int(timeout_s * 1e6)}
        h.update(fields)
        link.sock.send_multipart([encode_header(h), body])
        self.pending[mid] = (link, what, ctx, time.monotonic() + timeout_s)

    def interval(self):
        return self.args.heartbeat_ms / 1000

    def say_hello(self, link):
        self.request(link, "hello", None, max(self.interval(), 0.5), pack(self.hello()), op=HELLO)

    def member_link(self, mid):
        eps = [e for e in self.members[mid]["info"].get("endpoints", []) if e.startswith("tcp://")]
        return self.link(eps[0], self.members[mid]["info"].get("curve_key")) if eps else None

    # -- membership

    def heard(self, h):
        """A hello (request or reply): its sender is alive; greet who it knows."""
        if h.get("client"):
            return
        p = h["from"]
        pid, inc = p["id"], h["incarnation"]
        if pid == self.id:
            return
        if pid in self.left and inc <= self.left[pid]:
            return  # sent before it left
        m = self.members.get(pid)
        if m and inc < m["incarnation"]:
            return  # stale, from before a restart
        self.left.pop(pid, None)
        self.members[pid] = {"info": p, "incarnation": inc, "last_seen": time.monotonic()}
        if m is None:
            emit(event="member", id=pid, name=p["name"], services=p["services"],
                 topics=p.get("topics", []))
        for k in h.get("known", [])[:32]:  # as GossipLimits: a few greets per hello
            if k["id"] != self.id and k["id"] not in self.members:
                eps = [e for e in k.get("endpoints", []) if e.startswith("tcp://")]
                link = self.link(eps[0], k.get("curve_key")) if eps else None
                if link:
                    self.say_hello(link)

    def expire(self):
        gone_s = self.args.gone_ms / 1000
        for pid in [p for p, m in self.members.items()
                    if time.monotonic() - m["last_seen"] >= gone_s]:
            del self.members[pid]
            emit(event="gone", id=pid)

    def serving(self, service):
        return [pid for pid, m in sorted(self.members.items())
                if service in m["info"].get("services", [])]

    # -- inbound: requests on the ROUTER

    def on_router(self, frames):
        ident, rest = frames[0], frames[1:]
        try:
            pairs = decode_pairs(rest)
        except Reject:
            return  # dropped (counted, in a real node)
        for h, body in pairs:
            if h["kind"] != REQUEST:
                continue
            out = self.dispatch(ident, h, body)
            if out is None:
                continue  # answered later
            self.answer(ident, h, *out)

    def answer(self, ident, req, kind, body):
        rh = {"version": 1, "kind": kind, "id": self.next_id(), "source": self.id, "seq": 0,
              "correlation": req["id"]}
        self.router.send_multipart([ident, encode_header(rh), body])

    def error(self, code, message):
        return ERROR, pack({"code": code, "message": message})

    def dispatch(self, ident, h, body):
        op = h.get("op")
        if op is None:
            return self.error("bad_request", "not a node message (no op)")
        if op in (CALL, DELIVER, PUBLISH) and "service" not in h:
            return self.error("bad_request", "a node message without its service, group or topic")
        if op == HELLO:
            try:
                hello = unpack(body)
                self.heard(hello)
            except (ValueError, KeyError, TypeError, msgpack.ExtraData) as e:
                return self.error("bad_request", f"hello does not decode: {e!r}")
            return REPLY, pack(self.hello())
        if op == LEAVE:
            try:
                lv = unpack(body)
                pid, inc = lv["id"], lv["incarnation"]
            except Exception as e:
                return self.error("bad_request", f"leave does not decode: {e}")
            m = self.members.get(pid)
            if m and inc >= m["incarnation"]:
                del self.members[pid]
                self.left[pid] = inc
                emit(event="left", id=pid)
            return REPLY, b""
        if op == PUBLISH:
            topic = h["service"]
            n = sum(1 for p in self.args.topic if topic.startswith(p))
            if n:
                emit(event="message", topic=topic, body=unpack(body), source=h["source"])
            return REPLY, pack(n)
        if op == DELIVER:
            return self.error("not_in_group", h["service"])
        if op == UNICAST:
            return self.error("no_inbox", "this node takes no unicast messages")
        # op == CALL
        svc = h["service"]
        if svc not in self.args.serve:
            return self.error("no_such_service", svc)
        if h.get("hops", 0) > MAX_HOPS:
            return self.error("too_many_hops", f"{h.get('hops')} hops")
        if "deadline" in h and h["deadline"] <= now_us():
            return self.error("deadline_expired", "the deadline passed before work started")
        try:
            arg = unpack(body)
        except Exception as e:
            return self.error("bad_request", str(e))
        emit(event="served", service=svc, source=h["source"], call_id=h.get("call_id", 0))
        reply = pack(f"{self.args.name}:{arg}")
        if self.args.delay_ms:
            self.later.append((time.monotonic() + self.args.delay_ms / 1000, ident, h, reply))
            return None
        return REPLY, reply

    # -- inbound: replies on the links

    def on_link(self, link, frames):
        try:
            pairs = decode_pairs(frames)
        except Reject:
            return
        for h, body in pairs:
            entry = self.pending.pop(h.get("correlation"), None)
            if entry is None:
                continue  # late or unknown: ignored
            _, what, ctx, _ = entry
            ok = h["kind"] == REPLY
            if what == "hello":
                if ok:
                    self.heard(unpack(body))
            elif what == "call":
                v = unpack(body)
                if ok:
                    emit(event="reply", tag=ctx, ok=True, body=v)
                else:
                    emit(event="reply", tag=ctx, ok=False, code=v.get("code"), message=v.get("message"))
            elif what == "publish":
                ctx["answers"] += 1
                if ok:
                    ctx["delivered"] += unpack(body)
                self.publish_done(ctx)
            elif what == "leave":
                ctx["acks"] += 1

    def publish_done(self, ctx, force=False):
        if not ctx.get("done") and (force or ctx["answers"] == ctx["sent"]):
            ctx["done"] = True
            emit(event="published", tag=ctx["tag"], delivered=ctx["delivered"],
                 members=ctx["sent"])

    def timeouts(self):
        t = time.monotonic()
        for mid in [m for m, e in self.pending.items() if e[3] <= t]:
            _, what, ctx, _ = self.pending.pop(mid)
            if what == "call":
                emit(event="reply", tag=ctx, ok=False, code="timeout", message="no reply in time")
            elif what == "publish":
                ctx["answers"] += 1
                self.publish_done(ctx)

    # -- commands

    def command(self, c):
        if c["cmd"] == "call":
            members = self.serving(c["service"])
            if not members:
                emit(event="reply", tag=c.get("tag"), ok=False, code="no_such_service",
                     message="no member serves it")
                return
            self.rr += 1
            link = self.member_link(members[self.rr % len(members)])
            if link is None:
                emit(event="reply", tag=c.get("tag"), ok=False, code="unreachable",
                     message="the member has no endpoint (or key) this node can use")
                return
            self.request(link, "call", c.get("tag"), c.get("timeout_ms", 5000) / 1000,
                         pack(c["body"]), service=c["service"],
                         call_id=int.from_bytes(os.urandom(8), "big") | 1, hops=1, op=CALL)
        elif c["cmd"] == "publish":
            ctx = {"tag": c.get("tag"), "sent": 0, "answers": 0, "delivered": 0}
            for pid, m in sorted(self.members.items()):
                if any(c["topic"].startswith(p) for p in m["info"].get("topics", [])):
                    link = self.member_link(pid)
                    if link:
                        ctx["sent"] += 1
                        self.request(link, "publish", ctx, 2.0, pack(c["body"]),
                                     service=c["topic"], op=PUBLISH)
            self.publish_done(ctx)
        elif c["cmd"] == "leave":
            self.leave()

    def leave(self):
        ctx = {"acks": 0}
        sent = 0
        for pid in list(self.members):
            link = self.member_link(pid)
            if link:
                sent += 1
                self.request(link, "leave", ctx, 2.0,
                             pack({"id": self.id, "incarnation": self.incarnation}), op=LEAVE)
        end = time.monotonic() + 2.0
        while ctx["acks"] < sent and time.monotonic() < end:
            self.poll(50)
        emit(event="left_fabric", acks=ctx["acks"], members=sent)
        self.stop = True

    def read_stdin(self):
        chunk = os.read(sys.stdin.fileno(), 65536)
        if not chunk:
            self.stop = True  # stdin closed: stop without leaving
            return
        self.stdin_buf += chunk
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            if line.strip():
                self.command(json.loads(line))

    # -- loop

    def poll(self, ms):
        for sock, _ in self.poller.poll(ms):
            if sock is self.router:
                self.on_router(self.router.recv_multipart())
            elif sock == sys.stdin.fileno():
                self.read_stdin()
            else:
                link = next(lk for lk in self.links.values() if lk.sock is sock)
                self.on_link(link, link.sock.recv_multipart())
        t = time.monotonic()
        due = [x for x in self.later if x[0] <= t]
        self.later = [x for x in self.later if x[0] > t]
        for _, ident, h, reply in due:
            self.answer(ident, h, REPLY, reply)
        self.timeouts()

    def run(self):
        end = time.monotonic() + self.args.max_seconds
        seed = self.link(self.args.seed, self.curve and self.curve["seed"])
        emit(event="ready", id=self.id, endpoint=self.endpoint)
        next_beat = next_expiry = 0.0
        while not self.stop:
            t = time.monotonic()
            if t >= end:
                emit(event="watchdog")
                sys.exit(3)
            if t >= next_beat:
                next_beat = t + self.interval()
                beaten = set()
                for pid in list(self.members):
                    link = self.member_link(pid)
                    if link and link.endpoint not in beaten:
                        beaten.add(link.endpoint)
                        self.say_hello(link)
                if seed.endpoint not in beaten:
                    self.say_hello(seed)
            if t >= next_expiry:
                next_expiry = t + self.interval() / 2
                self.expire()
            self.poll(5)
        self.ctx.destroy(linger=0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["check", "run"])
    ap.add_argument("vectors")
    ap.add_argument("--seed")
    ap.add_argument("--name", default="py")
    ap.add_argument("--serve", action="append", default=[])
    ap.add_argument("--topic", action="append", default=[])
    ap.add_argument("--heartbeat-ms", type=int, default=500)
    ap.add_argument("--gone-ms", type=int, default=2500)
    ap.add_argument("--delay-ms", type=int, default=0)
    ap.add_argument("--max-seconds", type=float, default=60)
    ap.add_argument("--curve", action="store_true",
                    help="CURVE on: keys (Z85) from ZF_SECRET, ZF_PUBLIC, ZF_SEED_KEY")
    args = ap.parse_args()
    n, encoded, failures = check_vectors(args.vectors)
    emit(event="vectors", checked=n, encoded=encoded, failures=failures)
    if failures:
        sys.exit(1)
    if args.mode == "run":
        Node(args).run()


if __name__ == "__main__":
    main()
