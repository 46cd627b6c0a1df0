#!/usr/bin/env python3
"""Build the text seeds of testdata/fuzz/ from testdata/*.json and the behaviour checklist
(config, result, cni_args, store). Deterministic: run it again and nothing changes.
The netlink/nftables seeds come from capture_netlink.py (real kernel replies) and the golden
batches in src/firewall/nft/golden."""
import glob, hashlib, json, os

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(os.path.dirname(here))
SUBST = {"__NAME__": "fuzznet", "__BRIDGE__": "cmfz0", "__DATADIR__": "/tmp/cm-fuzz-data",
         "__TMP__": "/tmp/cm-fuzz", "__V4A__": "198.18.1", "__V4B__": "198.18.2",
         "__V6A__": "fd00:1", "__V6B__": "fd00:2"}

def save(target, name, data):
    d = os.path.join(here, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)

VERSIONS = ["0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]
RES_1 = {"cniVersion": "1.0.0",
         "interfaces": [{"name": "cmfz0", "mac": "0a:58:c6:12:01:01"},
                        {"name": "veth1", "mac": "0a:58:c6:12:01:02"},
                        {"name": "eth0", "mac": "0a:58:c6:12:01:05", "sandbox": "/run/netns/x",
                         "mtu": 1400, "socketPath": "/run/x.sock", "pciID": "0000:00:01.0"}],
         "ips": [{"address": "198.18.1.5/24", "gateway": "198.18.1.1", "interface": 2},
                 {"address": "fd00:1::5/64", "gateway": "fd00:1::1", "interface": 2}],
         "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.1.1", "mtu": 1300, "advmss": 1200,
                     "priority": 10, "table": 100, "scope": 0},
                    {"dst": "::/0"}],
         "dns": {"nameservers": ["198.18.1.53"], "domain": "example", "search": ["a", "b"],
                 "options": ["ndots:2"]}}
RES_04 = dict(RES_1, cniVersion="0.4.0")
RES_04["ips"] = [dict(i, version="4" if "." in i["address"] else "6") for i in RES_1["ips"]]
RES_02 = {"cniVersion": "0.2.0", "ip4": {"ip": "198.18.1.5/24", "gateway": "198.18.1.1",
          "routes": [{"dst": "0.0.0.0/0", "gw": "198.18.1.1"}]},
          "ip6": {"ip": "fd00:1::5/64", "routes": [{"dst": "::/0"}]},
          "dns": {"nameservers": ["198.18.1.53"]}}

def main():
    # config: first line CNI_ARGS, then stdin
    args = ["", "IgnoreUnknown=1;IP=198.18.1.9", "IP=198.18.1.9,fd00:1::9", "MAC=0a:58:c6:12:01:09",
            "K8S_POD_NAME=a;IgnoreUnknown=true;FOO=bar"]
    for i, path in enumerate(sorted(glob.glob(os.path.join(root, "testdata", "*.json")))):
        text = open(path).read()
        for k, v in SUBST.items():
            text = text.replace(k, v)
        conf = json.loads(text)
        base = os.path.basename(path)[:-5]
        for j, ver in enumerate(VERSIONS):
            c = dict(conf, cniVersion=ver)
            save("config", f"{base}-{ver}", args[(i + j) % len(args)] + "\n" + json.dumps(c))
        c = dict(conf, cniVersion="1.0.0", prevResult=RES_1)
        save("config", f"{base}-prev", "\n" + json.dumps(c))
        # as a conflist
        plug = {k: v for k, v in conf.items() if k != "name"}
        save("config", f"{base}-conflist", "\n" + json.dumps(
            {"cniVersion": "1.1.0", "name": "fuzznet", "plugins": [plug, {"type": "portmap",
             "capabilities": {"portMappings": True}}]}))
    # checklist §1 corner cases: Go-style folding, duplicate keys, nulls, GC lists, runtimeConfig
    save("config", "fold-dupkeys", '\n{"name":"n","NAME":"m","cniVersion":"1.0.0","type":"x","Type":null,'
         '"ipam":{"type":"host-local","Ranges":[[{"subnet":"198.18.3.0/24"}]],"dataDir":"/tmp/x"}}')
    save("config", "gc-attachments", '\n{"name":"n","cniVersion":"1.1.0","type":"x","cni.dev/valid-attachments":'
         '[{"containerID":"a","ifname":"eth0"},{"containerID":"b"}],"ipam":{"type":"host-local",'
         '"subnet":"198.18.4.0/24"}}')
    save("config", "runtime-ips", 'IP=198.18.5.4\n{"name":"n","cniVersion":"1.0.0","type":"x",'
         '"capabilities":{"ips":true,"mac":true},"runtimeConfig":{"ips":["198.18.5.4/24"],"mac":"0a:58:00:00:00:01"},'
         '"ipam":{"type":"static","addresses":[{"address":"198.18.5.4/24","gateway":"198.18.5.1"}],'
         '"routes":[{"dst":"0.0.0.0/0"}],"dns":{"nameservers":["198.18.5.53"]}}}')
    save("config", "legacy-v02-prev", '\n{"name":"n","cniVersion":"0.2.0","type":"x","prevResult":'
         + json.dumps(RES_02) + "}")
    save("config", "nested", "\n" + "[" * 70 + "]" * 70)
    save("config", "utf8-long-s", '\n{"name":"n","cniVer\u017fion":"1.0.0","type":"x"}')
    # result: selector byte (index into VERSIONS of fuzzing.rs), then JSON
    for i, ver in enumerate(VERSIONS):
        r = RES_02 if ver in ("0.1.0", "0.2.0") else RES_04 if ver.startswith("0.") else RES_1
        save("result", f"result-{ver}", bytes([i]) + json.dumps(dict(r, cniVersion=ver)).encode())
        save("result", f"result-noversion-{ver}", bytes([i]) + json.dumps(
            {k: v for k, v in r.items() if k != "cniVersion"}).encode())
    save("result", "result-empty-1.1.0", bytes([6]) + b'{"cniVersion":"1.1.0"}')
    save("result", "result-mapped", bytes([5]) + b'{"cniVersion":"1.0.0","ips":[{"address":"::ffff:198.18.0.1/120"}]}')
    # cni_args: CNI_ARGS lines, and a whole environment (6 lines)
    for i, a in enumerate(args + ["a=b=c", "K8S_POD_NAMESPACE=x;;", "=v", "IgnoreUnknown=maybe",
                                  "IP=198.18.1.1;IP=198.18.1.2"]):
        save("cni_args", f"args-{i}", a)
    save("cni_args", "env-add", "ADD\ncid-1\n/run/netns/x\neth0\nIgnoreUnknown=1\n/opt/cni/bin:/usr/lib/cni")
    save("cni_args", "env-bad", "ADD\n\n/run/netns/x\n../eth0\nA=B\n::")
    # store: file name line, then content
    for name, content in [("198.18.1.5", "cid-1\r\neth0"), ("fd00:1::5", "cid-2\r\nnet1"),
                          ("198.18.1.6", "legacy-cid"), ("198.18.1.7", ""), ("last_reserved_ip.0", "198.18.1.7"),
                          ("::ffff:198.18.1.8", "cid-3\r\n"), ("lock", ""), ("198.18.1.9", "cid \r\neth0\r\nx")]:
        save("store", "store-" + hashlib.sha1(name.encode()).hexdigest()[:8], name + "\n" + content)

main()
