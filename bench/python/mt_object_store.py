"""W1, W2 and W3 of WORKLOADS.md against the Python original, `mt.base.object_store`.

The comparison harness (`shmstore-bench`) runs this script once per workload run when
`import mt.base.object_store` works in the interpreter it finds (`pip install mtbase`), and
reads one JSON object from its standard output: operations per second per figure, keyed
"put", "get", "miss", "has", "remove" (W1), "put", "get", "over" (W2), "total" (W3).

The keys and values are the harness's: `key-000000`, `key-000001`, ...; a value of `len`
bytes is `(i * 31 + salt) mod 256` for i in 0..len. Objects are Python `bytes`, pickled on
their way to and from the store's manager process, as a user of the original would store
them. W1 runs with fewer keys than the other systems (the harness passes how many): each
call is a round trip to the manager, so the rate does not depend on how many keys there are,
and 100,000 keys would take minutes per run.

    python3 mt_object_store.py w1 --keys 2000 --len 64 --seed 1
    python3 mt_object_store.py w2 --keys 200 --len 1048576 --seed 1
    python3 mt_object_store.py w3 --keys 10000 --len 64 --secs 2 --workers 2 --seed 1
"""

import argparse
import json
import multiprocessing
import random
import sys
import time

from mt.base import object_store


def key(i):
    return f"key-{i:06}"


def value(length, salt):
    return bytes((i * 31 + salt) % 256 for i in range(length))


def rate(n, op):
    """Operations per second of op(0) .. op(n - 1)."""
    start = time.perf_counter()
    for i in range(n):
        op(i)
    return n / (time.perf_counter() - start)


def expect(ok, what):
    if not ok:
        raise SystemExit(f"mt.base.object_store: {what}")


class Checked:
    """A fresh store, the keys in a random order (the seed's), and a record of wrong answers."""

    def __init__(self, args):
        self.store = object_store.create(min_free_mem_pct=0.0)
        self.order = list(range(args.keys))
        random.Random(args.seed).shuffle(self.order)
        self.ok = True

    def check(self, cond):
        self.ok &= bool(cond)

    def done(self, workload):
        expect(self.ok, f"a {workload} operation gave a wrong answer")


def w1(args):
    n, val = args.keys, value(args.len, 7)
    c = Checked(args)
    store, order, check = c.store, c.order, c.check
    present = [key(i) for i in range(n)]
    absent = [key(n + i) for i in range(n)]
    out = {
        "put": rate(n, lambda i: check(object_store.put(store, present[i], val))),
        "get": rate(n, lambda i: check(object_store.get(store, present[order[i]]) == val)),
        "miss": rate(n, lambda i: check(object_store.get(store, absent[order[i]]) is None)),
        "has": rate(n, lambda i: check(object_store.has(store, present[order[i]]))),
        "remove": rate(n, lambda i: check(object_store.remove(store, present[order[i]]))),
    }
    c.done("W1")
    expect(object_store.count(store) == 0, "W1 left objects behind")
    return out


def w2(args):
    n = args.keys
    first, second = value(args.len, 1), value(args.len, 2)
    c = Checked(args)
    store, order, check = c.store, c.order, c.check
    names = [key(i) for i in range(n)]
    out = {
        "put": rate(n, lambda i: check(object_store.put(store, names[i], first))),
        "get": rate(n, lambda i: check(object_store.get(store, names[order[i]]) == first)),
        "over": rate(n, lambda i: check(object_store.put(store, names[order[i]], second))),
    }
    c.done("W2")
    return out


def mix_worker(store, n, length, secs, seed, results):
    """W3's mix in one process: 50% get, 50% put, on uniformly random keys, for `secs`."""
    rng = random.Random(seed)
    val = value(length, 5)
    names = [key(i) for i in range(n)]
    ops = misses = 0
    deadline = time.perf_counter() + secs
    while time.perf_counter() < deadline:
        for _ in range(16):
            k = names[rng.randrange(n)]
            if rng.random() < 0.5:
                if object_store.get(store, k) is None:
                    misses += 1
            else:
                object_store.put(store, k, val)
            ops += 1
    results.put((ops, misses))


def w3(args):
    n = args.keys
    store = object_store.create(min_free_mem_pct=0.0)
    filling = value(args.len, 3)
    for i in range(n):
        expect(object_store.put(store, key(i), filling), "filling: a put was refused")
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    workers = [
        ctx.Process(
            target=mix_worker,
            args=(store, n, args.len, args.secs, args.seed + w, results),
        )
        for w in range(args.workers)
    ]
    start = time.perf_counter()
    for p in workers:
        p.start()
    done = [results.get() for _ in workers]
    for p in workers:
        p.join()
    elapsed = time.perf_counter() - start
    expect(all(p.exitcode == 0 for p in workers), "a W3 worker failed")
    expect(sum(m for _, m in done) == 0, "W3: gets missed in a filled store")
    return {"total": sum(o for o, _ in done) / elapsed}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["w1", "w2", "w3"])
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--len", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--secs", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    expect(args.keys > 0 and args.len >= 0, "--keys must be positive and --len not negative")
    out = {"w1": w1, "w2": w2, "w3": w3}[args.workload](args)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
