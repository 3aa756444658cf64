#!/usr/bin/env python3
"""Tiny DNS responder for resolver tests (stdlib only), see docs/CROSS.md.
Binds 127.0.0.1:53 (UDP+TCP, needs root); run it, then point a private
/etc/resolv.conf at 127.0.0.1 (unshare -m + bind mount, or qemu -L PREFIX).

  *.edgeauth.test  A -> 10.20.30.40, AAAA -> fd00::4040
  big.edgeauth.test: UDP answer has TC=1 (truncated, no answers); TCP answer has 40 A records
  anything else    -> NXDOMAIN
Logs every query (proto, qname, qtype) to stdout."""
import socket, struct, threading, sys
ADDR = ("127.0.0.1", 53)

def parse_q(data):
    tid, flags, qd = struct.unpack(">HHH", data[:6])
    i, labels = 12, []
    while data[i]:
        n = data[i]; labels.append(data[i+1:i+1+n].decode()); i += 1 + n
    qtype, qclass = struct.unpack(">HH", data[i+1:i+5])
    return tid, flags, ".".join(labels).lower(), qtype, data[12:i+5]

def answer(data, proto):
    tid, flags, name, qtype, question = parse_q(data)
    rd = flags & 0x0100
    rrs, rcode, tc = [], 0, 0
    if name.endswith("edgeauth.test"):
        if name == "big.edgeauth.test" and proto == "udp":
            tc = 0x0200
        elif qtype == 1:
            n = 40 if name == "big.edgeauth.test" else 1
            rrs = [struct.pack(">HHHIH", 0xC00C, 1, 1, 60, 4) + bytes([10, 20, 30, 40 + k]) for k in range(n)]
        elif qtype == 28:
            rrs = [struct.pack(">HHHIH", 0xC00C, 28, 1, 60, 16) + socket.inet_pton(socket.AF_INET6, "fd00::4040")]
    else:
        rcode = 3
    hdr = struct.pack(">HHHHHH", tid, 0x8000 | 0x0400 | tc | rd | 0x0080 | rcode, 1, len(rrs), 0, 0)
    print(f"{proto} q={name} type={qtype} -> rcode={rcode} answers={len(rrs)} tc={bool(tc)}", flush=True)
    return hdr + question + b"".join(rrs)

def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(ADDR)
    while True:
        data, peer = s.recvfrom(4096)
        try: s.sendto(answer(data, "udp"), peer)
        except Exception as e: print("udp error", e, flush=True)

def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(ADDR); s.listen(8)
    while True:
        c, _ = s.accept()
        try:
            while True:
                ln = c.recv(2)
                if len(ln) < 2: break
                (n,) = struct.unpack(">H", ln); data = b""
                while len(data) < n: data += c.recv(n - len(data))
                r = answer(data, "tcp"); c.sendall(struct.pack(">H", len(r)) + r)
        except Exception as e: print("tcp error", e, flush=True)
        finally: c.close()

threading.Thread(target=tcp, daemon=True).start()
print("listening", ADDR, flush=True)
udp()
