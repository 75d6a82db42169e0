# Fds and RSS per idle relayed connection of `zfabric serve` (docs/SECURITY.md).
# Usage: python3 docs/measure/idle_connections.py 1000 target/release/zfabric
import socket, struct, sys, os, time, subprocess, re
N = int(sys.argv[1])
zf = sys.argv[2]
p = subprocess.Popen([zf, "serve", "--bind", "tcp://127.0.0.1:0", "--service", "echo"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
line = p.stdout.readline()
port = int(line.split()[-1].rsplit(":",1)[1])
def stats():
    fds = len(os.listdir(f"/proc/{p.pid}/fd"))
    rss = int(re.search(r"VmRSS:\s+(\d+)", open(f"/proc/{p.pid}/status").read()).group(1))
    return fds, rss
def hello():
    g = bytearray(64); g[0]=0xff; g[9]=0x7f; g[10]=3; g[11]=0; g[12:16]=b"NULL"
    body = b"\x05READY" + b"\x0bSocket-Type" + struct.pack(">I",6) + b"DEALER"
    return bytes(g) + bytes([0x04, len(body)]) + body
time.sleep(0.5)
b = stats()
socks = []
for i in range(N):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(hello())
    socks.append(s)
for s in socks:
    got = b""
    while len(got) < 64:
        got += s.recv(64 - len(got))
time.sleep(1.0)
a = stats()
print(f"N={N} fds {b[0]} -> {a[0]} ({(a[0]-b[0])/N:.2f}/conn), RSS {b[1]} KiB -> {a[1]} KiB ({(a[1]-b[1])/N:.1f} KiB/conn)")
for s in socks: s.close()
p.terminate(); p.wait()
