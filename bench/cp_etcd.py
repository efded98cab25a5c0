"""The etcd run of the control-plane benchmark (`bench/run --control-plane --store etcd`, issue 13).

Starts a real etcd (Debian's etcd-server) on loopback ephemeral ports with its data in the work
directory, loads the services and endpoints of the file-store run into it (`weft-bench
cp-etcd-load`: one key per resource under PREFIX/resources/, in transactions of 500 puts), starts
--replicas `weft control --store etcd://127.0.0.1:PORT/weft-bench` processes, and runs `weft-bench
cp-scale` against all of them: stream k on replica k mod R (the hot service's streams too),
register/deregister through the first replica's API, the bulk change as one etcd transaction
rewriting endpoint 0 of every service. Reports per replica CPU and peak RSS (VmHWM), etcd's own,
and the per-stream fan-out over every stream of every replica.

Results: the `control_plane_etcd` key of bench/results.json and the etcd subsection right after
the control-plane section of bench/RESULTS.md. Exit 1 (after writing) if a target is missed.
"""

import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import cp_scale
from harness import Child, cpu_seconds, free_port, http_get, memory_mib, system_busy_seconds, wait_until
from cp_scale import ETCD_BEGIN, ETCD_END, ETCD_KEY, TARGETS, _f

PREFIX = "weft-bench"
# Puts per load transaction; etcd is started with --max-txn-ops above it and above the bulk
# change's one put per service.
BATCH = 500


def run(args, argv):
    replicas = args.replicas or 3
    workdir = tempfile.mkdtemp(prefix="weft-bench-cp-etcd-")
    bench_bin = os.path.join(cp_scale.RELEASE, "weft-bench")
    weft_bin = os.path.join(cp_scale.RELEASE, "weft")
    layout = ["--services", str(args.services), "--per-service", str(args.per_service)]
    print(f"work dir (logs; etcd data while it runs): {workdir}", flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)

    etcd, endpoint = start_etcd(workdir, max_txn_ops=max(BATCH, args.services) + 100)
    controls = []
    try:
        store = f"etcd://{endpoint}/{PREFIX}"
        loaded = Child("cp-etcd-load", [bench_bin, "cp-etcd-load", "--etcd", store, "--batch", str(BATCH),
                                        *layout], workdir).wait_json(timeout=120)
        print(f"etcd: {loaded['services']} services, {loaded['workloads']} workloads in {loaded['keys']} keys "
              f"({loaded['bytes'] / 2**20:.2f} MiB) loaded in {loaded['seconds']:.2f} s ({loaded['txns']} "
              f"transactions)", flush=True)

        busy0, wall0 = system_busy_seconds(), time.monotonic()
        etcd_cpu0 = cpu_seconds(etcd.pid)
        for r in range(replicas):
            controls.append(Child(f"weft-control-{r}", [weft_bin, "control", "--store", store,
                                                        "--grpc-addr", "127.0.0.1:0", "--api-addr", "127.0.0.1:0"],
                                  workdir, env={"WEFT_LOG": "info"}))
        listening = [c.json_line(timeout=120) for c in controls]
        for r, l in enumerate(listening):
            wait_until(f"weft control {r} /ready", lambda: http_get(f"http://{l['api']}/ready") == 200, timeout=60)
        startup = {"seconds": time.monotonic() - wall0,
                   "cpu_s": [cpu_seconds(c.pid) for c in controls],
                   "rss_mib": [memory_mib(c.pid)[0] for c in controls]}
        print(f"{replicas} weft control replicas ready in {startup['seconds']:.2f} s (CPU "
              f"{', '.join(f'{c:.2f}' for c in startup['cpu_s'])} s; RSS "
              f"{', '.join(f'{m:.1f}' for m in startup['rss_mib'])} MiB)", flush=True)

        cmd = [bench_bin, "cp-scale", "--grpc", ",".join(l["grpc"] for l in listening),
               "--api", listening[0]["api"], "--etcd", store,
               "--control-pid", ",".join(str(c.pid) for c in controls), *layout,
               "--streams", str(args.streams), "--connections", str(args.connections),
               "--hot-streams", str(args.hot_streams), "--rounds", str(args.rounds),
               "--timeout", str(args.timeout), "--settle", str(args.settle)]
        scale = Child("cp-scale", cmd, workdir)
        budget = 120 + args.rounds * 3 * (args.timeout + args.settle + 5)
        try:
            result = scale.wait_json(timeout=budget)
        finally:
            with open(scale.log_path) as f:
                print(f.read(), end="", flush=True)
        per_replica = [{"cpu_s": cpu_seconds(c.pid), "memory": memory_mib(c.pid)} for c in controls]
        etcd_usage = {"cpu_s": cpu_seconds(etcd.pid) - etcd_cpu0, "rss_mib_peak": memory_mib(etcd.pid)[1]}
    finally:
        for c in controls:
            c.stop()
        etcd.stop()
        # ~60 MiB of WAL and snapshots per run; the logs stay in the work dir.
        shutil.rmtree(os.path.join(workdir, "etcd-data"), ignore_errors=True)
    busy, wall = system_busy_seconds() - busy0, time.monotonic() - wall0

    with open(os.path.join(workdir, "cp-scale.json"), "w") as f:
        json.dump(result, f)
    entry = summarize(argv, started, loaded, replicas, startup, result, per_replica, etcd_usage, busy, wall)
    markdown = section(entry)
    print()
    print(markdown)
    if not args.no_write:
        cp_scale.write(args.out, entry, markdown, key=ETCD_KEY, begin=ETCD_BEGIN, end=ETCD_END,
                       after=cp_scale.END)
        print(f"wrote the etcd control-plane parts of {args.out}/RESULTS.md and {args.out}/results.json")
    missed = [k for k, t in entry["targets"].items() if not t["met"]]
    if missed:
        print(f"bench: control plane (etcd): missed {', '.join(missed)} (see above)", file=sys.stderr)
        return 1
    return 0


def start_etcd(workdir, max_txn_ops):
    """etcd on two free loopback ports with its data in `workdir`; returns (Child, HOST:PORT)."""
    if shutil.which("etcd") is None:
        raise RuntimeError("`etcd` is not installed: apt-get install -y etcd-server etcd-client")
    client, peer = f"http://127.0.0.1:{free_port()}", f"http://127.0.0.1:{free_port()}"
    etcd = Child("etcd", ["etcd", "--name=bench", f"--data-dir={os.path.join(workdir, 'etcd-data')}",
                          f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
                          f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
                          f"--initial-cluster=bench={peer}", f"--max-txn-ops={max_txn_ops}"], workdir)
    try:
        wait_until("etcd /health", lambda: http_get(f"{client}/health") == 200, timeout=30)
    except RuntimeError:
        etcd.stop()
        raise
    return etcd, client.removeprefix("http://")


def etcd_version():
    try:
        out = subprocess.run(["etcd", "--version"], capture_output=True, text=True, timeout=10).stdout
        return out.splitlines()[0].removeprefix("etcd Version: ").strip()
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def summarize(argv, started, loaded, replicas, startup, result, per_replica, etcd_usage, busy, wall):
    s = result["summary"]
    allp = s["all"]["per_stream"]
    meta = cp_scale.metadata(started)
    reps = []
    for r, (rep, fin) in enumerate(zip(result["replicas"], per_replica)):
        reps.append({**rep, "startup_cpu_s": startup["cpu_s"][r], "startup_rss_mib": startup["rss_mib"][r],
                     "cpu_s_total": fin["cpu_s"], "rss_mib_end": fin["memory"][0], "hwm_mib": fin["memory"][1]})
    hwm = max(r["hwm_mib"] for r in reps)
    control_cpu = sum(r["cpu_s_total"] for r in reps)
    client_cpu = result["client_cpu_s"]
    return {
        "date": meta["date"],
        "machine": meta["machine"],
        "versions": {"weft": meta["versions"]["weft"], "rustc": meta["versions"]["rustc"], "etcd": etcd_version()},
        "command": cp_scale.command(argv),
        "settings": {
            "services": loaded["services"], "endpoints": loaded["workloads"], "etcd_keys": loaded["keys"],
            "etcd_mib": loaded["bytes"] / 2**20, "load_seconds": loaded["seconds"], "load_txns": loaded["txns"],
            "layout": f"/{PREFIX}/resources/services/svc-NNN (one Service each), "
                      f"/{PREFIX}/resources/workloads/svc-NNN-J (one ExternalWorkload each)",
            "replicas": replicas, "streams": result["streams"], "connections_per_replica": result["connections"],
            "hot_service_streams": result["hot_service_streams"], "rounds": result["rounds"],
        },
        "startup": {"seconds": startup["seconds"]},
        "open": result["open"],
        "fanout": {k: {kk: s[k][kk] for kk in ("changes", "per_stream", "last_stream", "api_ms",
                                               "control_cpu_s_per_change")} for k in s},
        "replicas": reps,
        "etcd": etcd_usage,
        "p50_ms": allp["p50_ms"], "p99_ms": allp["p99_ms"], "max_ms": allp["max_ms"],
        "rss_mib": hwm,
        "cpu_s": control_cpu,
        "streams_dropped": result["dropped_streams"],
        "first_drop": result["first_drop"],
        "updates_missed": result["missing_updates"],
        "final_mismatch": result["final_mismatch"],
        "unexpected_messages": result["unexpected_messages"],
        "noise": {"wall_s": wall, "control_cpu_s": control_cpu, "etcd_cpu_s": etcd_usage["cpu_s"],
                  "client_cpu_s": client_cpu,
                  "other_cpu_s": max(0.0, busy - control_cpu - client_cpu - etcd_usage["cpu_s"])},
        "targets": {
            "p99_fanout_under_1s": {"met": allp["p99_ms"] is not None and allp["p99_ms"] < TARGETS["p99_ms"],
                                    "value_ms": allp["p99_ms"]},
            "rss_under_300mib_per_replica": {"met": hwm < TARGETS["rss_mib"], "value_mib": hwm},
            "no_stream_dropped": {"met": result["ok"], "dropped": result["dropped_streams"],
                                  "missed_updates": result["missing_updates"],
                                  "wrong_final_sets": result["final_mismatch"]},
        },
    }


def section(e):
    st, t, n = e["settings"], e["targets"], e["noise"]

    def met(key):
        return "met" if t[key]["met"] else "MISSED"
    rows = cp_scale.fanout_rows(e, (
        ("register", f"PUT one more endpoint of svc-000 through replica 0's API "
                     f"({st['hot_service_streams']} streams on {st['replicas']} replicas)"),
        ("deregister", "DELETE it (same streams)"),
        ("txn", f"one etcd transaction: endpoint 0 of all {st['services']} services moves "
                f"(all {st['streams']} streams)"),
        ("all", "every change pooled")))
    reps = []
    for r, rep in enumerate(e["replicas"]):
        ps = rep["per_stream"]
        reps.append(f"| {r} | {rep['streams']} ({rep['hot_service_streams']} on svc-000) | {ps['n']} "
                    f"| {_f(ps['p50_ms'])} | {_f(ps['p99_ms'])} | {_f(ps['max_ms'])} | {rep['dropped_streams']} "
                    f"| {rep['startup_cpu_s']:.2f} | {rep['cpu_s_total']:.2f} | {rep['hwm_mib']:.1f} |")
    fa = e["open"]["first_answer"]
    cpus = os.cpu_count() or 1
    lines = [
        ETCD_BEGIN,
        f"### etcd store, {st['replicas']} replicas (issue 13)",
        "",
        f"- Date: {e['date']}",
        f"- Machine: {e['machine']}",
        f"- Versions: weft {e['versions']['weft']}; {e['versions']['rustc']}; etcd {e['versions']['etcd']} "
        "(Debian etcd-server, one member, loopback, data on local disk)",
        f"- Command: `{e['command']}` (release builds)",
        f"- Store: the same {st['services']} Services and {st['endpoints']} ExternalWorkload endpoints, "
        f"{st['etcd_keys']} etcd keys ({st['etcd_mib']:.2f} MiB): {st['layout']}; loaded in "
        f"{st['load_seconds']:.2f} s ({st['load_txns']} transactions). {st['replicas']} `weft control --store "
        f"etcd://…/weft-bench` replicas; {st['streams']} Destination.Get streams, stream k on replica k mod "
        f"{st['replicas']} over {st['connections_per_replica']} HTTP/2 connections per replica, "
        f"{st['hot_service_streams']} on svc-000 (on every replica); {st['rounds']} rounds of register → "
        "deregister → transaction, one change at a time, every register/deregister through replica 0's API.",
        "- Latency: as above, from the instant before the change (API request sent / transaction sent) to the "
        "message after which the stream's endpoint set equals the store, for every stream on every replica.",
        "",
        "| change | what | changes | stream updates | p50 ms | p99 ms | max ms | last stream p50 / max ms "
        "| API answer p50 ms | control CPU s / change (all replicas) |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
        *rows,
        "",
        "| replica | streams | stream updates | p50 ms | p99 ms | max ms | dropped | startup CPU s | CPU s (whole run) "
        "| peak RSS (VmHWM) MiB |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *reps,
        "",
        f"- Opening: all {st['streams']} first answers within {_f(fa['max_ms'])} ms (p50 {_f(fa['p50_ms'])}); "
        f"replicas ready {e['startup']['seconds']:.2f} s after start (list of the prefix, parse, index).",
        f"- etcd: CPU {e['etcd']['cpu_s']:.2f} s over the run, peak RSS {e['etcd']['rss_mib_peak']:.1f} MiB.",
        f"- Streams: {e['streams_dropped']} dropped, {e['updates_missed']} expected updates missed, "
        f"{e['final_mismatch']} with a wrong final endpoint set, {e['unexpected_messages']} messages on streams "
        f"that should not have heard anything." + (f" First drop: {e['first_drop']}" if e["first_drop"] else ""),
        f"- Noise: wall {n['wall_s']:.0f} s; CPU s: control planes {n['control_cpu_s']:.2f}, etcd "
        f"{n['etcd_cpu_s']:.2f}, benchmark client {n['client_cpu_s']:.2f}, everything else on the machine "
        f"{n['other_cpu_s']:.2f}.",
        "",
        *([f"> **Noisy run:** other processes used {n['other_cpu_s']:.0f} of the {n['wall_s'] * cpus:.0f} "
           "CPU-seconds the machine had during it (other work on the machine, e.g. builds); latencies are "
           "upper bounds for this machine.", ""]
          if n["other_cpu_s"] > 0.25 * n["wall_s"] * cpus else []),
        "Targets (issue 13):",
        "",
        f"- {met('p99_fanout_under_1s')}: p99 fan-out < 1 s ({_f(e['p99_ms'])} ms per stream over every change "
        f"and replica; max {_f(e['max_ms'])} ms)",
        f"- {met('rss_under_300mib_per_replica')}: RSS < 300 MiB per replica ({e['rss_mib']:.1f} MiB, the "
        "largest replica's peak)",
        f"- {met('no_stream_dropped')}: no stream dropped ({e['streams_dropped']} dropped, "
        f"{e['updates_missed']} missed updates, {e['final_mismatch']} wrong final sets)",
        "",
        "Reproduce: `bench/run --control-plane --store etcd` (`--replicas N`, default 3; needs `etcd` from "
        "etcd-server).",
        ETCD_END,
        "",
    ]
    return "\n".join(lines)
