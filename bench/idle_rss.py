#!/usr/bin/env python3
"""Focused memory check: weft's proxies with N idle client connections (bench/README.md,
"Memory per idle connection").

Starts the backend and the `weft` topology exactly as bench/run.py does (proxies pinned to CPU 0,
clients to CPU 1), records both proxies' VmRSS at rest, opens N idle keep-alive connections
through the outbound proxy with `weft-bench idle` (one request each), waits for the proxies to
settle and prints VmRSS, VmHWM and the RSS added per connection. `--load RATE` then runs a short
fixed-rate HTTP/1.1 load on a fresh topology and prints the proxies' peak RSS (VmHWM).
Uses the release binaries as built (`cargo build --release -p weft -p weft-proxy -p bench`); writes nothing.

    ulimit -n 65536; python3 bench/idle_rss.py [--connections 1000] [--rounds 3] [--workers 1|2] [--load 2000]
"""

import argparse
import os
import resource
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import topology  # noqa: E402
from harness import Child, memory_mib  # noqa: E402

RELEASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "release")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3, help="fresh topologies; medians are printed")
    p.add_argument("--load", type=int, default=0, help="also: peak RSS after a fixed-rate run at this req/s")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of the --load run")
    p.add_argument("--workers", type=int, default=1, choices=(1, 2),
                   help="1: proxies on CPU 0, clients on CPU 1 (main table); 2: proxies on CPUs 0-1, clients unpinned")
    p.add_argument("--proxy-bin", default=os.path.join(RELEASE, "weft-proxy"),
                   help="the proxy binary (or a wrapper such as a heaptrack script)")
    p.add_argument("--weft-proxy-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra variable for both weft proxies")
    p.add_argument("--weft-mtls", action=argparse.BooleanOptionalAction, default=True,
                   help="proxies with identity and mTLS between them (default), as bench/run")
    args = p.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    ctx = type("Ctx", (), {})()
    ctx.workdir = tempfile.mkdtemp(prefix="weft-idle-")
    ctx.bench_bin = os.path.join(RELEASE, "weft-bench")
    ctx.weft_bin = os.path.join(RELEASE, "weft")
    ctx.proxy_bin = args.proxy_bin
    ctx.weft_mtls = args.weft_mtls
    ctx.weft_identity_dir = os.path.join(ctx.workdir, "weft-identity")
    ctx.weft_proxy_env = [tuple(kv.split("=", 1)) for kv in args.weft_proxy_env]
    ctx.client_cpus = "1" if args.workers == 1 else None
    cpus = "0" if args.workers == 1 else "0,1"
    ctx.proxy_cpus = {"outbound": cpus, "inbound": cpus}
    print(f"work dir: {ctx.workdir}", flush=True)

    backend = Child("backend", [ctx.bench_bin, "backend"], ctx.workdir, cpus=ctx.client_cpus)
    rows = []
    try:
        listening = backend.json_line()
        ctx.backend_http, ctx.backend_tcp = listening["http"], listening["tcp"]
        for _ in range(args.rounds):
            rows.append(idle_round(args, ctx))
        if args.load:
            load_round(args, ctx)
    finally:
        backend.stop()
    for role in ("outbound", "inbound"):
        for key in ("base", "rss", "hwm", "per_conn_kib"):
            values = [r[role][key] for r in rows]
            print(f"median {role:8} {key:12} {statistics.median(values):8.2f}   ({', '.join(f'{v:.2f}' for v in values)})")


def idle_round(args, ctx):
    topo = topology.start("weft", ctx, args.workers, ctx.proxy_cpus)
    idle = None
    try:
        time.sleep(1.0)
        base = {role: memory_mib(c.pid)[0] for role, c in topo.proxies.items()}
        idle = Child("idle", [ctx.bench_bin, "idle", "--addr", topo.http, "--authority", topology.AUTHORITY,
                              "--connections", str(args.connections), "--hold", "300"],
                     ctx.workdir, cpus=ctx.client_cpus)
        line = idle.json_line(timeout=120)
        time.sleep(1.0)
        out = {}
        for role, c in topo.proxies.items():
            rss, hwm = memory_mib(c.pid)
            out[role] = {"base": base[role], "rss": rss, "hwm": hwm,
                         "per_conn_kib": (rss - base[role]) * 1024 / max(1, line["open"])}
        print(f"idle: {line['open']} open, {line['errors']} failed; " + "; ".join(
            f"{r}: base {v['base']:.1f} MiB, RSS {v['rss']:.1f} MiB (peak {v['hwm']:.1f}), "
            f"{v['per_conn_kib']:.1f} KiB/conn" for r, v in out.items()), flush=True)
        return out
    finally:
        if idle:
            idle.stop()
        topo.stop()


def load_round(args, ctx):
    topo = topology.start("weft", ctx, args.workers, ctx.proxy_cpus)
    try:
        for proto in ("h1", "h2"):
            cmd = [ctx.bench_bin, "load", "--addr", topo.http, "--authority", topology.AUTHORITY, "--proto", proto,
                   "--rate", str(args.load), "--duration", str(args.duration), "--warmup", "1"]
            r = Child("loadgen", cmd, ctx.workdir, cpus=ctx.client_cpus).wait_json(timeout=args.duration + 60)
            print(f"load {proto} {args.load}/s: p50 {r['p50_ms']:.3f} p99 {r['p99_ms']:.3f} ms, errors {r['errors']}")
        print("peak RSS after load: " + ", ".join(
            f"{role} {memory_mib(c.pid)[1]:.1f} MiB" for role, c in topo.proxies.items()), flush=True)
    finally:
        topo.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
