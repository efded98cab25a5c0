#!/usr/bin/env python3
"""Instructions per request of weft's proxies, counted by valgrind's callgrind (bench/README.md,
"Instruction counts").

Wall-clock numbers on a shared 2-core machine move with whatever else runs; instruction counts do
not. This starts the `weft` topology (or `--config` another of bench/run.py's weft configurations)
exactly as bench/run.py does (control plane, outbound and inbound proxy with mTLS between them, the
bench backend), with both proxies under
`valgrind --tool=callgrind`, sends a warm-up load, zeroes the counters (`callgrind_control -z`),
sends a fixed-rate load of the requested length, dumps the counters (`callgrind_control -d`) and
prints each proxy's instructions (Ir) per completed request. Startup, identity and discovery are
outside the measured window.

To compare two builds (say main and a branch), give each its own directory of release binaries;
they run one after the other and the table shows both and the change:

    cargo build --release -p weft -p weft-proxy -p bench
    python3 bench/callgrind.py --bins target/release [--bins ../other/target/release] [--proto h1,h2]
        [--config weft-routes]   # the same with 100 HTTPRoutes on the Service (route matching's cost)
        [--config weft,policy]   # several topologies one after the other, compared with the first:
                                 # policy = inbound authorization on the backend port (bench/run's)

With `policy`, the inbound proxy's inbound_http_authz_allow_total for the bench's
AuthorizationPolicy must have counted every measured request (read after the counters are dumped,
so the scrape is not measured), or the run fails.

Writes nothing outside its temporary work directory (printed first; callgrind.*.out files are
kept there for callgrind_annotate).
"""

import argparse
import glob
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import topology  # noqa: E402
from harness import Child  # noqa: E402

RELEASE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "target", "release")


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bins", action="append", default=[],
                   help="a directory with weft, weft-proxy and weft-bench release binaries (repeat to compare; "
                        f"default {RELEASE})")
    p.add_argument("--proto", default="h1,h2", help="client protocols, comma-separated (h1, h2)")
    p.add_argument("--rate", type=float, default=200.0, help="requests per second of the measured load")
    p.add_argument("--duration", type=float, default=5.0, help="seconds of the measured load")
    p.add_argument("--connections", type=int, default=None,
                   help="client connections (default: the load generator's: HTTP/1.1 32, HTTP/2 1)")
    p.add_argument("--config", default="weft",
                   help="the topologies, comma-separated, measured in this order for each build and compared with "
                        "the first: weft, weft-routes (100 HTTPRoutes on the backend Service), policy (inbound "
                        "authorization on the backend port), as bench/run's configurations")
    p.add_argument("--weft-mtls", action=argparse.BooleanOptionalAction, default=True,
                   help="proxies with identity and mTLS between them (default), as bench/run")
    args = p.parse_args(argv)
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        sys.exit("callgrind.py: valgrind is not installed (apt-get install valgrind)")
    bins = args.bins or [RELEASE]
    protos = [x for x in args.proto.split(",") if x]
    configs = [x for x in args.config.split(",") if x]
    for cfg in configs:
        if not topology.is_weft(cfg):
            p.error(f"--config {cfg}: one of {', '.join(topology.WEFT_CONFIGS)}")
    if "policy" in configs and not args.weft_mtls:
        p.error("--config policy needs mTLS (its AuthorizationPolicy requires the client's identity)")
    workdir = tempfile.mkdtemp(prefix="weft-callgrind-")
    print(f"work dir: {workdir}", flush=True)

    for bin_dir in bins:
        for name in ("weft", "weft-proxy", "weft-bench"):
            if not os.access(os.path.join(bin_dir, name), os.X_OK):
                sys.exit(f"callgrind.py: {bin_dir}/{name} is missing: build the release binaries first")
    # One run per (build, topology), in this order; each compared with the first.
    runs = [(bin_dir, cfg) for bin_dir in bins for cfg in configs]
    results = {}
    for i, (bin_dir, cfg) in enumerate(runs):
        results[(bin_dir, cfg)] = measure(args, bin_dir, cfg, os.path.join(workdir, f"run-{i}-{cfg}"), protos)

    print()
    print("| build | config | client | requests | outbound Ir/req | inbound Ir/req | both Ir/req |")
    print("|---|---|---|---|---|---|---|")
    for (bin_dir, cfg), rows in results.items():
        for proto, r in rows.items():
            print(f"| {bin_dir} | {cfg} | {proto} | {r['requests']} | {r['outbound']:,.0f} | {r['inbound']:,.0f} "
                  f"| {r['outbound'] + r['inbound']:,.0f} |")
    base_key = runs[0]
    for key in runs[1:]:
        for proto, r in results[key].items():
            b = results[base_key][proto]
            parts = []
            for what, now, before in (("outbound", r["outbound"], b["outbound"]),
                                      ("inbound", r["inbound"], b["inbound"]),
                                      ("both", r["outbound"] + r["inbound"], b["outbound"] + b["inbound"])):
                parts.append(f"{what} {now - before:+,.0f} Ir/req ({(now / before - 1) * 100:+.1f} %)")
            print(f"{key[0]} {key[1]} vs {base_key[0]} {base_key[1]}, {proto}: " + ", ".join(parts))


def measure(args, bin_dir, cfg, workdir, protos):
    os.makedirs(workdir)
    wrapper = os.path.join(workdir, "weft-proxy-callgrind")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\n"
                f"exec valgrind --tool=callgrind --callgrind-out-file={workdir}/callgrind.%p.out "
                f"{os.path.join(bin_dir, 'weft-proxy')} \"$@\"\n")
    os.chmod(wrapper, os.stat(wrapper).st_mode | stat.S_IEXEC)

    ctx = type("Ctx", (), {})()
    ctx.workdir = workdir
    ctx.bench_bin = os.path.join(bin_dir, "weft-bench")
    ctx.weft_bin = os.path.join(bin_dir, "weft")
    ctx.proxy_bin = wrapper
    ctx.weft_mtls = args.weft_mtls
    ctx.weft_identity_dir = os.path.join(workdir, "weft-identity")
    ctx.weft_proxy_env = []
    ctx.client_cpus = None
    ctx.proxy_cpus = None

    backend = Child("backend", [ctx.bench_bin, "backend"], workdir)
    rows = {}
    try:
        listening = backend.json_line()
        ctx.backend_http, ctx.backend_tcp = listening["http"], listening["tcp"]
        topo = topology.start(cfg, ctx, 1, {"outbound": None, "inbound": None})
        try:
            for proto in protos:
                rows[proto] = measure_proto(args, ctx, topo, proto)
                r = rows[proto]
                admitted = (f", {r['admitted']:.0f} admitted by AuthorizationPolicy {topo.authz_name}"
                            if topo.authz_name else "")
                print(f"{bin_dir} {cfg} {proto}: {r['requests']} requests{admitted}, outbound {r['outbound']:,.0f} "
                      f"Ir/req, inbound {r['inbound']:,.0f} Ir/req", flush=True)
        finally:
            topo.stop()
    finally:
        backend.stop()
    return rows


def load(ctx, topo, proto, rate, duration, connections):
    cmd = [ctx.bench_bin, "load", "--addr", topo.http, "--authority", topology.AUTHORITY, "--proto", proto,
           "--rate", str(rate), "--duration", str(duration), "--warmup", "0", "--timeout", "30"]
    if connections:
        cmd += ["--connections", str(connections)]
    r = Child("loadgen", cmd, ctx.workdir).wait_json(timeout=duration + 120)
    if r["errors"]:
        raise RuntimeError(f"{proto} load: {r['errors']} errors, first: {r['first_error']}")
    return r


def measure_proto(args, ctx, topo, proto):
    # Warm up: connections, pools, balancers and allocator arenas as they are under load.
    load(ctx, topo, proto, args.rate, 2.0, args.connections)
    pids = {role: c.pid for role, c in topo.proxies.items()}
    # Read before zeroing and after dumping: the scrapes fall outside the measured window.
    admitted_before = topology.authz_allowed(topo) if topo.authz_name else None
    for pid in pids.values():
        control(pid, "-z")
    r = load(ctx, topo, proto, args.rate, args.duration, args.connections)
    out = {"requests": r["total_ok"]}
    for role, pid in pids.items():
        before = set(glob.glob(os.path.join(ctx.workdir, f"callgrind.{pid}.out*")))
        control(pid, "-d")
        out[role] = dumped_ir(ctx.workdir, pid, before) / r["total_ok"]
    if topo.authz_name:
        # A benchmark of a policy that is not applied measures nothing: every measured request
        # must have been admitted by the bench's AuthorizationPolicy.
        admitted = (topology.authz_allowed(topo) or 0) - (admitted_before or 0)
        if admitted < r["total_ok"]:
            raise RuntimeError(f"{proto}: AuthorizationPolicy {topo.authz_name} admitted {admitted:.0f} of the "
                               f"{r['total_ok']} measured requests (inbound_http_authz_allow_total)")
        out["admitted"] = admitted
    return out


def control(pid, flag):
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True, timeout=60)


def dumped_ir(workdir, pid, before):
    """The Ir total of the dump `callgrind_control -d` just wrote for `pid`."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(glob.glob(os.path.join(workdir, f"callgrind.{pid}.out*"))) - before
        for path in new:
            with open(path) as f:
                for line in f:
                    if line.startswith("summary:") or line.startswith("totals:"):
                        return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError(f"no callgrind dump from pid {pid}")


if __name__ == "__main__":
    main(sys.argv[1:])
