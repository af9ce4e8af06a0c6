#!/usr/bin/env python3
"""Why the nodes of an emulator run missed the chunks they missed: one timeline per miss.

`trace_hops.py` explains the delay of the copies that came; this explains the ones that did
not. For every chunk a node alive at the end missed (its status file's `missing` list), it
prints that node's trace lines about the chunk, in ms after the chunk's publication: the
announcements heard, each request and to whom, each refusal, copies started and finished.
Neighbours whose trace ends more than 10 s before the run's are marked `(dead)`: after a
`--kill-at` run, requests to holders that were killed but not yet known to be show up so.

Run the emulator with the nodes' traces and status files kept, then point this at both:
    FJEMU_KEEP=1 FJORD_TRACE_DIR=/tmp/tr fjord-sim emulate simulations/scenarios/emu30.toml \\
        --kill-at 60 --kill-share 0.3
    python3 simulations/tools/trace_misses.py /tmp/tr /tmp/fjemu-<pid> [--from -3 --to 10]

`--from` / `--to` keep the misses published in that window, in seconds after the kill (an
estimate: the first of the dead's last trace lines, which a node flushes every second, so it
may be up to 1 s early); without a kill, after the first chunk. Publication times come from
the nodes' `deliver` lines (arrival minus delay), so a chunk nobody received is not shown.
"""
import argparse
import glob
import json
import os
import sys

from trace_hops import load


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("traces", help="the FJORD_TRACE_DIR of the run")
    ap.add_argument("status", help="the run's kept folder (FJEMU_KEEP=1), with node*.json")
    ap.add_argument("--from", dest="lo", type=float, default=-1e9, help="seconds, see above")
    ap.add_argument("--to", dest="hi", type=float, default=1e9, help="seconds, see above")
    args = ap.parse_args()

    events, _, _ = load(args.traces)
    last = {me: max(t for t, _, _, _ in lines) for me, lines in events.items() if lines}
    published = {}
    for lines in events.values():
        for t, event, _, details in lines:
            if event == "deliver":
                chunk, delay = details.split()[:2]
                published.setdefault(chunk, t - int(delay))
    end = max(last.values())
    dead = {m for m, t in last.items() if t < end - 10_000_000}
    zero = min(last[m] for m in dead) if dead else min(published.values())
    print(f"{len(dead)} nodes dead before the end: {' '.join(sorted(dead)) or '-'}")

    statuses = sorted(glob.glob(os.path.join(args.status, "node*.json")))
    if not statuses:
        sys.exit(f"no node*.json status files in {args.status}")
    shown = 0
    for path in statuses:
        with open(path, encoding="utf-8") as f:
            status = json.load(f)
        me = status["peer_id"][-8:]
        if me in dead:
            continue
        for track in status.get("tracks", []):
            for seq in track["missing"]:
                chunk = f"{track['track']}.{seq}"
                if chunk not in published:
                    continue
                at = (published[chunk] - zero) / 1e6
                if not args.lo <= at <= args.hi:
                    continue
                shown += 1
                name = os.path.basename(path)[: -len(".json")]
                print(f"\n{name} ({me}) missed {chunk}, published {at:+.2f} s")
                for t, event, peer, details in events[me]:
                    words = details.split()
                    # Control lines read `<kind> <chunk>`, chunk lines `<chunk> ...`.
                    about = words[1] if event.endswith("-ctl") and len(words) > 1 else (
                        words[0] if words else "")
                    if about != chunk:
                        continue
                    mark = "(dead)" if peer in dead else ""
                    print(f"  {(t - published[chunk]) / 1e3:8.1f} ms  {event:9s} {peer}{mark} {details}")
    print(f"\n{shown} misses shown")


if __name__ == "__main__":
    main()
