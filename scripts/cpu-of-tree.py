#!/usr/bin/env python3
"""CPU seconds spent by a process and all its descendants, for `make fuzz`.

Usage: cpu-of-tree.py PID  (prints the total when PID has ended)

Wall time says little on a shared machine, and the rusage of afl-fuzz misses its fork server
and the persistent target processes (afl-fuzz kills them without waiting). So the tree under
PID is sampled every second from /proc: each process counts with the largest utime + stime seen
for it. Time a process spent after its last sample is not counted: the figure is a lower bound.
"""
import os
import sys
import time

TICK = os.sysconf("SC_CLK_TCK")


def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2:].split()
    ppid, utime, stime, start = int(fields[1]), int(fields[11]), int(fields[12]), int(fields[19])
    return ppid, utime + stime, start


def main():
    root = int(sys.argv[1])
    seen = {}  # (pid, start time) -> largest utime + stime in ticks
    while True:
        procs = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                s = stat(int(name))
                if s:
                    procs[int(name)] = s
        if root not in procs:
            break
        tree, frontier = {root}, [root]
        while frontier:
            parent = frontier.pop()
            for pid, (ppid, _, _) in procs.items():
                if ppid == parent and pid not in tree:
                    tree.add(pid)
                    frontier.append(pid)
        for pid in tree:
            _, ticks, start = procs[pid]
            key = (pid, start)
            seen[key] = max(seen.get(key, 0), ticks)
        time.sleep(1)
    print(f"{sum(seen.values()) / TICK:.1f}")


if __name__ == "__main__":
    main()
