"""Independent test corpus for crowdpulse: network events + exact ground truth.

Written from first principles (LTE/5G NAS/RRC behaviour), without reading the product's own
simulator or estimator. See tests/outside/README.md for the model and every parameter.

    python -m tests.outside.generate --scenario festival|town-concert --out DIR [--seed N] [--small] [--check]

Only the Python standard library and numpy are used.
"""

from __future__ import annotations

import argparse
import bisect
import datetime as _dt
import json
import math
import os
import random
import sys
import time as _time

import numpy as np

# --------------------------------------------------------------------------------------------
# common machinery
# --------------------------------------------------------------------------------------------

MIN = 60.0
HOUR = 3600.0
MINUTE_MS = 60_000

TYPES = ("attach", "detach", "handover", "tau", "paging", "data")
EV_ATTACH, EV_DETACH, EV_HANDOVER, EV_TAU, EV_PAGING, EV_DATA = range(6)

# session kinds (internal)
K_IN, K_DATA, K_PAGE = 0, 1, 2

TAU_AFTER_HO_MS = 300  # a TAU that follows a handover into a new tracking area, this much later


def epoch_ms(y, mo, d, h=0, mi=0):
    return int(_dt.datetime(y, mo, d, h, mi, tzinfo=_dt.timezone.utc).timestamp() * 1000)


class Net:
    """Cells (index 0..n-1), their ids, positions, tracking areas and (for small cells) the macro
    cell whose footprint they sit in. Movement goes along the macro grid."""

    def __init__(self, name):
        self.name = name
        self.ids: list[int] = []
        self.xy: list[tuple[float, float]] = []
        self.radius: list[float] = []
        self.ta: list[int] = []
        self.grid: list[tuple[int, int] | None] = []  # (col,row) for macro cells
        self.foot: list[int] = []  # macro cell index for small cells (self for macro)
        self.at: dict[tuple[int, int], int] = {}

    def add(self, cid, x, y, radius, ta, grid=None, foot=None):
        i = len(self.ids)
        self.ids.append(cid)
        self.xy.append((x, y))
        self.radius.append(radius)
        self.ta.append(ta)
        self.grid.append(grid)
        self.foot.append(i if foot is None else foot)
        if grid is not None:
            self.at[grid] = i
        return i

    def path(self, a, b, rnd):
        """Cells visited going from a to b (inclusive of both): leave a small cell into its
        macro footprint, a random monotone lattice path over the macro grid, then into b."""
        out = [a]
        fa, fb = self.foot[a], self.foot[b]
        if fa != a:
            out.append(fa)
        (c0, r0), (c1, r1) = self.grid[fa], self.grid[fb]
        steps = ["x"] * abs(c1 - c0) + ["y"] * abs(r1 - r0)
        rnd.shuffle(steps)
        c, r = c0, r0
        for s in steps:
            if s == "x":
                c += 1 if c1 > c0 else -1
            else:
                r += 1 if r1 > r0 else -1
            out.append(self.at[(c, r)])
        if fb != b:
            out.append(b)
        return out


class Track:
    """One person's location timeline: a list of visits (presence intervals); within a visit the
    person is in exactly one cell at a time. Times are seconds from the run start."""

    __slots__ = ("visits", "t", "c", "arrival")

    def __init__(self):
        self.visits = []
        self.t = None
        self.c = None
        self.arrival = None

    @property
    def cur(self):
        return self.c[-1]

    @property
    def present(self):
        return self.t is not None

    def enter(self, t, cell, how):
        """how: 'start' (present when the run starts) or 'arrive' (enters coverage)."""
        assert self.t is None
        self.t = [float(t)]
        self.c = [cell]
        self.arrival = how
        return float(t)

    def go(self, t, cell):
        if cell == self.c[-1]:
            return max(t, self.t[-1])
        if t < self.t[-1] + 1.0:
            t = self.t[-1] + 1.0
        self.t.append(float(t))
        self.c.append(cell)
        return t

    def leave(self, t, how="leave"):
        """how: 'leave' (leaves coverage) or 'end' (still there when the run ends)."""
        t = max(float(t), self.t[-1] + 1.0)
        self.visits.append((self.t, self.c, t, self.arrival, how))
        self.t = None
        self.c = None
        return t


def walk(net, tr, t, dst, rnd, hop_lo, hop_hi):
    """Move from the current cell to dst along the grid; each cell boundary is crossed after a
    hop time uniform in [hop_lo, hop_hi] seconds. Returns the arrival time at dst."""
    path = net.path(tr.cur, dst, rnd)
    for c in path[1:]:
        small = net.foot[c] != c or net.foot[tr.cur] != tr.cur
        dt = rnd.uniform(30.0, 120.0) if small else rnd.uniform(hop_lo, hop_hi)
        t = tr.go(t + dt, c)
    return t


def wchoice(rnd, items, weights):
    return rnd.choices(items, weights=weights, k=1)[0]


def finalize_visits(tracks, dur_s):
    """Convert every track to integer-millisecond visits clipped to [0, dur).

    Returns a list (per person) of lists of (times_ms int64 array, cells int32 array, dep_ms,
    arrival_kind, leave_kind)."""
    dur_ms = int(round(dur_s * 1000))
    out = []
    for tr in tracks:
        if tr.present:
            tr.leave(dur_s + 1.0, "end")
        vs = []
        for ts, cs, dep, arr_how, how in tr.visits:
            t = np.round(np.asarray(ts) * 1000.0).astype(np.int64)
            c = np.asarray(cs, dtype=np.int32)
            d = int(round(dep * 1000))
            if t[0] >= dur_ms:
                continue
            if d >= dur_ms:
                d = dur_ms
                how = "end"
            keep = t < d
            t, c = t[keep], c[keep]
            assert np.all(np.diff(t) > 0)
            vs.append((t, c, d, arr_how, how))
        out.append(vs)
    return out, dur_ms


# --------------------------------------------------------------------------------------------
# signalling
# --------------------------------------------------------------------------------------------


class Device:
    __slots__ = ("person", "rd", "rp", "t3412", "sess", "m2m", "arr_p", "det_p")

    def __init__(self, person, rd_per_h, rp_per_h, t3412_s, sess, m2m=False, arr_p=None, det_p=0.0):
        self.person = person
        self.rd = rd_per_h / 3_600_000.0  # per ms
        self.rp = rp_per_h / 3_600_000.0
        self.t3412 = int(round(t3412_s * 1000))
        self.sess = sess  # (median s, sigma, inactivity s, cap s)
        self.m2m = m2m
        self.arr_p = arr_p  # probabilities of attach / tau / handover on entering coverage
        self.det_p = det_p  # probability of a detach on leaving coverage


def session_ms(rng, n, sess):
    med, sigma, inact, cap = sess
    act = rng.lognormal(math.log(med), sigma, n)
    return (np.minimum(act, cap) + inact) * 1000.0


def signal_visit(rng, dev, t, c, dep, arr_how, leave_how, ta, fixed_sessions=None):
    """Events of one device over one visit. t, c: change times (ms) and cells; t[0] is the start
    of the visit; the visit ends at dep (exclusive). Returns (ts, cell, type) int arrays."""
    arr = int(t[0])
    dur = dep - arr
    ev_t, ev_c, ev_k = [], [], []

    def cell_at(x):
        return c[np.searchsorted(t, x, side="right") - 1]

    # ---- arrival ---------------------------------------------------------------------------
    arrival = "none"
    if arr_how == "arrive":
        arrival = ["attach", "tau", "handover"][int(rng.choice(3, p=dev.arr_p))]

    # ---- sessions (RRC connections) -----------------------------------------------------------
    if fixed_sessions is not None:
        s = fixed_sessions
        kind = np.full(len(s), K_DATA, dtype=np.int8)
    else:
        nd = rng.poisson(dev.rd * dur)
        npg = rng.poisson(dev.rp * dur)
        s = arr + rng.random(nd + npg) * dur
        kind = np.concatenate([np.full(nd, K_DATA, np.int8), np.full(npg, K_PAGE, np.int8)])
    if arrival == "handover":
        s = np.concatenate([[float(arr)], s])
        kind = np.concatenate([[K_IN], kind]).astype(np.int8)
    n = len(s)
    d = session_ms(rng, n, dev.sess)
    if n:
        order = np.lexsort((kind, s))
        s = np.floor(s[order]).astype(np.int64)
        kind = kind[order]
        e = s + d[order].astype(np.int64)
        re = np.maximum.accumulate(e)
        newg = np.empty(n, dtype=bool)
        newg[0] = True
        newg[1:] = s[1:] > re[:-1]
        gi = np.flatnonzero(newg)
        gs = s[gi]
        gk = kind[gi]
        ge = np.minimum(re[np.r_[gi[1:] - 1, n - 1]], dep)
    else:
        gs = ge = np.zeros(0, np.int64)
        gk = np.zeros(0, np.int8)

    def connected(x):
        if len(gs) == 0:
            return np.zeros(len(x), dtype=bool)
        j = np.searchsorted(gs, x, side="right") - 1
        return (j >= 0) & (x < ge[np.maximum(j, 0)])

    # idle -> connected transitions: service request (data) or paging response (paging)
    for kk, ev in ((K_DATA, EV_DATA), (K_PAGE, EV_PAGING)):
        x = gs[gk == kk]
        ev_t.append(x)
        ev_c.append(cell_at(x))
        ev_k.append(np.full(len(x), ev, np.int8))

    resets = []  # times at which T3412 (re)starts
    if arrival in ("attach", "tau"):
        ev_t.append(np.array([arr], np.int64))
        ev_c.append(c[:1])
        ev_k.append(np.array([EV_ATTACH if arrival == "attach" else EV_TAU], np.int8))
        resets.append(np.array([arr], np.int64))
    elif arrival == "handover":
        ev_t.append(np.array([arr, min(arr + TAU_AFTER_HO_MS, dep - 1)], np.int64))
        ev_c.append(np.array([c[0], c[0]], np.int32))
        ev_k.append(np.array([EV_HANDOVER, EV_TAU], np.int8))
    else:  # present when the run starts: the timer is somewhere in its period
        resets.append(np.array([arr - int(rng.random() * dev.t3412)], np.int64))

    # ---- mobility ------------------------------------------------------------------------------
    if len(t) > 1:
        ct, cc, pc = t[1:], c[1:], c[:-1]
        conn = connected(ct)
        tachg = ta[cc] != ta[pc]
        ho = conn
        ev_t.append(ct[ho])
        ev_c.append(cc[ho])
        ev_k.append(np.full(int(ho.sum()), EV_HANDOVER, np.int8))
        # TAU on entering a tracking area outside the registered list (list = the current TA)
        idle_tau = tachg & ~conn
        conn_tau = tachg & conn
        nxt = np.r_[t[2:], dep]
        ct_conn = np.minimum(ct[conn_tau] + TAU_AFTER_HO_MS, nxt[conn_tau] - 1)
        ev_t.append(ct[idle_tau])
        ev_c.append(cc[idle_tau])
        ev_k.append(np.full(int(idle_tau.sum()), EV_TAU, np.int8))
        ev_t.append(ct_conn)
        ev_c.append(cc[conn_tau])
        ev_k.append(np.full(len(ct_conn), EV_TAU, np.int8))
        resets.append(ct[idle_tau])

    # ---- periodic TAU: T3412 runs in idle only, restarts on entering idle and on every TAU ----
    resets.append(ge[ge < dep])
    r = np.concatenate(resets).astype(np.int64)
    if len(r):
        stops = np.concatenate([r, gs, np.array([dep], np.int64)])
        stops.sort()
        r.sort()
        q = stops[np.searchsorted(stops, r, side="right")]  # next reset/stop after each reset
        T = dev.t3412
        cnt = np.maximum(-((r - q) // T) - 1, 0)  # number of k>=1 with r + kT < q
        if cnt.sum():
            base = np.repeat(r, cnt)
            k = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + 1
            x = base + k * T
            x = x[(x >= arr) & (x < dep)]
            ev_t.append(x)
            ev_c.append(cell_at(x))
            ev_k.append(np.full(len(x), EV_TAU, np.int8))

    # ---- leaving coverage ------------------------------------------------------------------------
    if leave_how == "leave" and dev.det_p > 0 and rng.random() < dev.det_p:
        ev_t.append(np.array([dep - 1], np.int64))
        ev_c.append(np.array([c[-1]], np.int32))
        ev_k.append(np.array([EV_DETACH], np.int8))

    ts = np.concatenate(ev_t).astype(np.int64)
    cs = np.concatenate(ev_c).astype(np.int32)
    ks = np.concatenate(ev_k).astype(np.int8)
    return ts, cs, ks


def signal_all(rng, devices, visits, ta):
    T, C, K, D = [], [], [], []
    for di, dev in enumerate(devices):
        for t, c, dep, arr_how, leave_how in visits[dev.person]:
            ts, cs, ks = signal_visit(rng, dev, t, c, dep, arr_how, leave_how, ta)
            T.append(ts)
            C.append(cs)
            K.append(ks)
            D.append(np.full(len(ts), di, np.int32))
    return T, C, K, D


# --------------------------------------------------------------------------------------------
# truth and output
# --------------------------------------------------------------------------------------------


def truth_per_cell(visits, ncell, dur_ms):
    nmin = dur_ms // MINUTE_MS
    diff = np.zeros((ncell, nmin + 1), np.int64)
    for vs in visits:
        for t, c, dep, _a, _l in vs:
            a = t
            b = np.r_[t[1:], dep]
            k0 = -(-a // MINUTE_MS)
            k1 = -(-b // MINUTE_MS)
            k0 = np.minimum(k0, nmin)
            k1 = np.minimum(k1, nmin)
            m = k1 > k0
            np.add.at(diff, (c[m], k0[m]), 1)
            np.add.at(diff, (c[m], k1[m]), -1)
    return np.cumsum(diff, axis=1)[:, :nmin]


def write_outputs(out, name, net, areas, reference, t0_ms, dur_ms, visits, devices, sub_ids, ev, settings, extra_summary, check):
    os.makedirs(out, exist_ok=True)
    T, C, K, D = ev
    ts = np.concatenate(T)
    cs = np.concatenate(C)
    ks = np.concatenate(K)
    ds = np.concatenate(D)
    order = np.lexsort((ks, ds, ts))
    ts, cs, ks, ds = ts[order], cs[order], ks[order], ds[order]

    # areas.json
    cells = [{"id": net.ids[i], "x_m": round(net.xy[i][0], 1), "y_m": round(net.xy[i][1], 1), "radius_m": net.radius[i]} for i in range(len(net.ids))]
    area_json = []
    for a in areas:
        d = {
            "id": a["id"],
            "name": a["name"],
            "kind": a["kind"],
            "capacity": int(a["capacity"]),
            "cells": [net.ids[i] for i in a["cells"]],
            "size_m2": a["size_m2"],
        }
        if a.get("parts"):
            d["parts"] = a["parts"]
        area_json.append(d)
    with open(os.path.join(out, "areas.json"), "w") as f:
        json.dump({"name": name, "version": 1, "reference": reference, "cells": cells, "areas": area_json}, f, indent=1)

    # events.jsonl
    pre = [f'{{"subscriber": "{sub_ids[i]}", "cell": ' for i in range(len(devices))]
    suf_h = [f', "type": "{t}"}}\n' for t in TYPES]
    suf_m = [f', "type": "{t}", "m2m": true}}\n' for t in TYPES]
    m2m = [d.m2m for d in devices]
    ids = net.ids
    with open(os.path.join(out, "events.jsonl"), "w") as f:
        chunk = 500_000
        tl, cl, kl, dl = (ts + t0_ms).tolist(), cs.tolist(), ks.tolist(), ds.tolist()
        for i in range(0, len(tl), chunk):
            f.write(
                "".join(
                    pre[d] + str(ids[c]) + ', "ts": ' + str(t) + (suf_m[k] if m2m[d] else suf_h[k])
                    for t, c, k, d in zip(tl[i : i + chunk], cl[i : i + chunk], kl[i : i + chunk], dl[i : i + chunk])
                )
            )

    # counts.csv
    per_cell = truth_per_cell(visits, len(net.ids), dur_ms)
    nmin = per_cell.shape[1]
    area_counts = {a["id"]: per_cell[a["cells"]].sum(axis=0) for a in areas}
    with open(os.path.join(out, "counts.csv"), "w") as f:
        f.write("area,time,people\n")
        for a in areas:
            cnt = area_counts[a["id"]]
            for m in range(nmin):
                if cnt[m] > 0:
                    f.write(f"{a['id']},{t0_ms + m * MINUTE_MS},{int(cnt[m])}\n")

    with open(os.path.join(out, "settings.env"), "w") as f:
        for k, v in settings.items():
            f.write(f"{k}={v}\n")

    # summary.json
    def iso(ms):
        return _dt.datetime.fromtimestamp(ms / 1000, _dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    by_type = {TYPES[k]: int((ks == k).sum()) for k in range(len(TYPES))}
    peaks = {}
    for a in areas:
        cnt = area_counts[a["id"]]
        m = int(np.argmax(cnt))
        peaks[a["id"]] = {
            "people": int(cnt[m]),
            "at": iso(t0_ms + m * MINUTE_MS),
            "capacity": int(a["capacity"]),
            "peak_over_capacity": round(float(cnt[m]) / a["capacity"], 3),
            "minutes_at_or_over_80pct": int((cnt >= 0.8 * a["capacity"]).sum()),
            "minutes_at_or_over_95pct": int((cnt >= 0.95 * a["capacity"]).sum()),
        }
    n_m2m = sum(m2m)
    summary = {
        "scenario": name,
        "start": iso(t0_ms),
        "end": iso(t0_ms + dur_ms),
        "start_ms": t0_ms,
        "duration_s": dur_ms // 1000,
        "minutes": nmin,
        "events": int(len(ts)),
        "events_by_type": by_type,
        "events_m2m": int(np.isin(ds, np.flatnonzero(m2m)).sum()) if n_m2m else 0,
        "devices": len(devices),
        "devices_phones": len(devices) - n_m2m,
        "devices_m2m": n_m2m,
        "devices_seen": int(len(np.unique(ds))),
        "people": len(visits),
        "people_ever_present": int(sum(1 for v in visits if v)),
        "peaks": peaks,
    }
    summary.update(extra_summary)
    if check:
        summary["checks"] = run_checks(
            net,
            areas,
            visits,
            devices,
            ts,
            cs,
            ks,
            ds,
            area_counts,
            per_cell,
            dur_ms,
            os.path.join(out, "areas.json"),
            os.path.join(out, "counts.csv"),
        )
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def run_checks(net, areas, visits, devices, ts, cs, ks, ds, area_counts, per_cell, dur_ms, areas_path, counts_path):
    """Self-consistency checks; raises AssertionError on failure."""
    res = {}
    assert np.all(np.diff(ts) >= 0), "events not sorted"
    assert ts.min() >= 0 and ts.max() < dur_ms, "event outside the run"
    assert cs.min() >= 0 and cs.max() < len(net.ids)
    res["events_sorted_and_in_run"] = True
    # divisions add up
    for a in areas:
        if a.get("parts"):
            tot = sum(area_counts[p] for p in a["parts"])
            assert np.array_equal(tot, area_counts[a["id"]]), a["id"]
            res[f"{a['id']}_equals_sum_of_parts"] = True
    # the widest area equals the total number of people present
    widest = max(areas, key=lambda a: len(a["cells"]))
    assert len(widest["cells"]) == len(net.ids)
    assert np.array_equal(area_counts[widest["id"]], per_cell.sum(axis=0))
    # every phone event happens in the cell its person occupies, while present
    order = np.argsort(ds, kind="stable")
    dsd, tsd, csd = ds[order], ts[order], cs[order]
    bounds = np.searchsorted(dsd, np.arange(len(devices) + 1))
    bad = 0
    for di, dev in enumerate(devices):
        a, b = bounds[di], bounds[di + 1]
        if a == b:
            continue
        et, ec = tsd[a:b], csd[a:b]
        if dev.m2m:
            bad += int((ec != ec[0]).sum())  # a meter never moves
            continue
        vs = visits[dev.person]
        allt = np.concatenate([v[0] for v in vs])
        allc = np.concatenate([v[1] for v in vs])
        starts = np.array([v[0][0] for v in vs])
        deps = np.array([v[2] for v in vs])
        vi = np.searchsorted(starts, et, side="right") - 1
        ok = (vi >= 0) & (et < deps[np.maximum(vi, 0)])
        j = np.searchsorted(allt, et, side="right") - 1
        ok &= allc[j] == ec
        bad += int((~ok).sum())
    assert bad == 0, f"{bad} events inconsistent with their person's location"
    res["events_consistent_with_timelines"] = True
    res["areas_file_valid"] = check_areas_file(areas_path)
    counts = {}
    with open(counts_path) as f:
        assert f.readline() == "area,time,people\n"
        for line in f:
            a, t, p = line.rstrip("\n").split(",")
            assert int(t) % MINUTE_MS == 0 and int(p) > 0
            counts[(a, int(t))] = int(p)
    assert sum(int((area_counts[a["id"]] > 0).sum()) for a in areas) == len(counts)
    res["counts_rows"] = len(counts)
    return res


def check_areas_file(path):
    """The areas file against the rules of docs/areas.md (validation table)."""
    import re

    doc = json.load(open(path))
    assert isinstance(doc, dict) and doc["cells"] and doc["areas"]
    ids = [c["id"] for c in doc["cells"]]
    assert all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < 2**32 for i in ids)
    assert len(set(ids)) == len(ids)
    known = set(ids)
    aids = [a["id"] for a in doc["areas"]]
    assert len(set(aids)) == len(aids)
    member = {}
    for a in doc["areas"]:
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,63}", a["id"])
        assert isinstance(a["capacity"], int) and not isinstance(a["capacity"], bool) and a["capacity"] > 0
        assert a["cells"] and set(a["cells"]) <= known and len(set(a["cells"])) == len(a["cells"])
        assert a.get("size_m2", 1) > 0
        if "parts" in a:
            parts = a["parts"]
            assert len(parts) >= 2 and len(set(parts)) == len(parts) and a["id"] not in parts
            byid = {b["id"]: b for b in doc["areas"]}
            cells = [c for p in parts for c in byid[p]["cells"]]
            assert len(cells) == len(set(cells)) and set(cells) == set(a["cells"])
            for x in [a["id"]] + parts:
                assert x not in member, f"{x} in two divisions"
                member[x] = a["id"]
    ref = doc.get("reference")
    assert ref in aids and set(next(a for a in doc["areas"] if a["id"] == ref)["cells"]) == known
    return True


def poisson(rnd, lam):
    """Poisson variate from a random.Random (Knuth; small lam only)."""
    k, p, lim = 0, 1.0, math.exp(-lam)
    while True:
        p *= rnd.random()
        if p < lim:
            return k
        k += 1


def make_ids(rnd, n, prefix):
    """Stable IMSI-shaped identifiers in the test PLMN 001-01 (15 digits), unique."""
    seen = {}
    while len(seen) < n:
        seen.setdefault(prefix + f"{rnd.randrange(10 ** (15 - len(prefix))):0{15 - len(prefix)}d}", None)
    return list(seen)


# --------------------------------------------------------------------------------------------
# scenario: festival
# --------------------------------------------------------------------------------------------

FEST_T0 = epoch_ms(2026, 7, 11, 8, 0)
FEST_DUR = 12 * HOUR
FEST_COLS, FEST_ROWS, FEST_SPACING = 8, 5, 180.0
PLAZA_OPENS = 2.0 * HOUR  # attendees may enter the entrance plaza (gate zone)
GATES_OPEN = 2.2 * HOUR  # security lanes open

# (stage zone, start h, end h, popularity = probability an attendee wants to see it)
FEST_ACTS = [
    ("main-stage", 2.25, 3.0, 0.10),  # opening DJ
    ("main-stage", 3.0, 4.0, 0.30),
    ("second-stage", 4.0, 4.75, 0.20),
    ("main-stage", 4.75, 5.75, 0.40),
    ("second-stage", 5.75, 6.5, 0.22),
    ("main-stage", 6.5, 7.5, 0.45),
    ("second-stage", 7.5, 8.25, 0.24),
    ("main-stage", 8.5, 10.0, 0.55),  # headliner
]
HEADLINER_END = 10.0 * HOUR

FEST_CAPACITY = {"site": 25_000, "main-stage": 14_000, "second-stage": 7_000, "food-court": 8_000, "camping": 10_000, "gate": 4_000}


def festival_net():
    net = Net("festival")
    zone_cells = {z: [] for z in ("gate", "camping", "food-court", "second-stage", "main-stage")}
    weights = {}
    k = 0
    for r in range(FEST_ROWS):
        for col in range(FEST_COLS):
            enb = 31001 + k // 3
            cid = enb * 256 + (k % 3) + 1
            k += 1
            ta = 0 if col <= 2 else (1 if col <= 5 else 2)
            i = net.add(cid, col * FEST_SPACING, r * FEST_SPACING, 120.0, ta, grid=(col, r))
            if col == 0:
                z, w = "gate", [1, 2, 3, 2, 1][r]
            elif col <= 2:
                z, w = "camping", 1.0
            elif col == 3:
                z, w = "food-court", 1.0
            elif r <= 1:
                z, w = "second-stage", [1.0, 1.4, 2.0, 1.6][col - 4] * (1.3 if r == 0 else 1.0)
            else:
                z, w = "main-stage", [1.0, 1.5, 2.5, 3.0][col - 4] * (1.3 if r == 3 else 1.0)
            zone_cells[z].append(i)
            weights[i] = w
    return net, zone_cells, weights


def festival(rnd, rng, scale):
    net, zc, cw = festival_net()
    zone_of = {}
    for z, cl in zc.items():
        for i in cl:
            zone_of[i] = z
    zw = {z: [cw[i] for i in cl] for z, cl in zc.items()}

    def cell_in(z):
        return wchoice(rnd, zc[z], zw[z])

    n_staff = int(round(500 * scale))
    n_att = int(round(22_000 * scale))
    mu_in = 255.0 * scale / MIN  # entry throughput of the gate (people per second)

    def hop():
        return (120.0, 240.0)

    tracks, kinds = [], []

    # ---- staff ------------------------------------------------------------------------------
    for _ in range(n_staff):
        tr = Track()
        role = wchoice(rnd, ["bar", "crew", "security", "camp"], [35, 25, 25, 15])
        if role == "bar":
            home = "food-court"
        elif role == "crew":
            home = wchoice(rnd, ["main-stage", "second-stage"], [60, 40])
        elif role == "security":
            home = wchoice(rnd, ["gate", "main-stage", "second-stage"], [50, 30, 20])
        else:
            home = "camping"
        t = tr.enter(0.0, cell_in(home), "start")
        leave_at = rnd.uniform(11.0, 11.75) * HOUR if rnd.random() < 0.45 else FEST_DUR + 10
        while True:
            t += rnd.expovariate(1.0 / (75 * MIN))
            if t >= leave_at:
                break
            u = rnd.random()
            if u < 0.6:
                t = walk(net, tr, t, cell_in(home), rnd, 60.0, 150.0)
            elif u < 0.85:
                t = walk(net, tr, t, cell_in("food-court"), rnd, 60.0, 150.0)
                t += rnd.uniform(15, 30) * MIN
                if t >= leave_at:
                    break
                t = walk(net, tr, t, cell_in(home), rnd, 60.0, 150.0)
        if leave_at < FEST_DUR:
            t = walk(net, tr, max(t, leave_at), cell_in("gate"), rnd, 90.0, 180.0)
            tr.leave(t + rnd.uniform(60, 180))
        tracks.append(tr)
        kinds.append("staff")

    # ---- attendees: arrival times and the entry queue ------------------------------------------
    arr = []
    for _ in range(n_att):
        u = rnd.random()
        if u < 0.05:
            a = rnd.uniform(PLAZA_OPENS / HOUR, GATES_OPEN / HOUR)
        elif u < 0.68:
            a = rnd.gauss(2.6, 0.3)
            while not PLAZA_OPENS / HOUR <= a <= 3.6:
                a = rnd.gauss(2.6, 0.3)
        elif u < 0.90:
            a = rnd.uniform(3.0, 5.0)
        else:
            a = rnd.uniform(5.0, 8.0)
        arr.append(a * HOUR)
    arr.sort()
    through = []  # time each attendee passes the gate's security lanes (FIFO, fixed throughput)
    last = -math.inf
    for a in arr:
        last = max(a, GATES_OPEN, last + 1.0 / mu_in)
        through.append(last)

    acts = [(z, s * HOUR, e * HOUR, p) for z, s, e, p in FEST_ACTS]
    n_camp_stay = 0
    for a, thr in zip(arr, through):
        tr = Track()
        camper = rnd.random() < 0.30
        overnight = camper and rnd.random() < 0.20
        n_camp_stay += overnight
        u = rnd.random()
        if overnight:
            depart = HEADLINER_END + rnd.uniform(0, 20) * MIN
        elif u < 0.12:
            depart = rnd.uniform(6.0, 9.8) * HOUR
        elif u < 0.18:
            depart = rnd.uniform(9.5, 10.0) * HOUR
        else:
            depart = HEADLINER_END + rnd.gammavariate(2.0, 8.0 * MIN)
        want = [rnd.random() < p for (_z, _s, _e, p) in acts]
        lead_h = rnd.uniform(20, 70) * MIN  # how early one claims a spot for the headliner

        # entry: queue in the gate zone (a snake across gate cells), then into the site
        g = cell_in("gate")
        t = tr.enter(a, g, "arrive")
        if thr - a > 10 * MIN and rnd.random() < 0.35:
            t = tr.go(a + (thr - a) * rnd.uniform(0.3, 0.7), cell_in("gate"))
        t = max(t, thr) + rnd.uniform(60, 180)
        if depart < t + 45 * MIN:
            depart = t + rnd.uniform(45, 120) * MIN
        first = "camping" if camper else wchoice(rnd, ["food-court", "main-stage", "second-stage", "camping"], [40, 30, 20, 10])
        t = walk(net, tr, t, cell_in(first), rnd, *hop())
        if first == "camping" and camper:
            t += rnd.uniform(30, 75) * MIN

        done = [False] * len(acts)
        while t < depart:
            nxt = None
            for j, (_z, _s, e, _p) in enumerate(acts):
                if want[j] and not done[j] and e - 15 * MIN > t:
                    nxt = j
                    break
            if nxt is not None:
                z, s, e, _p = acts[nxt]
                lead = lead_h if e == HEADLINER_END else rnd.uniform(5, 25) * MIN
                go_at = s - lead
            if nxt is not None and go_at <= t:
                done[nxt] = True
                if zone_of[tr.cur] != z:
                    t = walk(net, tr, t, cell_in(z), rnd, *hop())
                if rnd.random() < 0.15:
                    stay = rnd.uniform(max(s, t) + 10 * MIN, e)
                else:
                    stay = e + rnd.gauss(0, 3 * MIN)
                stay = min(stay, depart)
                if stay > t + 20 * MIN and rnd.random() < 0.5:
                    tr.go(rnd.uniform(t + 5 * MIN, stay - 5 * MIN), cell_in(z))
                t = max(t, stay)
                continue
            limit = go_at if nxt is not None else math.inf
            wc = [30, 35 if camper else 10, 15, 8, 0 if zone_of[tr.cur] == "gate" else 15]
            f = wchoice(rnd, ["food-court", "camping", "main-stage", "second-stage", "stay"], wc)
            if f == "stay":
                f = zone_of[tr.cur]
                dwell = rnd.uniform(10, 30) * MIN
            elif f == "food-court":
                dwell = rnd.lognormvariate(math.log(20 * MIN), 0.4)
            elif f == "camping":
                dwell = rnd.uniform(30, 90) * MIN
            else:
                dwell = rnd.uniform(15, 40) * MIN
            if zone_of[tr.cur] != f:
                t = walk(net, tr, t, cell_in(f), rnd, *hop())
            end = min(t + dwell, limit, depart)
            if end > t + 20 * MIN and rnd.random() < 0.4:
                tr.go(rnd.uniform(t + 5 * MIN, end - 5 * MIN), cell_in(f))
            t = max(t + 60.0, end)

        if overnight:
            t = walk(net, tr, t, cell_in("camping"), rnd, 180.0, 300.0)
            while t < FEST_DUR:
                t += rnd.uniform(30, 120) * MIN
                if rnd.random() < 0.3:
                    t = tr.go(t, cell_in("camping"))
        else:
            slow = (180.0, 300.0) if t > HEADLINER_END - 15 * MIN else hop()
            t = walk(net, tr, t, cell_in("gate"), rnd, *slow)
            tr.leave(t + rnd.uniform(2, 6) * MIN)
        tracks.append(tr)
        kinds.append("overnight-camper" if overnight else ("camper" if camper else "attendee"))

    visits, dur_ms = finalize_visits(tracks, FEST_DUR)

    # ---- devices: one phone per person, all with this operator -----------------------------
    devices = []
    n_quiet = 0
    for p in range(len(tracks)):
        quiet = rnd.random() < 0.15
        n_quiet += quiet
        if quiet:
            rd = rnd.lognormvariate(math.log(0.25), 0.5)
            rp = 0.1
            sess = (8.0, 0.8, 10.0, 600.0)
        else:
            rd = min(rnd.lognormvariate(math.log(6.0), 1.0), 120.0)
            rp = 0.35 * rd
            sess = (12.0, 1.2, 10.0, 1200.0)
        t3412 = rnd.uniform(30, 60) * MIN
        devices.append(Device(p, rd, rp, t3412, sess, arr_p=[0.20, 0.65, 0.15], det_p=0.12))
    sub_ids = make_ids(rnd, len(devices), "001010")
    ta = np.array(net.ta, np.int32)
    ev = signal_all(rng, devices, visits, ta)

    site_cells = list(range(len(net.ids)))
    cap = {k: max(1, int(round(v * scale))) for k, v in FEST_CAPACITY.items()}

    def size(cells):
        return round(len(cells) * FEST_SPACING * FEST_SPACING, 1)

    areas = [
        {
            "id": "site",
            "name": "Festival site",
            "kind": "venue",
            "capacity": cap["site"],
            "cells": site_cells,
            "size_m2": size(site_cells),
            "parts": ["main-stage", "second-stage", "food-court", "camping", "gate"],
        }
    ]
    names = {"main-stage": "Main stage", "second-stage": "Second stage", "food-court": "Food court", "camping": "Camping", "gate": "Entrance gate"}
    for z in areas[0]["parts"]:
        areas.append({"id": z, "name": names[z], "kind": "venue", "capacity": cap[z], "cells": zc[z], "size_m2": size(zc[z])})
    settings = {"CROWDPULSE_MARKET_SHARE": "1", "CROWDPULSE_SIMS_PER_PERSON": "1", "CROWDPULSE_ROTATION_PERIOD_S": "0"}
    extra = {
        "people_by_kind": {k: kinds.count(k) for k in sorted(set(kinds))},
        "phones_quiet": n_quiet,
        "market_share": 1.0,
        "sims_per_customer": 1.0,
        "tracking_areas": len(set(net.ta)),
        "scale": scale,
    }
    return dict(
        name="festival",
        net=net,
        areas=areas,
        reference="site",
        t0=FEST_T0,
        dur=dur_ms,
        visits=visits,
        devices=devices,
        sub_ids=sub_ids,
        ev=ev,
        settings=settings,
        extra=extra,
    )


# --------------------------------------------------------------------------------------------
# scenario: town-concert
# --------------------------------------------------------------------------------------------

TOWN_DAY = epoch_ms(2026, 3, 6)  # a Friday; the town is on UTC (local time = UTC)
TOWN_START_H, TOWN_END_H = 9.5, 23.5
TOWN_COLS, TOWN_ROWS, TOWN_SPACING = 8, 7, 600.0
TOWN_CAPACITY = {"town": 40_000, "west": 25_000, "east": 25_000, "centre": 10_000, "arena": 6_000, "station": 1_750}
CENTRE_GRID = [(3, 2), (4, 2), (3, 3), (4, 3), (3, 4), (4, 4)]
INDUSTRY_GRID = [(1, 1), (6, 5), (1, 5)]
SCHOOL_GRID = [(2, 1), (5, 1), (2, 5), (5, 5)]
ROADS_GRID = [(0, 3), (7, 2), (3, 0), (4, 6)]
STATION_FOOT, MALL_FOOT, ARENA_FOOT = (3, 4), (4, 2), (5, 4)
DOORS, SHOW_START, SHOW_END = 18.5, 20.0, 22.5


def town_net():
    net = Net("town")
    k = 0
    for r in range(TOWN_ROWS):
        for col in range(TOWN_COLS):
            enb = 40101 + k // 3
            cid = enb * 256 + (k % 3) + 1
            k += 1
            ta = (0 if col <= 3 else 1) + (0 if r <= 3 else 2)
            net.add(cid, col * TOWN_SPACING, r * TOWN_SPACING, 450.0, ta, grid=(col, r))
    small = {}
    for name, foot, off, cid in (
        ("station", STATION_FOOT, (120, 80), 40901 * 256 + 1),
        ("mall", MALL_FOOT, (-100, 150), 40902 * 256 + 1),
        ("arena1", ARENA_FOOT, (150, -60), 40903 * 256 + 1),
        ("arena2", ARENA_FOOT, (150, 60), 40903 * 256 + 2),
    ):
        f = net.at[foot]
        x, y = net.xy[f]
        small[name] = net.add(cid, x + off[0], y + off[1], 60.0, net.ta[f], foot=f)
    return net, small


def town_concert(rnd, rng, scale):
    net, small = town_net()
    A = net.at
    macro = [A[(c, r)] for r in range(TOWN_ROWS) for c in range(TOWN_COLS)]
    centre = [A[g] for g in CENTRE_GRID]
    station, mall = small["station"], small["mall"]
    arena = [small["arena1"], small["arena2"]]
    arena_foot = A[ARENA_FOOT]
    roads = [A[g] for g in ROADS_GRID]
    schools = [A[g] for g in SCHOOL_GRID]

    def home_w(g):
        c, r = g
        if g in CENTRE_GRID:
            return 0.5
        if g in INDUSTRY_GRID or g == ARENA_FOOT:
            return 0.2
        if c in (0, 7) or r in (0, 6):
            return 0.4
        if 2 <= c <= 5 and 1 <= r <= 5:
            return 2.0
        return 1.0

    homes_w = [home_w(net.grid[i]) for i in macro]
    work_cells = centre + [A[g] for g in INDUSTRY_GRID] + [mall, station] + macro
    work_w = [4.0] * len(centre) + [5.0] * 3 + [2.0, 0.3] + [0.3] * len(macro)
    shop_cells = centre + [mall]
    shop_w = [1.0] * len(centre) + [2.5]

    def H(h):  # hour of day -> seconds from run start
        return (h - TOWN_START_H) * HOUR

    END = H(TOWN_END_H)

    def trip(tr, t, dst, walk_only=False):
        hops = len(net.path(tr.cur, dst, rnd)) - 1
        if walk_only or hops <= 1 or rnd.random() < 0.3:
            return walk(net, tr, t, dst, rnd, 6 * MIN, 9 * MIN)
        return walk(net, tr, t, dst, rnd, 60.0, 150.0)

    train_day = [h + m / 60 for h in range(6, 24) for m in (10, 40)]

    def next_train(h):
        i = bisect.bisect_left(train_day, h)
        return train_day[i] if i < len(train_day) else 24.5

    def go_by_train(tr, t, extra_deps=()):
        """Walk/ride to the station, wait for the next departure, leave coverage on the train."""
        t = trip(tr, t, station)
        h = TOWN_START_H + t / HOUR + 1 / 60
        deps = sorted(set([next_train(h)] + [d for d in extra_deps if d >= h]))
        tr.leave(H(deps[0]))

    def go_by_road(tr, t):
        t = walk(net, tr, t, wchoice(rnd, roads, [1] * len(roads)), rnd, 60.0, 150.0)
        tr.leave(t + rnd.uniform(1, 3) * MIN)

    def leave_town(tr, t, by_train):
        if by_train:
            go_by_train(tr, t)
        else:
            go_by_road(tr, t)

    def arrive_by_train(tr, h):
        t = tr.enter(H(h), station, "arrive")
        return t + rnd.uniform(2, 6) * MIN

    def arrive_by_road(tr, h):
        return tr.enter(H(h), wchoice(rnd, roads, [1] * len(roads)), "arrive")

    def evening(tr, t, home, p):
        if rnd.random() < p:
            out = H(rnd.uniform(19.0, 21.0))
            if out > t:
                t = trip(tr, out, wchoice(rnd, centre, [1] * len(centre)))
                back = H(rnd.uniform(21.5, 24.5))
                if back > t and back < END:
                    t = trip(tr, back, home)
        return t

    def to_concert(tr, t, start_h):
        """From wherever one is, to the arena: queue outside (doors at 18:30), then inside."""
        t = max(t, H(start_h))
        t = trip(tr, t, arena_foot, walk_only=tr.cur in centre or tr.cur == station)
        t = max(t + rnd.uniform(3, 12) * MIN, H(DOORS) + rnd.uniform(0, 10) * MIN)
        t = tr.go(t, rnd.choice(arena))
        if rnd.random() < 0.2:
            tr.go(rnd.uniform(t + 10 * MIN, H(SHOW_END) - 10 * MIN), rnd.choice(arena))
        if rnd.random() < 0.05:
            out = H(rnd.uniform(21.5, 22.4))
        else:
            out = H(SHOW_END) + rnd.gammavariate(2.0, 4.0 * MIN)
        return tr.go(out, arena_foot)

    tracks, kinds = [], []
    n_res = int(round(20_000 * scale))
    n_concert_res = int(round(1_800 * scale))
    res_kinds = rnd.choices(["out-commuter", "worker", "home", "student", "stay-home"], weights=[12, 33, 30, 20, 5], k=n_res)
    adults = [i for i, k in enumerate(res_kinds) if k in ("out-commuter", "worker", "home")]
    concert_res = set(rnd.sample(adults, n_concert_res))

    # ---- residents -------------------------------------------------------------------------
    for i, kind in enumerate(res_kinds):
        tr = Track()
        home = wchoice(rnd, macro, homes_w)
        concert = i in concert_res
        t = None
        if kind == "out-commuter":
            if rnd.random() < 0.4:
                t = arrive_by_train(
                    tr, wchoice(rnd, [16 + 40 / 60, 17 + 10 / 60, 17 + 40 / 60, 18 + 10 / 60, 18 + 40 / 60, 19 + 10 / 60], [10, 25, 30, 20, 10, 5])
                )
            else:
                t = arrive_by_road(tr, min(max(rnd.gauss(17.6, 0.5), 16.5), 19.5))
            t = trip(tr, t, home)
        elif kind == "worker":
            work = wchoice(rnd, work_cells, work_w)
            t = tr.enter(0.0, work, "start")
            if rnd.random() < 0.4:
                lt = H(rnd.uniform(12.0, 13.0))
                t = trip(tr, lt, wchoice(rnd, shop_cells, shop_w))
                t = trip(tr, t + rnd.uniform(30, 60) * MIN, work)
            t = max(t, H(min(max(rnd.gauss(17.2, 0.4), 16.0), 19.0)))
            if rnd.random() < 0.3:
                t = trip(tr, t, wchoice(rnd, shop_cells, shop_w))
                t += rnd.uniform(20, 60) * MIN
            t = trip(tr, t, home)
        elif kind == "home":
            t = tr.enter(0.0, home, "start")
            n_err = min(3, poisson(rnd, 1.2))
            for h in sorted(rnd.uniform(9.6, 18.0) for _ in range(n_err)):
                if H(h) <= t:
                    continue
                dst = wchoice(rnd, shop_cells, shop_w) if rnd.random() < 0.6 else rnd.choice(macro)
                t = trip(tr, H(h), dst)
                t = trip(tr, t + rnd.uniform(20, 90) * MIN, home)
        elif kind == "student":
            t = tr.enter(0.0, rnd.choice(schools), "start")
            t = H(rnd.uniform(15.25, 16.0))
            if rnd.random() < 0.4:
                t = trip(tr, t, wchoice(rnd, shop_cells, shop_w))
                t += rnd.uniform(30, 90) * MIN
            t = trip(tr, t, home)
        else:
            t = tr.enter(0.0, home, "start")
        if concert:
            t = to_concert(tr, t + rnd.uniform(10, 40) * MIN, rnd.uniform(18.0, 19.3))
            t = trip(tr, t, home)
        else:
            t = evening(tr, t, home, {"out-commuter": 0.15, "worker": 0.15, "home": 0.10, "student": 0.15}.get(kind, 0.0))
        tracks.append(tr)
        kinds.append("resident-concert" if concert else "resident-" + kind)

    # ---- in-commuters ----------------------------------------------------------------------
    for _ in range(int(round(2_000 * scale))):
        tr = Track()
        work = wchoice(rnd, work_cells, work_w)
        tr.enter(0.0, work, "start")
        t = H(min(max(rnd.gauss(17.0, 0.4), 15.5), 19.0))
        leave_town(tr, t, rnd.random() < 0.45)
        tracks.append(tr)
        kinds.append("in-commuter")

    # ---- day visitors (shopping) -------------------------------------------------------------
    for _ in range(int(round(1_200 * scale))):
        tr = Track()
        h = rnd.uniform(10.0, 15.0)
        by_train = rnd.random() < 0.4
        t = arrive_by_train(tr, next_train(h)) if by_train else arrive_by_road(tr, h)
        for _k in range(rnd.randint(1, 3)):
            t = trip(tr, t, wchoice(rnd, shop_cells, shop_w), walk_only=True)
            t += rnd.uniform(30, 80) * MIN
        leave_town(tr, t, by_train)
        tracks.append(tr)
        kinds.append("day-visitor")

    # ---- arena staff -------------------------------------------------------------------------
    for _ in range(int(round(150 * scale))):
        tr = Track()
        t = arrive_by_road(tr, rnd.uniform(16.0, 17.0))
        t = trip(tr, t, arena_foot)
        t = tr.go(t + rnd.uniform(2, 5) * MIN, rnd.choice(arena))
        t = H(rnd.uniform(23.1, 23.7))
        if t < END:
            go_by_road(tr, tr.go(t, arena_foot))
        tracks.append(tr)
        kinds.append("arena-staff")

    # ---- concert visitors ----------------------------------------------------------------------
    late_deps = [22 + 50 / 60, 23.0, 23 + 10 / 60, 23 + 20 / 60, 23.5, 23 + 40 / 60]  # specials
    for _ in range(int(round(2_500 * scale))):
        tr = Track()
        h = wchoice(rnd, [18 + 5 / 60, 18 + 35 / 60, 18 + 50 / 60, 19 + 5 / 60, 19 + 25 / 60], [20, 25, 20, 20, 15])
        t = arrive_by_train(tr, h)
        if h < 18.7 and rnd.random() < 0.25:
            t = trip(tr, t, wchoice(rnd, shop_cells, shop_w), walk_only=True)
            t += rnd.uniform(40, 70) * MIN
        t = to_concert(tr, t, 0.0)
        t = walk(net, tr, t, station, rnd, 6 * MIN, 9 * MIN)
        h = TOWN_START_H + t / HOUR + 1 / 60
        tr.leave(H(min([d for d in late_deps if d >= h] or [24.0])))
        tracks.append(tr)
        kinds.append("concert-visitor-train")
    for _ in range(int(round(700 * scale))):
        tr = Track()
        t = arrive_by_road(tr, rnd.uniform(18.0, 19.4))
        t = trip(tr, t, arena_foot)
        t = to_concert(tr, t, 0.0)
        go_by_road(tr, t + rnd.uniform(2, 10) * MIN)
        tracks.append(tr)
        kinds.append("concert-visitor-road")

    visits, dur_ms = finalize_visits(tracks, END)

    # ---- devices -----------------------------------------------------------------------------
    devices = []
    n_cust = n_two = 0
    t3412 = 54 * MIN
    for p in range(len(tracks)):
        if rnd.random() >= 0.30:
            continue  # another operator's customer: invisible
        n_cust += 1
        nph = 2 if rnd.random() < 0.10 else 1
        n_two += nph == 2
        for j in range(nph):
            med = 2.0 if j == 0 else 1.0
            rd = min(rnd.lognormvariate(math.log(med), 0.7), 60.0)
            rp = 0.3 * rd + 0.1
            devices.append(Device(p, rd, rp, t3412, (10.0, 1.0, 10.0, 900.0), arr_p=[0.10, 0.80, 0.10], det_p=0.05))
    n_phones = len(devices)
    sub_ids = make_ids(rnd, n_phones, "001010")
    ta = np.array(net.ta, np.int32)
    ev = signal_all(rng, devices, visits, ta)

    # ---- M2M meters: fixed, report hourly or 6-hourly at a fixed phase -----------------------
    n_m2m = int(round(1_500 * scale))
    meter_cells = rnd.choices(macro, weights=homes_w, k=n_m2m)
    sub_ids += make_ids(rnd, n_m2m, "001019")
    T, C, K, D = ev
    for cell in meter_cells:
        di = len(devices)
        dev = Device(-1, 0.0, 0.0, t3412, (4.0, 0.5, 10.0, 60.0), m2m=True)
        devices.append(dev)
        period = 3600_000 if rnd.random() < 0.6 else 6 * 3600_000
        phase = rnd.randrange(period)
        s = np.arange(phase, dur_ms, period, dtype=np.float64)
        s = s + rng.uniform(0, 30_000, len(s))
        s = s[s < dur_ms]
        tt = np.array([0], np.int64)
        cc = np.array([cell], np.int32)
        ts, cs, ks = signal_visit(rng, dev, tt, cc, dur_ms, "start", "end", ta, fixed_sessions=s)
        T.append(ts)
        C.append(cs)
        K.append(ks)
        D.append(np.full(len(ts), di, np.int32))

    cap = {k: max(1, int(round(v * scale))) for k, v in TOWN_CAPACITY.items()}
    west = [i for i in range(len(net.ids)) if net.grid[net.foot[i]][0] <= 3]
    east = [i for i in range(len(net.ids)) if net.grid[net.foot[i]][0] >= 4]
    small_size = {station: 8_000.0, mall: 15_000.0, arena[0]: 6_000.0, arena[1]: 6_000.0}

    def size(cells):
        return round(sum(small_size[i] for i in cells), 1)

    all_cells = list(range(len(net.ids)))
    centre_cells = centre + [mall, station]
    areas = [
        {
            "id": "town",
            "name": "Whole town",
            "kind": "city",
            "capacity": cap["town"],
            "cells": all_cells,
            "size_m2": round(len(macro) * TOWN_SPACING**2, 1),
            "parts": ["west", "east"],
        },
        {
            "id": "west",
            "name": "West district",
            "kind": "district",
            "capacity": cap["west"],
            "cells": west,
            "size_m2": round(sum(1 for i in west if net.foot[i] == i) * TOWN_SPACING**2, 1),
        },
        {
            "id": "east",
            "name": "East district",
            "kind": "district",
            "capacity": cap["east"],
            "cells": east,
            "size_m2": round(sum(1 for i in east if net.foot[i] == i) * TOWN_SPACING**2, 1),
        },
        {
            "id": "centre",
            "name": "Town centre",
            "kind": "district",
            "capacity": cap["centre"],
            "cells": centre_cells,
            "size_m2": round(len(centre) * TOWN_SPACING**2, 1),
        },
        {"id": "arena", "name": "Arena", "kind": "venue", "capacity": cap["arena"], "cells": arena, "size_m2": size(arena)},
        {"id": "station", "name": "Railway station", "kind": "station", "capacity": cap["station"], "cells": [station], "size_m2": size([station])},
    ]
    settings = {"CROWDPULSE_MARKET_SHARE": "0.3", "CROWDPULSE_SIMS_PER_PERSON": "1.1", "CROWDPULSE_ROTATION_PERIOD_S": "0"}
    extra = {
        "people_by_kind": {k: kinds.count(k) for k in sorted(set(kinds))},
        "customers": n_cust,
        "market_share_realised": round(n_cust / len(tracks), 4),
        "customers_with_two_phones": n_two,
        "sims_per_customer_realised": round(n_phones / max(n_cust, 1), 4),
        "tracking_areas": len(set(net.ta)),
        "scale": scale,
    }
    return dict(
        name="town-concert",
        net=net,
        areas=areas,
        reference="town",
        t0=TOWN_DAY + int(TOWN_START_H * 3600_000),
        dur=dur_ms,
        visits=visits,
        devices=devices,
        sub_ids=sub_ids,
        ev=(T, C, K, D),
        settings=settings,
        extra=extra,
    )


# --------------------------------------------------------------------------------------------

SCENARIOS = {"festival": festival, "town-concert": town_concert}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", required=True, choices=sorted(SCENARIOS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--small", action="store_true", help="1/10 of the people, same duration")
    ap.add_argument("--check", action="store_true", help="run self-consistency checks")
    a = ap.parse_args(argv)
    t_start = _time.time()
    scale = 0.1 if a.small else 1.0
    ss = np.random.SeedSequence([a.seed, list(SCENARIOS).index(a.scenario), int(a.small)])
    s_mob, s_sig = ss.spawn(2)
    rnd = random.Random(int(s_mob.generate_state(1)[0]))
    rng = np.random.default_rng(s_sig)
    sc = SCENARIOS[a.scenario](rnd, rng, scale)
    summary = write_outputs(
        a.out,
        sc["name"],
        sc["net"],
        sc["areas"],
        sc["reference"],
        sc["t0"],
        sc["dur"],
        sc["visits"],
        sc["devices"],
        sc["sub_ids"],
        sc["ev"],
        sc["settings"],
        sc["extra"],
        a.check,
    )
    el = _time.time() - t_start
    peaks = ", ".join(f"{k} {v['people']}/{v['capacity']}" for k, v in summary["peaks"].items())
    print(
        f"{a.scenario}{' (small)' if a.small else ''}: {summary['events']} events, "
        f"{summary['devices']} devices, {summary['people']} people, peaks: {peaks}; "
        f"{el:.1f} s",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
