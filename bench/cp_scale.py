#!/usr/bin/env python3
"""Weft control-plane benchmark driver (`bench/run --control-plane`; see bench/README.md).

Writes a store of --services Services with --per-service ExternalWorkload endpoints each
(`weft-bench cp-store`), starts `weft control` on it (loopback, ephemeral ports), and runs
`weft-bench cp-scale`: --streams Destination.Get watch streams over --connections HTTP/2
connections, then --rounds rounds of (register one endpoint of the hot service through the API,
deregister it, rewrite one workload file that changes every service), measuring the time from
each change to the update on every stream that should see it. Reports the control plane's CPU
(utime+stime) and peak RSS (VmHWM), and fails (exit 1, after writing) if any stream was dropped,
missed an update or ended up with the wrong endpoint set.

The results go into the `control_plane` key of bench/results.json and the control-plane section
of bench/RESULTS.md; the data-plane parts of both files are left alone.

With --store etcd (issue 13) the same services and endpoints live in a real etcd instead (one key
per resource under PREFIX/resources/), --replicas `weft control --store etcd://...` processes share
it, the streams are spread over every replica, register/deregister go through the first one, and
the bulk change is one etcd transaction instead of a file write (bench/cp_etcd.py). Those results
go into the `control_plane_etcd` key and their own subsection of the control-plane section.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import report  # noqa: E402
from harness import Child, cpu_seconds, http_get, memory_mib, system_busy_seconds, wait_until  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.path.join(ROOT, "target", "release")
BEGIN = "<!-- control-plane:begin (written by bench/run --control-plane) -->"
END = "<!-- control-plane:end -->"
# The store's poll interval (docs/control-plane.md): a file change waits up to this long to be seen.
POLL_MS = 200
TARGETS = {"p99_ms": 1000.0, "rss_mib": 300.0}


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run --control-plane", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--services", type=int, default=500)
    p.add_argument("--per-service", type=int, default=10, help="endpoints per service")
    p.add_argument("--streams", type=int, default=1000, help="Destination.Get watch streams")
    p.add_argument("--connections", type=int, default=4,
                   help="HTTP/2 connections carrying the streams (per replica)")
    p.add_argument("--hot-streams", type=int, default=100,
                   help="streams on svc-000, the service the register/deregister changes touch")
    p.add_argument("--rounds", type=int, default=5, help="rounds of (register, deregister, file change)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds before an expected update counts as missed")
    p.add_argument("--settle", type=float, default=1.0,
                   help="seconds to keep listening after a change's last expected update (catches extra messages)")
    p.add_argument("--store", choices=("files", "etcd"), default="files",
                   help="where the resources live: a store directory (one `weft control`), or a real etcd "
                        "shared by --replicas control planes")
    p.add_argument("--replicas", type=int, default=None,
                   help="control-plane replicas on the etcd prefix (--store etcd only; default 3)")
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                   help="where RESULTS.md and results.json are")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md/results.json alone")
    args = p.parse_args(argv)
    if args.store == "files" and args.replicas not in (None, 1):
        p.error("--replicas needs --store etcd (replicas of the file store do not share registrations)")
    if args.replicas is not None and args.replicas < 1:
        p.error("--replicas must be at least 1")
    return args


def main(argv):
    args = parse_args(argv)
    if args.store == "etcd":
        import cp_etcd
        return cp_etcd.run(args, argv)
    workdir = tempfile.mkdtemp(prefix="weft-bench-cp-")
    bench_bin, weft_bin = os.path.join(RELEASE, "weft-bench"), os.path.join(RELEASE, "weft")
    store = os.path.join(workdir, "store")
    layout = ["--services", str(args.services), "--per-service", str(args.per_service)]
    print(f"work dir (store, logs): {workdir}", flush=True)
    started = datetime.datetime.now(datetime.timezone.utc)

    written = Child("cp-store", [bench_bin, "cp-store", "--dir", store, *layout], workdir).wait_json(timeout=120)
    print(f"store: {written['services']} services, {written['workloads']} workloads in {written['files']} files "
          f"({written['bytes'] / 2**20:.2f} MiB of YAML)", flush=True)

    busy0, wall0 = system_busy_seconds(), time.monotonic()
    control = Child("weft-control", [weft_bin, "control", "--store", store, "--grpc-addr", "127.0.0.1:0",
                                     "--api-addr", "127.0.0.1:0"], workdir, env={"WEFT_LOG": "info"})
    try:
        listening = control.json_line(timeout=120)
        wait_until("weft control /ready", lambda: http_get(f"http://{listening['api']}/ready") == 200, timeout=60)
        startup = {"seconds": time.monotonic() - wall0, "cpu_s": cpu_seconds(control.pid),
                   "rss_mib": memory_mib(control.pid)[0]}
        print(f"weft control ready in {startup['seconds']:.2f} s (CPU {startup['cpu_s']:.2f} s, "
              f"RSS {startup['rss_mib']:.1f} MiB); gRPC {listening['grpc']}, API {listening['api']}", flush=True)

        cmd = [bench_bin, "cp-scale", "--grpc", listening["grpc"], "--api", listening["api"], "--store", store,
               "--control-pid", str(control.pid), *layout, "--streams", str(args.streams),
               "--connections", str(args.connections), "--hot-streams", str(args.hot_streams),
               "--rounds", str(args.rounds), "--timeout", str(args.timeout), "--settle", str(args.settle)]
        run = Child("cp-scale", cmd, workdir)
        budget = 120 + args.rounds * 3 * (args.timeout + args.settle + 5)
        try:
            result = run.wait_json(timeout=budget)
        finally:
            with open(run.log_path) as f:
                print(f.read(), end="", flush=True)
        control_cpu = cpu_seconds(control.pid)
        control_rss, control_hwm = memory_mib(control.pid)
    finally:
        control.stop()
    busy, wall = system_busy_seconds() - busy0, time.monotonic() - wall0

    with open(os.path.join(workdir, "cp-scale.json"), "w") as f:
        json.dump(result, f)
    entry = summarize(args, argv, started, written, startup, result, control_cpu, control_rss, control_hwm,
                      busy, wall)
    markdown = section(entry)
    print()
    print(markdown)
    if not args.no_write:
        write(args.out, entry, markdown)
        print(f"wrote the control-plane parts of {args.out}/RESULTS.md and {args.out}/results.json")
    if not entry["targets"]["no_stream_dropped"]["met"]:
        print("bench: control plane: a stream was dropped or missed an update (see above)", file=sys.stderr)
        return 1
    return 0


def summarize(args, argv, started, written, startup, result, control_cpu, control_rss, control_hwm, busy, wall):
    s = result["summary"]
    allp = s["all"]["per_stream"]
    client_cpu = result["client_cpu_s"]
    meta = metadata(started)
    ok = result["ok"]
    return {
        "date": meta["date"],
        "machine": meta["machine"],
        "versions": {"weft": meta["versions"]["weft"], "rustc": meta["versions"]["rustc"]},
        "command": command(argv),
        "settings": {
            "services": written["services"], "endpoints": written["workloads"], "store_files": written["files"],
            "store_mib": written["bytes"] / 2**20, "streams": result["streams"],
            "connections": result["connections"], "hot_service_streams": result["hot_service_streams"],
            "rounds": result["rounds"], "store_poll_ms": POLL_MS,
        },
        "startup": startup,
        "open": result["open"],
        "fanout": {k: {kk: s[k][kk] for kk in ("changes", "per_stream", "last_stream", "api_ms",
                                               "control_cpu_s_per_change")} for k in s},
        # The headline: per-stream latency over every change.
        "p50_ms": allp["p50_ms"], "p99_ms": allp["p99_ms"], "max_ms": allp["max_ms"],
        "rss_mib": control_hwm,
        "rss_mib_end": control_rss,
        "cpu_s": control_cpu,
        "streams_dropped": result["dropped_streams"],
        "first_drop": result["first_drop"],
        "updates_missed": result["missing_updates"],
        "final_mismatch": result["final_mismatch"],
        "unexpected_messages": result["unexpected_messages"],
        "noise": {"wall_s": wall, "control_cpu_s": control_cpu, "client_cpu_s": client_cpu,
                  "other_cpu_s": max(0.0, busy - control_cpu - client_cpu)},
        "targets": {
            "p99_fanout_under_1s": {"met": allp["p99_ms"] is not None and allp["p99_ms"] < TARGETS["p99_ms"],
                                    "value_ms": allp["p99_ms"]},
            "rss_under_300mib": {"met": control_hwm < TARGETS["rss_mib"], "value_mib": control_hwm},
            "no_stream_dropped": {"met": ok, "dropped": result["dropped_streams"],
                                  "missed_updates": result["missing_updates"],
                                  "wrong_final_sets": result["final_mismatch"]},
        },
    }


def command(argv):
    return (("BENCH_NO_BUILD=1 " if os.environ.get("BENCH_NO_BUILD") else "")
            + " ".join(["bench/run --control-plane", *map(shlex.quote, argv)]))


def metadata(started):
    model = "?"
    with open("/proc/cpuinfo") as f:
        model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), model)
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "date": started.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{model}, {os.cpu_count()} CPUs, {mem_gib:.0f} GiB, Linux {platform.release()}",
        "versions": {"weft": report.weft_version(ROOT),
                     "rustc": report._cmd(["rustc", "--version"])},
    }


def _f(v, digits=1):
    return "-" if v is None else f"{v:.{digits}f}"


def fanout_rows(e, kinds):
    """One table row per (change kind, description) of the fan-out figures."""
    rows = []
    for kind, what in kinds:
        f = e["fanout"].get(kind)
        if not f:
            continue
        ps, ls = f["per_stream"], f["last_stream"]
        api = f["api_ms"]["p50_ms"] if f["api_ms"] else None
        rows.append(f"| {kind} | {what} | {f['changes']} | {ps['n']} | {_f(ps['p50_ms'])} | {_f(ps['p99_ms'])} "
                    f"| {_f(ps['max_ms'])} | {_f(ls['p50_ms'])} / {_f(ls['max_ms'])} | {_f(api)} "
                    f"| {_f(f['control_cpu_s_per_change'], 2)} |")
    return rows


def section(e):
    st, t, n = e["settings"], e["targets"], e["noise"]

    def met(key):
        return "met" if t[key]["met"] else "MISSED"
    rows = fanout_rows(e, (
        ("register", f"PUT one more endpoint of svc-000 ({st['hot_service_streams']} streams)"),
        ("deregister", "DELETE it (same streams)"),
        ("file", f"rewrite workloads-00.yaml: endpoint 0 of all {st['services']} services moves "
                 f"(all {st['streams']} streams; includes the ≤ {st['store_poll_ms']} ms poll)"),
        ("all", "every change pooled")))
    fa = e["open"]["first_answer"]
    lines = [
        BEGIN,
        "## Control plane at scale",
        "",
        f"- Date: {e['date']}",
        f"- Machine: {e['machine']}",
        f"- Versions: weft {e['versions']['weft']}; {e['versions']['rustc']}",
        f"- Command: `{e['command']}` (`weft control` release build, loopback, store polled every "
        f"{st['store_poll_ms']} ms)",
        f"- Store: {st['services']} Services, {st['endpoints']} ExternalWorkload endpoints ({st['endpoints'] // max(1, st['services'])} "
        f"per service, 198.18.0.0/15) in {st['store_files']} files ({st['store_mib']:.2f} MiB YAML). "
        f"{st['streams']} Destination.Get streams over {st['connections']} HTTP/2 connections (tonic, "
        f"linkerd2-proxy-api), {st['hot_service_streams']} on svc-000, the rest round-robin over every service; "
        f"{st['rounds']} rounds of register → deregister → file change, one change at a time.",
        "- Latency: from the instant before the change (API request sent / file written) to the arrival of the "
        "message after which the stream's endpoint set equals the store; per stream, pooled over the changes. "
        "\"Last stream\" = the slowest stream of each change (median / max over the changes).",
        "",
        "| change | what | changes | stream updates | p50 ms | p99 ms | max ms | last stream p50 / max ms "
        "| API answer p50 ms | control CPU s / change |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|",
        *rows,
        "",
        f"- Opening: all {st['streams']} first answers within {_f(fa['max_ms'])} ms (p50 {_f(fa['p50_ms'])}); "
        f"control CPU {e['open']['control_cpu_s']:.2f} s, RSS {e['open']['control_rss_mib']:.1f} MiB with the streams "
        f"open. Startup (load of the store, ready): {e['startup']['seconds']:.2f} s, CPU {e['startup']['cpu_s']:.2f} s, "
        f"RSS {e['startup']['rss_mib']:.1f} MiB.",
        f"- Control plane over the whole run: CPU (utime+stime) {e['cpu_s']:.2f} s, peak RSS (VmHWM) "
        f"{e['rss_mib']:.1f} MiB (VmRSS at the end {e['rss_mib_end']:.1f} MiB).",
        f"- Streams: {e['streams_dropped']} dropped, {e['updates_missed']} expected updates missed, "
        f"{e['final_mismatch']} with a wrong final endpoint set, {e['unexpected_messages']} messages on streams "
        f"that should not have heard anything." + (f" First drop: {e['first_drop']}" if e["first_drop"] else ""),
        f"- Noise: wall {n['wall_s']:.0f} s; CPU s: control {n['control_cpu_s']:.2f}, benchmark client "
        f"{n['client_cpu_s']:.2f}, everything else on the machine {n['other_cpu_s']:.2f}.",
        "",
        *([f"> **Noisy run:** other processes used {n['other_cpu_s']:.0f} of the "
           f"{n['wall_s'] * (os.cpu_count() or 1):.0f} CPU-seconds the machine had during it (other work on the machine, e.g. builds); "
           "latencies are upper bounds for this machine.", ""]
          if n["other_cpu_s"] > 0.25 * n["wall_s"] * (os.cpu_count() or 1) else []),
        "Targets (issue 5):",
        "",
        f"- {met('p99_fanout_under_1s')}: p99 fan-out < 1 s ({_f(e['p99_ms'])} ms per stream over every change; "
        f"max {_f(e['max_ms'])} ms)",
        f"- {met('rss_under_300mib')}: RSS < 300 MiB ({e['rss_mib']:.1f} MiB peak)",
        f"- {met('no_stream_dropped')}: no stream dropped ({e['streams_dropped']} dropped, "
        f"{e['updates_missed']} missed updates, {e['final_mismatch']} wrong final sets)",
        "",
        "Reproduce: `bench/run --control-plane` (about 30 s after the release build; `--help` for the sizes).",
        END,
        "",
    ]
    return "\n".join(lines)


def write(out, entry, markdown, key="control_plane", begin=BEGIN, end=END, after=None):
    """Puts `entry` under `key` of results.json and `markdown` between `begin` and `end` of
    RESULTS.md (a new section goes right after the line `after` when there is one)."""
    path = os.path.join(out, "results.json")
    try:
        with open(path) as f:
            results = json.load(f)
    except (OSError, ValueError):
        results = {}
    results[key] = entry
    with open(path, "w") as f:
        json.dump(results, f, indent=2)
        f.write("\n")
    path = os.path.join(out, "RESULTS.md")
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        text = ""
    with open(path, "w") as f:
        f.write(with_section(text, markdown, begin, end, after))


def with_section(text, markdown, begin=BEGIN, end=END, after=None):
    """`text` with its section between `begin` and `end` replaced by `markdown` (inserted after
    the line `after`, or appended, if it has none)."""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
    if pattern.search(text):
        return pattern.sub(lambda _: markdown, text)
    if after and after + "\n" in text:
        head, tail = text.split(after + "\n", 1)
        return head + after + "\n" + markdown + tail
    return text.rstrip("\n") + "\n\n" + markdown


# The etcd run's key and RESULTS.md subsection (bench/cp_etcd.py), right after the file-store one.
ETCD_KEY = "control_plane_etcd"
ETCD_BEGIN = "<!-- control-plane-etcd:begin (written by bench/run --control-plane --store etcd) -->"
ETCD_END = "<!-- control-plane-etcd:end -->"


def carry_over(out, results, markdown):
    """For the data-plane driver: keep the control-plane keys and sections it would overwrite."""
    try:
        with open(os.path.join(out, "results.json")) as f:
            old = json.load(f)
        for key in ("control_plane", ETCD_KEY):
            if key in old:
                results[key] = old[key]
    except (OSError, ValueError):
        pass
    try:
        with open(os.path.join(out, "RESULTS.md")) as f:
            text = f.read()
        for begin, end, after in ((BEGIN, END, None), (ETCD_BEGIN, ETCD_END, END)):
            found = re.search(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", text, re.S)
            if found:
                markdown = with_section(markdown, found.group(0), begin, end, after)
    except OSError:
        pass
    return results, markdown


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except RuntimeError as e:
        print(f"bench: {e}", file=sys.stderr)
        sys.exit(1)
