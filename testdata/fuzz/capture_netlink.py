#!/usr/bin/env python3
"""Capture real kernel netlink replies as fuzz seeds (run inside a throwaway netns, see
docs/hardening.md). Writes <out>/netlink/* (selector byte + payload after the nlmsghdr) and
<out>/nftables/* (selector 0 + whole datagrams, selector 1/2 + message bodies)."""
import hashlib, os, socket, struct, sys

out = sys.argv[1]
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300

def dump(proto, ty, hdr, flags=NLM_F_REQUEST | NLM_F_DUMP):
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, proto)
    s.bind((0, 0))
    msg = struct.pack("=LHHLL", 16 + len(hdr), ty, flags, 1, 0) + hdr
    s.send(msg)
    grams = []
    while True:
        d = s.recv(1 << 16)
        grams.append(d)
        off, done = 0, False
        while off + 16 <= len(d):
            ln, t = struct.unpack_from("=LH", d, off)
            if t in (2, 3) or ln < 16:
                done = True
            off += (ln + 3) & ~3
        if done:
            break
    s.close()
    return grams

def msgs(gram):
    off = 0
    while off + 16 <= len(gram):
        ln, t = struct.unpack_from("=LH", gram, off)
        if ln < 16:
            break
        yield t, gram[off + 16: off + ln]
        off += (ln + 3) & ~3

def save(kind, data):
    d = os.path.join(out, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "kernel-" + hashlib.sha1(data).hexdigest()[:16]), "wb") as f:
        f.write(data)

ifinfo = struct.pack("=BxHiII", 0, 0, 0, 0, 0)
ifaddr = struct.pack("=BBBBI", 0, 0, 0, 0, 0)
rtmsg = struct.pack("=BBBBBBBBI", 0, 0, 0, 0, 0, 0, 0, 0, 0)
# (selector, type, header): 0 link, 1 addr, 2 route, 3 rule; 5 bridge vlans (AF_BRIDGE link dump)
for sel, ty, hdr in [(0, 18, ifinfo), (1, 22, ifaddr), (2, 26, rtmsg), (3, 34, rtmsg),
                     (5, 18, struct.pack("=BxHiII", 7, 0, 0, 0, 0))]:
    for g in dump(0, ty, hdr):
        for t, body in msgs(g):
            if t >= 16:
                save("netlink", bytes([sel]) + body)
                if sel == 0:
                    save("netlink", bytes([7]) + body)
# qdiscs through the generic attribute walker
for g in dump(0, 38, struct.pack("=BxxxiIII", 0, 0, 0, 0, 0)):
    for t, body in msgs(g):
        if t >= 16:
            save("netlink", bytes([6]) + body)

NFNL = 12
nfgen = struct.pack("=BBH", 0, 0, 0)
for sub in (1, 4, 7):  # GETTABLE, GETCHAIN, GETRULE
    for g in dump(NFNL, (10 << 8) | sub, nfgen):
        save("nftables", bytes([0]) + g)
        for t, body in msgs(g):
            if t >= 16:
                save("nftables", bytes([1 if sub == 7 else 2]) + body[4:])
