#!/usr/bin/env python3
"""Where a real hop's time goes: per-hop figures from the nodes' event traces of an emulator run.

The simulator's `FJORD_SIM_DEBUG=1` output splits each first copy's delay by hop into the wait
at its sender and the transfer. This script does the same for the real nodes, and splits the
wait further by the control messages that caused it, so the two can be compared hop by hop.

Run the emulator with the nodes' traces kept, then point this at the trace folder:
    FJEMU_KEEP=1 FJORD_TRACE_DIR=/tmp/tr fjord-sim emulate simulations/scenarios/emu30.toml
    python3 simulations/tools/trace_hops.py /tmp/tr [--warmup 30] [--track 0]

Only the first copy of each chunk at each node counts (as in the simulator), and only chunks
published after the warm-up (seconds after the first chunk). The hop is the number of copies
from the origin. Per hop, in ms, mean / p50 / p90 of:
- delay: publication to the copy's arrival;
- sender_got: publication to the sender's own arrival (0 at the origin);
- wait: the sender's arrival to the copy's first byte going to QUIC (`wr-start`);
- transfer: `wr-start` to the copy's arrival, of which write (`wr-start` to `wr-end`, the
  sender's pacing) and tail (`wr-end` to arrival: the path, queues and loss recovery);
- hdr_to_got_at_sender: the sender's first byte of the chunk to its last;
- have_after_hdr: the sender's first byte to its announcement to the receiver leaving its core
  (the announcement hold);
- have_oneway / req_oneway: the announcement's and the request's time from core to core;
- have_to_req: the receiver hearing the announcement to sending its request (0 for a
  reservation at a spreader, the repair patience otherwise);
- req_arrive_after_got: the sender's arrival to the request's arrival (negative: reserved
  before it had the chunk);
- queue_after_req: the later of the two to `wr-start` (waiting behind other copies).
Copies the sender pushed unasked (the origin's) are counted as "unrequested".

With --messages it prints instead, per kind of control message and the sender's advertised
upload, how much longer than the fastest message on the same directed path each took from
core to core (after the warm-up, counted here from the first control message): what queues, the transport's loss recovery and
head-of-line blocking on the ordered control stream add to the path's delay.

Each node's trace lines are `<wall-clock us> <event> <peer> <details>` (see
`node/src/trace.rs`); the emulator's nodes share one clock.
"""
import argparse
import collections
import glob
import os
import re
import statistics
import sys


def load(folder):
    """Events per node (by its short id), and each node's advertised role."""
    events = collections.defaultdict(list)
    roles = {}
    uploads = {}
    files = glob.glob(os.path.join(folder, "*.trace"))
    if not files:
        sys.exit(f"no *.trace files in {folder}")
    for path in files:
        me = None
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.rstrip("\n").split(" ", 3)
                if len(parts) < 3 or not parts[0].isdigit():
                    continue
                t, event, peer = int(parts[0]), parts[1], parts[2]
                details = parts[3] if len(parts) > 3 else ""
                if event == "me":
                    me = peer
                    continue
                if me is None:
                    continue
                events[me].append((t, event, peer, details))
                if event == "rx-ctl" and details.startswith("Hello"):
                    role = re.search(r"role: (\w+)", details)
                    if role:
                        roles[peer] = role.group(1)
                    upload = re.search(r"upload_bps: (\d+)", details)
                    if upload:
                        uploads[peer] = int(upload.group(1))
    return events, roles, uploads


def quantile(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def messages(events, uploads, warmup):
    """Per (kind, sender upload): extra core-to-core latency over the path's fastest, ms."""
    kinds = ("have", "request", "urgent", "cancel", "ack")
    sent, heard = {}, {}
    for me, lines in events.items():
        for t, event, peer, details in lines:
            if event not in ("tx-ctl", "rx-ctl"):
                continue
            words = details.split()
            if len(words) < 2 or words[0] not in kinds:
                continue
            if event == "tx-ctl":
                sent.setdefault((me, peer, words[0], words[1]), t)
            else:
                heard.setdefault((peer, me, words[0], words[1]), t)
    if not sent:
        sys.exit("no control messages in the traces")
    start = min(sent.values()) + warmup * 1e6
    by_path = collections.defaultdict(list)
    for key, t in sent.items():
        if key in heard:
            by_path[key[:2]].append((key[2], (heard[key] - t) / 1e3, t))
    extra = collections.defaultdict(list)
    for (sender, _), msgs in by_path.items():
        fastest = min(latency for _, latency, _ in msgs)
        for kind, latency, t in msgs:
            if t >= start:
                extra[(kind, uploads.get(sender, 0))].append(latency - fastest)
    print("kind       sender kbit/s   count    p50    p90    p99  >50 ms  >100 ms")
    for (kind, upload), values in sorted(extra.items()):
        n = len(values)
        over = lambda ms: 100.0 * sum(v > ms for v in values) / n
        print(
            f"{kind:10s} {upload // 1000:13d} {n:7d} {quantile(values, 0.5):6.1f}"
            f" {quantile(values, 0.9):6.1f} {quantile(values, 0.99):6.1f}"
            f" {over(50):6.2f}% {over(100):7.2f}%"
        )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", help="the FJORD_TRACE_DIR of an emulator run")
    ap.add_argument("--warmup", type=float, default=30.0, help="seconds skipped (default 30)")
    ap.add_argument("--track", default="0", help="track to count (default 0, the video)")
    ap.add_argument(
        "--messages", action="store_true", help="control messages' extra latency instead"
    )
    args = ap.parse_args()
    events, roles, uploads = load(args.folder)
    if args.messages:
        messages(events, uploads, args.warmup)
        return
    origins = [p for p, r in roles.items() if r == "Origin"]
    if not origins:
        sys.exit("no node greeted by an origin: are these a run's complete traces?")
    origin = origins[0]

    got, hdr, published, writes = {}, {}, {}, {}
    req_tx, req_rx, have_tx, have_rx = {}, {}, {}, {}
    for me, lines in events.items():
        for t, event, peer, details in lines:
            words = details.split()
            # A killed node's last line may be cut short.
            if not words:
                continue
            if event == "rx-chunk":
                got.setdefault((me, words[0]), (t, peer))
            elif event == "rx-hdr":
                hdr.setdefault((me, words[0]), t)
            elif event == "deliver" and len(words) >= 2:
                published[words[0]] = t - int(words[1])
            elif event == "wr-start":
                writes.setdefault((me, peer, words[0]), []).append([t, None])
            elif event == "wr-end" and (me, peer, words[0]) in writes:
                writes[(me, peer, words[0])][-1][1] = t
            elif event in ("tx-ctl", "rx-ctl") and len(words) >= 2:
                key = (me, peer, words[1])
                if words[0] in ("request", "urgent"):
                    (req_tx if event == "tx-ctl" else req_rx).setdefault(key, t)
                elif words[0] == "have":
                    (have_tx if event == "tx-ctl" else have_rx).setdefault(key, t)
    if not published:
        sys.exit("no delivered chunk in the traces")
    start = min(published.values()) + args.warmup * 1e6
    prefix = args.track + "."

    hops = {}

    def hop_of(node, chunk):
        # Iterative walk up the senders; a cycle or a gap gives None.
        path = []
        while node != origin:
            if (node, chunk) in hops:
                break
            if (node, chunk) not in got or len(path) > 64:
                return None
            path.append(node)
            node = got[(node, chunk)][1]
        h = 0 if node == origin else hops[(node, chunk)]
        for n in reversed(path):
            h += 1
            hops[(n, chunk)] = h
        return h

    rows = collections.defaultdict(lambda: collections.defaultdict(list))
    for (node, chunk), (t, sender) in got.items():
        if not chunk.startswith(prefix) or published.get(chunk, 0) < start:
            continue
        h = hop_of(node, chunk)
        if h is None:
            continue
        pub = published[chunk]
        r = rows[h]
        r["delay"].append((t - pub) / 1e3)
        sender_got = pub if sender == origin else got.get((sender, chunk), (None,))[0]
        # A chunk written twice to the same peer (aborted, then asked again): the copy that
        # arrived is the last one started before the arrival.
        w = [x for x in writes.get((sender, node, chunk), []) if x[0] <= t]
        w = w[-1] if w else None
        if sender_got is None or w is None:
            continue
        r["sender_got"].append((sender_got - pub) / 1e3)
        r["wait"].append((w[0] - sender_got) / 1e3)
        r["transfer"].append((t - w[0]) / 1e3)
        if w[1] is not None:
            r["write"].append((w[1] - w[0]) / 1e3)
            r["tail"].append((t - w[1]) / 1e3)
        if sender != origin and (sender, chunk) in hdr:
            r["hdr_to_got_at_sender"].append((sender_got - hdr[(sender, chunk)]) / 1e3)
        sent, heard = have_tx.get((sender, node, chunk)), have_rx.get((node, sender, chunk))
        if sent is not None and (sender, chunk) in hdr:
            r["have_after_hdr"].append((sent - hdr[(sender, chunk)]) / 1e3)
        if sent is not None and heard is not None:
            r["have_oneway"].append((heard - sent) / 1e3)
        arrived = req_rx.get((sender, node, chunk))
        if arrived is None:
            r["unrequested"].append(1)
            continue
        r["req_arrive_after_got"].append((arrived - sender_got) / 1e3)
        r["queue_after_req"].append((w[0] - max(arrived, sender_got)) / 1e3)
        asked = req_tx.get((node, sender, chunk))
        if asked is not None:
            r["req_oneway"].append((arrived - asked) / 1e3)
            if heard is not None:
                r["have_to_req"].append((asked - heard) / 1e3)

    for h in sorted(rows):
        r = rows[h]
        print(f"hop {h}: {len(r['delay'])} first copies")
        for name, values in r.items():
            if name == "unrequested":
                print(f"   unrequested              {len(values)}")
                continue
            print(
                f"   {name:24s} n={len(values):6d} mean {statistics.mean(values):7.1f}"
                f" p50 {quantile(values, 0.5):7.1f} p90 {quantile(values, 0.9):7.1f}"
            )


if __name__ == "__main__":
    main()
