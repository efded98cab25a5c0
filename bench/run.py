#!/usr/bin/env python3
"""Weft data-plane benchmark driver (started by bench/run; see bench/README.md).

For each table (proxy worker count) it starts the backend once, then runs rounds of the
configurations in alternation (direct, weft, envoy, direct, weft, envoy, ...), each started
fresh: fixed-rate latency with an HTTP/1.1 and an HTTP/2 client, proxy CPU per request, peak RSS
after the fixed runs and after the maximum-throughput run, opaque TCP throughput, and (on another
fresh start) RSS with N idle connections. Values reported are medians over the rounds.
"""

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import cp_scale  # noqa: E402
import report  # noqa: E402
import topology  # noqa: E402
from harness import (Child, cpu_seconds, http_text, memory_mib, mint_certs, probe,  # noqa: E402
                     request_probe, sleeps, system_busy_seconds)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 3 s per rate, 1 s warmup, 256 MiB TCP stream (still 2 rounds)")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per fixed-rate run")
    p.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measurement")
    p.add_argument("--max-duration", type=float, help="seconds of the maximum-throughput run (default --duration)")
    p.add_argument("--rates", default="500,2000,5000")
    p.add_argument("--protos", default="h1,h2")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--configs", default="direct,weft,envoy",
                   help="comma list of direct, weft, weft-routes (weft with 100 HTTPRoutes), policy (weft with "
                        "inbound authorization on the backend port: Server, AuthorizationPolicy, MeshTLS- and "
                        "NetworkAuthentication), envoy")
    p.add_argument("--workers", default="1,2", help="tables: proxy worker threads (1 = main table)")
    p.add_argument("--layout", choices=("proxy-core", "sidecar"), default="proxy-core",
                   help="one-worker table: 'proxy-core' (default) = both proxies on CPU 0, load generator, "
                        "backend and control plane on CPU 1 (the proxies' CPU and capacity measured apart from "
                        "the apps'); 'sidecar' = client, outbound proxy and control plane on CPU 1, inbound "
                        "proxy and backend on CPU 0 (each proxy beside its app, the meshed hop crossing cores; "
                        "direct = client on 1 calling the backend on 0)")
    p.add_argument("--sidecar-table", action=argparse.BooleanOptionalAction, default=True,
                   help="after the tables, a latency-only table (fixed rates, HTTP/1.1 client) with one worker "
                        "in the sidecar layout, for reference next to the main table's proxy-core layout")
    p.add_argument("--unpinned-table", action=argparse.BooleanOptionalAction, default=True,
                   help="after the worker tables, a full table with one worker per proxy and nothing pinned "
                        "(the scheduler places proxies, load generator, backend and control plane, as on a "
                        "real node); results.json key 'unpinned'")
    p.add_argument("--tcp-mib", type=int, default=1024, help="size of the opaque TCP stream")
    p.add_argument("--idle-connections", type=int, default=1000)
    p.add_argument("--max-connections", type=int, default=32, help="HTTP/1.1 connections of the max run")
    p.add_argument("--weft-mtls", action=argparse.BooleanOptionalAction, default=True,
                   help="weft's hop is mTLS (default): a fresh CA (weft identity init) for weft control "
                        "--identity-dir, each proxy registered for its token; the inbound backend ports "
                        "require identity and must refuse plaintext and certificate-less TLS, or the run "
                        "aborts. --no-weft-mtls: plaintext HTTP/2 between the proxies, no identity")
    p.add_argument("--weft-proxy-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra variable for both weft proxies; {identity_dir} and {name} are substituted")
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                   help="where RESULTS.md and results.json go")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md/results.json alone")
    p.add_argument("--report-from", metavar="RAW_JSON",
                   help="measure nothing: rewrite the outputs from a run's raw.json (in its work directory)")
    args = p.parse_args(argv)
    if args.quick:
        args.duration, args.warmup, args.tcp_mib = 3.0, 1.0, 256
    args.max_duration = args.max_duration or args.duration
    args.rates = [int(r) for r in args.rates.split(",")]
    args.protos = args.protos.split(",")
    args.configs = args.configs.split(",")
    args.workers = [int(w) for w in args.workers.split(",")]
    args.weft_proxy_env = [tuple(kv.split("=", 1)) for kv in args.weft_proxy_env]
    if "policy" in args.configs and not args.weft_mtls:
        p.error("--configs policy needs mTLS (its AuthorizationPolicy requires the client's identity): "
                "drop --no-weft-mtls")
    return args


class Context:
    pass


def main(argv):
    args = parse_args(argv)
    if args.report_from:
        with open(args.report_from) as f:
            raw = json.load(f)
        saved = parse_args(raw["argv"])
        saved.out, saved.no_write = args.out, args.no_write
        tables = {int(w) if w.isdigit() else w: {cfg: _int_rates(e) for cfg, e in t.items()}
                  for w, t in raw["tables"].items()}
        write_outputs(saved, tables, raw["meta"])
        return
    ctx = Context()
    ctx.workdir = tempfile.mkdtemp(prefix="weft-bench-")
    ctx.bench_bin = os.path.join(RELEASE, "weft-bench")
    ctx.weft_bin = os.path.join(RELEASE, "weft")
    ctx.proxy_bin = os.path.join(RELEASE, "weft-proxy")
    ctx.envoy_bin = os.environ.get("ENVOY_BIN", "envoy")
    ctx.weft_mtls = args.weft_mtls
    ctx.weft_identity_dir = os.path.join(ctx.workdir, "weft-identity")
    ctx.weft_proxy_env = args.weft_proxy_env
    ctx.certs = mint_certs(os.path.join(ctx.workdir, "certs"))
    print(f"work dir (logs, configs, certificates): {ctx.workdir}", flush=True)

    started = datetime.datetime.now(datetime.timezone.utc)
    ctx.wakeup = wakeup_cost(ctx)
    tables = {}
    for workers in args.workers:
        tables[workers] = run_table(args, ctx, workers)
    if args.unpinned_table and 1 in args.workers:
        tables["unpinned"] = run_table(args, ctx, 1, layout="unpinned")
    if args.sidecar_table and args.layout != "sidecar":
        tables["sidecar"] = run_table(args, ctx, 1, layout="sidecar", latency_only=True)

    meta = report.metadata(args, ctx, started, argv)
    with open(os.path.join(ctx.workdir, "raw.json"), "w") as f:
        json.dump({"argv": argv, "meta": meta, "tables": tables}, f)
    print(f"raw measurements: {ctx.workdir}/raw.json (bench/run --report-from it to rewrite the outputs)")
    write_outputs(args, tables, meta)


def _int_rates(entry):
    """JSON turned the rate keys into strings."""
    entry["fixed"] = {proto: {int(rate): runs for rate, runs in by_rate.items()}
                      for proto, by_rate in entry["fixed"].items()}
    return entry


def wakeup_cost(ctx):
    """The CPU one sleep and wake-up costs on this machine (`weft-bench wakeup`): woken from an
    idle CPU by a thread on the other core (as a proxy is by its client or backend in the
    proxy-core layout) and by a thread on its own core (as one proxy is by the other)."""
    runs = {}
    layouts = {"cross_core": (1, 0), "same_core": (0, 0)} if (os.cpu_count() or 1) > 1 else {"same_core": (0, 0)}
    for name, (caller, echo) in layouts.items():
        cmd = [ctx.bench_bin, "wakeup", "--caller-cpu", str(caller), "--echo-cpu", str(echo), "--round-trips", "3000",
               "--gap-us", "200"]
        r = Child(f"wakeup-{name}", cmd, ctx.workdir).wait_json(timeout=60)
        runs[name] = {"us": round(r["echo_cpu_us_per_wakeup"], 1),
                      "sleeps_per_round_trip": round(r["echo_sleeps_per_round_trip"], 2)}
        print(f"wake-up cost ({name.replace('_', ' ')}): {runs[name]['us']:.1f} us CPU per sleep and wake-up "
              f"({runs[name]['sleeps_per_round_trip']:.2f} sleeps per round trip)", flush=True)
    return runs


def write_outputs(args, tables, meta):
    results = report.results_json(args, tables, meta)
    markdown = report.markdown(args, tables, meta)
    # The control-plane benchmark (cp_scale.py) shares both files: keep its key and section.
    results, markdown = cp_scale.carry_over(args.out, results, markdown)
    print()
    print(markdown)
    if not args.no_write:
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=2)
            f.write("\n")
        with open(os.path.join(args.out, "RESULTS.md"), "w") as f:
            f.write(markdown)
        print(f"wrote {args.out}/RESULTS.md and {args.out}/results.json")


def run_table(args, ctx, workers, layout=None, latency_only=False):
    # One worker, layout proxy-core: both proxies share core 0, the clients (load generator,
    # backend, control plane) get core 1, so the proxies' work is not mixed with the apps'. Every
    # request then crosses cores four times (client -> outbound, inbound -> backend and back), a
    # fixed cost both meshes pay. Layout sidecar: two "nodes" of one core each, each proxy beside
    # its app, only the meshed hop crosses cores. Layout unpinned: nothing pinned, the scheduler
    # places everything. Two workers: proxies on both cores, nothing else pinned.
    layout = layout or args.layout
    if layout == "unpinned":
        proxy_cpus = {"outbound": None, "inbound": None}
        ctx.client_cpus = ctx.server_cpus = None
    elif workers == 1 and layout == "sidecar":
        proxy_cpus = {"outbound": "1", "inbound": "0"}
        ctx.client_cpus, ctx.server_cpus = "1", "0"
    elif workers == 1:
        proxy_cpus = {"outbound": "0", "inbound": "0"}
        ctx.client_cpus = ctx.server_cpus = "1"
    else:
        proxy_cpus = {"outbound": "0,1", "inbound": "0,1"}
        ctx.client_cpus = ctx.server_cpus = None
    print(f"\n=== table: {workers} proxy worker thread(s); outbound proxy on CPU {proxy_cpus['outbound'] or 'any'}, "
          f"inbound proxy on CPU {proxy_cpus['inbound'] or 'any'}, clients on CPU {ctx.client_cpus or 'any'}, backend on "
          f"CPU {ctx.server_cpus or 'any'} ===", flush=True)
    backend = Child(f"backend-w{workers}", [ctx.bench_bin, "backend"], ctx.workdir, cpus=ctx.server_cpus)
    try:
        listening = backend.json_line()
        ctx.backend_http, ctx.backend_tcp = listening["http"], listening["tcp"]
        ctx.backend = backend
        table = {cfg: new_entry() for cfg in args.configs}
        for round_no in range(1, args.rounds + 1):
            for cfg in args.configs:
                print(f"--- round {round_no}, {cfg} ---", flush=True)
                measure_config(args, ctx, cfg, workers, proxy_cpus, table[cfg], latency_only)
        return table
    finally:
        backend.stop()


def new_entry():
    return {"fixed": {}, "max": [], "rss_fixed": [], "rss_max": [], "rss_idle": [], "tcp": [], "transport": None,
            "checks": []}


def measure_config(args, ctx, cfg, workers, proxy_cpus, entry, latency_only=False):
    """latency_only: the fixed rates with the HTTP/1.1 client, nothing else."""
    topo = topology.start(cfg, ctx, workers, proxy_cpus)
    try:
        entry["transport"], checks = check_transport(ctx, cfg, topo)
        first = not entry["checks"]
        if first:
            entry["checks"] = checks
        admitted = topology.authz_allowed(topo) if topo.authz_name else None
        completed = 0
        for proto in (["h1"] if latency_only else args.protos):
            for rate in args.rates:
                result = load(args, ctx, topo, proto, rate, args.duration)
                entry["fixed"].setdefault(proto, {}).setdefault(rate, []).append(result)
                completed += result["total_ok"]
        entry["rss_fixed"].append(rss(topo))
        if not latency_only:
            result = load(args, ctx, topo, "h1", 0, args.max_duration)
            entry["max"].append(result)
            completed += result["total_ok"]
            entry["rss_max"].append(rss(topo))
        if topo.authz_name:
            line = check_policy_counted(topo, admitted, completed)
            if first:
                entry["checks"].append(line)
        if latency_only:
            return
        entry["tcp"].append(tcp_throughput(args, ctx, topo))
    finally:
        topo.stop()
    if cfg != "direct" and args.idle_connections and not latency_only:
        entry["rss_idle"].append(idle_rss(args, ctx, cfg, workers, proxy_cpus))


def policy_line(topo):
    """The start proved the policy in force (topology._check_policy_in_force): say so."""
    return (f"ok  {topo.name} inbound metrics: inbound_http_authz_allow_total{{authz_name=\"{topo.authz_name}\"}} = "
            f"{topology.authz_allowed(topo) or 0:.0f} after the start-up requests (Server backend-http on the backend's "
            f"HTTP port; the AuthorizationPolicy requires MeshTLSAuthentication backend-clients and "
            f"NetworkAuthentication backend-networks)")


def check_policy_counted(topo, before, completed):
    """Every request the loads completed was admitted by the configuration's AuthorizationPolicy
    (the inbound proxy's inbound_http_authz_allow_total{authz_name=...}; warmups count too, so the
    counter grows by at least the completed requests). A policy that is not applied makes the
    configuration's numbers meaningless: the run aborts."""
    admitted = (topology.authz_allowed(topo) or 0) - (before or 0)
    ok = admitted >= completed
    line = (f"{'ok ' if ok else 'BAD'} {topo.name} inbound metrics: inbound_http_authz_allow_total"
            f"{{authz_name=\"{topo.authz_name}\"}} +{admitted:.0f} over the loads ({completed} requests completed, "
            f"warmups not counted)")
    print("  " + line, flush=True)
    if not ok:
        raise RuntimeError(f"{topo.name}: the policy was not applied to every request: {line}")
    return line


def check_transport(ctx, cfg, topo):
    """Proves what the meshed hop is before measuring. Returns (label, [check lines])."""
    if cfg == "direct":
        return "none (no proxy)", []
    addr, c = topo.inbound_http, ctx.certs
    if cfg == "envoy" or ctx.weft_mtls:
        cases = [("plaintext HTTP/2", dict(tls=False), False),
                 ("TLS 1.3 without a client certificate", dict(), False)]
        if topology.is_weft(cfg):
            # weft's inbound answers the handshake and refuses each request with 403: ask for one.
            cases = [("plaintext HTTP/2 request", dict(tls=False), False),
                     ("TLS 1.3 request without a client certificate", dict(tls=True), False)]
        if cfg == "envoy":
            cases += [("TLS 1.3, client cert with the wrong SPIFFE ID", dict(ca=c["ca.pem"], cert=c["rogue.pem"],
                                                                            key=c["rogue.key"]), False),
                      ("TLS 1.3, the client's certificate", dict(ca=c["ca.pem"], cert=c["client.pem"],
                                                                key=c["client.key"]), True)]
        lines = []
        for what, kw, expect in cases:
            if topology.is_weft(cfg):
                accepted, detail = request_probe(addr, topology.AUTHORITY, **kw)
            else:
                accepted, detail = probe(addr, **kw)
            ok = accepted == expect
            lines.append(f"{'ok ' if ok else 'BAD'} {cfg} inbound {addr}: {what}: {detail}")
            print("  " + lines[-1], flush=True)
            if not ok:
                raise RuntimeError(f"{cfg}: mTLS check failed: {lines[-1]}")
        if cfg == "envoy":
            # The positive side: the request that proved the topology up was a TLS 1.3 handshake.
            port = addr.rsplit(":", 1)[1]
            stats = http_text(f"http://{topo.admin['inbound']}/stats?filter=ssl")
            v13 = [l for l in stats.splitlines() if f"127.0.0.1_{port}.ssl." in l
                   and ("versions.TLSv1.3" in l or l.endswith(".ssl.handshake: 0") or ".ssl.handshake:" in l)]
            lines.append(f"ok  envoy inbound stats: {'; '.join(v13) or 'no TLS 1.3 counter'}")
            print("  " + lines[-1], flush=True)
        if topology.is_weft(cfg):
            # The positive side: the request that proved the topology up went over mTLS.
            metrics = http_text(f"http://{topo.admin['outbound']}/metrics")
            ok = any(l.startswith("request_total{") and 'tls="true"' in l for l in metrics.splitlines())
            lines.append(f"{'ok ' if ok else 'BAD'} {cfg} outbound metrics: request_total with tls=\"true\"")
            print("  " + lines[-1], flush=True)
            if not ok:
                raise RuntimeError("weft: mTLS on but the outbound proxy sent no request over mTLS")
            if topo.authz_name:
                lines.append(policy_line(topo))
                print("  " + lines[-1], flush=True)
            return ("HTTP/2 over mTLS (TLS 1.3, weft identity; client certificate required on the backend "
                    "ports)"), lines
        return "HTTP/2 over mTLS (TLS 1.3, client certificate and SPIFFE SAN required)", lines
    accepted, detail = probe(addr, tls=False)
    line = f"info {cfg} inbound {addr}: plaintext HTTP/2: {detail}"
    print("  " + line, flush=True)
    return "plaintext HTTP/2 (--no-weft-mtls)", [line]


def snapshot(ctx, topo):
    return {
        "proxies": {role: cpu_seconds(child.pid) for role, child in topo.proxies.items()},
        "sleeps": {role: sleeps(child.pid) for role, child in topo.proxies.items()},
        "backend": cpu_seconds(ctx.backend.pid),
        "control": sum(cpu_seconds(child.pid) for child in topo.others.values()),
        "system": system_busy_seconds(),
        "wall": time.monotonic(),
    }


def cpu_split(before, after, client_cpu):
    d = {k: after[k] - before[k] for k in ("backend", "control", "system", "wall")}
    proxies = sum(after["proxies"][r] - before["proxies"][r] for r in before["proxies"])
    return {
        "proxies_s": proxies,
        "per_proxy_s": {r: after["proxies"][r] - before["proxies"][r] for r in before["proxies"]},
        "proxy_sleeps": sum(after["sleeps"][r] - before["sleeps"][r] for r in before["sleeps"]),
        "backend_s": d["backend"],
        "loadgen_s": client_cpu,
        "control_s": d["control"],
        "other_s": max(0.0, d["system"] - proxies - d["backend"] - d["control"] - client_cpu),
        "wall_s": d["wall"],
    }


def load(args, ctx, topo, proto, rate, duration):
    cmd = [ctx.bench_bin, "load", "--addr", topo.http, "--authority", topology.AUTHORITY, "--proto", proto,
           "--rate", str(rate), "--duration", str(duration), "--warmup", str(args.warmup)]
    if rate == 0:
        cmd += ["--connections", str(args.max_connections)]
    before = snapshot(ctx, topo)
    result = Child("loadgen", cmd, ctx.workdir, cpus=ctx.client_cpus).wait_json(timeout=duration + args.warmup + 60)
    after = snapshot(ctx, topo)
    result["cpu"] = cpu_split(before, after, result["cpu_s"])
    cpu = result["cpu"]
    result["cpu_us_per_req"] = (cpu["proxies_s"] * 1e6 / result["total_ok"]) if topo.proxies and result["total_ok"] else None
    # Sleeps (each followed by a wake-up) of both proxies per request: at fixed rates most of the
    # CPU per request on a VM (see "wakeup" in the report's header).
    result["sleeps_per_req"] = (cpu["proxy_sleeps"] / result["total_ok"]) if topo.proxies and result["total_ok"] else None
    label = f"{rate}/s" if rate else "max"
    per_req = (f"{result['cpu_us_per_req']:.0f} us/req, {result['sleeps_per_req']:.2f} sleeps/req"
               if result["cpu_us_per_req"] is not None else "-")
    print(f"  {topo.name:6} {proto} {label:>6}: {result['achieved_rps']:8.0f} req/s  p50 {result['p50_ms']:.3f}  "
          f"p90 {result['p90_ms']:.3f}  p99 {result['p99_ms']:.3f}  p99.9 {result['p999_ms']:.3f} ms  "
          f"err {result['errors']}  | cpu s: proxies {cpu['proxies_s']:.2f} ({per_req})  backend "
          f"{cpu['backend_s']:.2f}  loadgen {cpu['loadgen_s']:.2f}  control {cpu['control_s']:.2f}  "
          f"other {cpu['other_s']:.2f}  (wall {cpu['wall_s']:.1f})", flush=True)
    if result["errors"]:
        print(f"    first error: {result['first_error']}", flush=True)
    return result


def rss(topo):
    """Peak RSS (VmHWM) per proxy, MiB."""
    return {role: memory_mib(child.pid)[1] for role, child in topo.proxies.items()}


def tcp_throughput(args, ctx, topo):
    # One stream through a proxy can be cut (Envoy's tcp_proxy once answered a broken pipe
    # mid-stream); a second attempt keeps one bad stream from aborting the whole run.
    for attempt in (1, 2):
        before = snapshot(ctx, topo)
        try:
            result = Child("tcp", [ctx.bench_bin, "tcp", "--addr", topo.tcp, "--bytes", str(args.tcp_mib << 20)],
                           ctx.workdir, cpus=ctx.client_cpus).wait_json(timeout=300)
            break
        except RuntimeError as e:
            if attempt == 2:
                raise
            print(f"  {topo.name:6} tcp: attempt 1 failed, trying once more: {str(e)[:200]}", flush=True)
    after = snapshot(ctx, topo)
    result["cpu"] = cpu_split(before, after, result["cpu_s"])
    print(f"  {topo.name:6} tcp: {result['mb_per_s']:.0f} MB/s ({args.tcp_mib} MiB in {result['seconds']:.2f} s; "
          f"proxies {result['cpu']['proxies_s']:.2f} cpu s)", flush=True)
    return result


def idle_rss(args, ctx, cfg, workers, proxy_cpus):
    topo = topology.start(cfg, ctx, workers, proxy_cpus)
    idle = None
    try:
        idle = Child("idle", [ctx.bench_bin, "idle", "--addr", topo.http, "--authority", topology.AUTHORITY,
                              "--connections", str(args.idle_connections), "--hold", "300"],
                     ctx.workdir, cpus=ctx.client_cpus)
        line = idle.json_line(timeout=120)
        # Let the proxies settle (buffers released, connection tasks parked) before reading.
        time.sleep(1.0)
        out = {role: {"rss": memory_mib(child.pid)[0], "hwm": memory_mib(child.pid)[1]}
               for role, child in topo.proxies.items()}
        out["open"], out["errors"] = line["open"], line["errors"]
        print(f"  {cfg:6} idle: {line['open']} connections open ({line['errors']} failed); " + ", ".join(
            f"{r} RSS {v['rss']:.1f} MiB (peak {v['hwm']:.1f})" for r, v in out.items() if isinstance(v, dict)),
            flush=True)
        return out
    finally:
        if idle:
            idle.stop()
        topo.stop()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
