#!/usr/bin/env python3
"""How long this machine takes a CPU away from a running process.

One busy loop per CPU (pinned, optionally at a higher priority) reads the clock as fast as it can
and records every gap longer than --min-gap: time in which the loop did not run although it never
blocked. On an idle, well-behaved machine the gaps are timer ticks of a few microseconds; here they
show the VM's own housekeeping, which sets a floor under every p99.9 the benchmark reports (see
bench/README.md, "Tails on this machine").

    python3 bench/stall_probe.py                  # 10 s, every CPU, nice 0
    sudo python3 bench/stall_probe.py --nice -20  # the same at the highest CFS priority
"""

import argparse
import json
import os
import sys
import time


def probe(cpu, seconds, min_gap):
    os.sched_setaffinity(0, {cpu})
    gaps = []
    start = last = time.perf_counter()
    while True:
        now = time.perf_counter()
        if now - last > min_gap:
            gaps.append((now - start, now - last))
        last = now
        if now - start > seconds:
            return gaps


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--min-gap-ms", type=float, default=0.3, help="report gaps longer than this")
    p.add_argument("--nice", type=int, default=0, help="niceness of the loops (negative needs root)")
    args = p.parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0))
    children = {}
    for cpu in cpus:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            if args.nice:
                os.nice(args.nice)
            gaps = probe(cpu, args.seconds, args.min_gap_ms / 1000)
            with os.fdopen(write, "w") as out:
                json.dump(gaps, out)
            os._exit(0)
        os.close(write)
        children[cpu] = (pid, read)
    for cpu, (pid, read) in children.items():
        with os.fdopen(read) as f:
            gaps = json.load(f)
        os.waitpid(pid, 0)
        total = sum(g for _, g in gaps) * 1000
        worst = max((g for _, g in gaps), default=0) * 1000
        over1 = sum(1 for _, g in gaps if g > 0.001)
        print(f"cpu {cpu}: {len(gaps)} gaps > {args.min_gap_ms} ms in {args.seconds:g} s, {over1} over 1 ms, "
              f"longest {worst:.2f} ms, {total:.1f} ms in all ({total / (args.seconds * 10):.2f}% of the time)")
        print("  at s (gap ms): " + ", ".join(f"{t:.2f} ({g * 1000:.2f})" for t, g in gaps[:30])
              + (" ..." if len(gaps) > 30 else ""))


if __name__ == "__main__":
    main(sys.argv[1:])
