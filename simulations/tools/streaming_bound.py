#!/usr/bin/env python3
"""A streaming-aware delay lower bound for a scenario, as a linear programme.

`simulations/src/bound.rs` bounds delays by the snowball schedule of one chunk given the
whole upload of every peer. In streaming, each chunk shares that upload with the chunks
published before and after it. This script asks how much that sharing raises the bound.

Model (every relaxation only makes the bound smaller, so it stays a lower bound):
- time after a chunk's publication in steps of DT; the upload classes, origin upload, chunk
  duration and smallest one-way delay (twice the lower access delay) of the scenario file;
- a copy sent by a class-c holder takes tau/u_c at full rate (serial service dominates any
  sharing of a sender's uplink for store and forward) plus the smallest one-way delay, and
  the sender must hold the chunk when it starts (rounded in the model's favour);
- H[k][j]: class-k holders at step j, fractional (the LP relaxation of the counts), at
  most the class's size; S[c][i]: copies class-c holders start at step i;
- busy senders of class c at a step are at most its holders then (one copy at a time);
- streaming: chunks are published every tau, so for every phase p in [0, tau) the senders
  of class c busy on chunks of ages p, p + tau, p + 2 tau, ... are at most the class's size
  (the time average over chunks of a per-instant limit; the origin: one sender);
- downlinks are ignored (relaxed).
The largest share of peers holding the chunk D after publication is an upper bound on the
share of (chunk, peer) pairs delivered within D by any schedule; the q-quantile bound is
the smallest D at which that share reaches q.

Usage (needs scipy, which the project does not install; for example in a virtual
environment: `python3 -m venv /tmp/venv && /tmp/venv/bin/pip install scipy`), one or two
minutes per N:
    /tmp/venv/bin/python3 simulations/tools/streaming_bound.py SCENARIO.toml [N ...]
"""
import math
import sys
import tomllib

import numpy as np
import scipy.sparse as sp
from scipy.optimize import linprog

DT = 0.005  # step, s
# Set from the scenario file by load().
TAU = 0.0  # chunk duration, s
D_MIN = 0.0  # smallest one-way delay of the network model, s
CLASSES = []  # (share, upload / stream rate)
ORIGIN = 0.0  # origin upload / stream rate


def load(path):
    global TAU, D_MIN, CLASSES, ORIGIN
    with open(path, "rb") as f:
        sc = tomllib.load(f)
    TAU = sc["stream"]["chunk_ms"] / 1000.0
    if "matrix" in sc["network"]:
        sys.exit("latency matrices are not supported: give a synthetic network")
    D_MIN = 2 * sc["network"]["access_ms"][0] / 1000.0
    CLASSES = [(c["share"], c["upload"]) for c in sc["class"]]
    ORIGIN = sc["origin_upload"]


def best_share(n, horizon, streaming=True):
    m = int(round(horizon / DT))
    k_n = len(CLASSES)
    sizes = [s * n for s, _ in CLASSES]
    ups = [u for _, u in CLASSES] + [ORIGIN]
    busy = [max(1, int(math.floor(TAU / u / DT + 1e-9))) for u in ups]
    done = [int(math.floor((TAU / u + D_MIN) / DT + 1e-9)) for u in ups]
    n_h = k_n * m

    def h(k, j):  # holders of class k at the end of step j - 1 (j = 1..m)
        return k * m + (j - 1)

    def s(c, i):
        return n_h + c * m + i

    rows, cols, vals, rhs = [], [], [], []

    def row(entries, bound):
        r = len(rhs)
        for col, val in entries:
            rows.append(r)
            cols.append(col)
            vals.append(val)
        rhs.append(bound)

    for c in range(k_n + 1):
        for step in range(m):
            started = [(s(c, i), 1.0) for i in range(max(0, step - busy[c] + 1), step + 1)]
            if c < k_n:
                row(started + [(h(c, step + 1), -1.0)], 0.0)
            else:
                row(started, 1.0)
    for j in range(1, m + 1):
        got = [(h(k, j), 1.0) for k in range(k_n)]
        sent = [
            (s(c, i), -1.0)
            for c in range(k_n + 1)
            for i in range(0, min(m, j - done[c] + 1))
        ]
        row(got + sent, 0.0)
    for k in range(k_n):
        for j in range(2, m + 1):
            row([(h(k, j - 1), 1.0), (h(k, j), -1.0)], 0.0)
    if streaming:
        phases = int(round(TAU / DT))
        for c in range(k_n + 1):
            for p in range(phases):
                entries = [
                    (s(c, i), 1.0)
                    for step in range(p, m, phases)
                    for i in range(max(0, step - busy[c] + 1), step + 1)
                ]
                row(entries, sizes[c] if c < k_n else 1.0)
    a = sp.csr_matrix((vals, (rows, cols)), shape=(len(rhs), n_h + (k_n + 1) * m))
    bounds = [(0, sizes[k]) for k in range(k_n) for _ in range(m)]
    bounds += [(0, None)] * ((k_n + 1) * m)
    cost = np.zeros(n_h + (k_n + 1) * m)
    for k in range(k_n):
        cost[h(k, m)] = -1.0
    res = linprog(cost, A_ub=a, b_ub=rhs, bounds=bounds, method="highs")
    if res.status != 0:
        raise RuntimeError(res.message)
    return -res.fun / n


def quantile_bound(n, q, streaming):
    lo, hi = 0.0, 4.0
    while hi - lo > 0.01:
        mid = (lo + hi) / 2
        if best_share(n, mid, streaming) >= q:
            hi = mid
        else:
            lo = mid
    return hi


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    load(sys.argv[1])
    peers = [int(a) for a in sys.argv[2:]] or [100, 1000, 10000]
    print("| N | p50 bound, one chunk | p50 bound, streaming | p99 bound, one chunk | p99 bound, streaming |")
    print("|---|---|---|---|---|")
    for n in peers:
        cells = [
            f"{1000 * quantile_bound(n, q, streaming):.0f} ms"
            for q in (0.5, 0.99)
            for streaming in (False, True)
        ]
        print(f"| {n:,} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
