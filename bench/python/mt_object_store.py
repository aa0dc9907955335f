"""W1, W2, W3, W5 and W6 of WORKLOADS.md against the Python original, `mt.base.object_store`.

The comparison harness (`shmstore-bench`) runs this script once per workload run when
`import mt.base.object_store` works in the interpreter it finds (`pip install mtbase`), and
reads one JSON object from its standard output: operations per second per figure, keyed
"put", "get", "miss", "has", "remove" (W1), "put", "get", "over" (W2), "total" (W3, W6),
"one", "two" and their ratio "scale" (W5). W4 is not run: the original rotates on the
machine's free memory, not on a capacity, so W4's store cannot be expressed.

The keys and values are the harness's: `key-000000`, `key-000001`, ...; a value of `len`
bytes is `(i * 31 + salt) mod 256` for i in 0..len. Objects are Python `bytes`, pickled on
their way to and from the store's manager process, as a user of the original would store
them. W1 runs with fewer keys than the other systems (the harness passes how many): each
call is a round trip to the manager, so the rate does not depend on how many keys there are,
and 100,000 keys would take minutes per run.

    python3 mt_object_store.py w1 --keys 2000 --len 64 --seed 1
    python3 mt_object_store.py w2 --keys 200 --len 1048576 --seed 1
    python3 mt_object_store.py w3 --keys 10000 --len 64 --secs 2 --workers 2 --seed 1
    python3 mt_object_store.py w5 --keys 10000 --len 4096 --secs 2 --seed 1
    python3 mt_object_store.py w6 --keys 10000 --len 64 --secs 2 --workers 8 --seed 1
"""

import argparse
import json
import multiprocessing
import queue
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


def new_store():
    """A store as the original's own docstring makes one: eviction by free memory off."""
    return object_store.create(min_free_mem_pct=0.0)


class Checked:
    """A fresh store, the keys in a random order (the seed's; not the harness's permutation,
    which does not matter to a dictionary), and a record of wrong answers."""

    def __init__(self, args):
        self.store = new_store()
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
    n, m = args.keys, args.len
    first, second = value(m, 1), value(m, 2)
    c = Checked(args)
    store, order, check = c.store, c.order, c.check
    names = [key(i) for i in range(n)]
    # As the harness does for the other systems, a get's check in the timed loop is the
    # length (comparing 1 MiB there would add ~1% to a Python get); the bytes after it.
    out = {
        "put": rate(n, lambda i: check(object_store.put(store, names[i], first))),
        "get": rate(n, lambda i: check(len(object_store.get(store, names[order[i]], b"")) == m)),
        "over": rate(n, lambda i: check(object_store.put(store, names[order[i]], second))),
    }
    check(all(object_store.get(store, k) == second for k in names))
    c.done("W2")
    return out


def fill(args):
    """A store holding keys 0..n with `len`-byte values, as the harness fills W3 and W5's;
    the key names and W3's put value made once, before the workers fork."""
    args.names = [key(i) for i in range(args.keys)]
    args.mix_value = value(args.len, 5)
    store = new_store()
    filling = value(args.len, 3)
    for k in args.names:
        expect(object_store.put(store, k, filling), "filling: a put was refused")
    return store


def fleet(what, target, store, workers, args):
    """Runs `target` in `workers` forked processes; the total ops/s over the longest worker's
    own running time (forks and joins not included, as the harness does for the others)."""
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    # All start their clocks together, as the harness's workers do.
    start = ctx.Barrier(workers)
    procs = [
        ctx.Process(target=target, args=(store, args, args.seed + w, start, results))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    done = []
    try:
        # A worker killed outright reports nothing: wait for each no longer than its run
        # plus the original's own lock timeout (30 s) and some.
        for _ in procs:
            done.append(results.get(timeout=args.secs + 60))
    except queue.Empty:
        for p in procs:
            p.kill()
        raise SystemExit(f"mt.base.object_store: a {what} worker never reported")
    for p in procs:
        p.join()
    errors = [e for *_, e in done if e is not None]
    expect(not errors, f"a {what} worker failed: {errors}")
    expect(all(p.exitcode == 0 for p in procs), f"a {what} worker failed")
    expect(sum(d[1] for d in done) == 0, f"{what}: gets missed in a filled store")
    return sum(d[0] for d in done) / max(d[2] for d in done)


def worker(body):
    """A worker's loop around `body(store, args, rng)` (which returns whether a get missed):
    runs it for `secs` and always reports (ops, misses, its own running time, the error if
    it failed), so that the parent never waits for a worker that died."""

    def run(store, args, seed, barrier, results):
        rng = random.Random(seed)
        ops = misses = 0
        error = None
        start = time.perf_counter()
        try:
            barrier.wait(timeout=60)
            start = time.perf_counter()
            deadline = start + args.secs
            while time.perf_counter() < deadline:
                for _ in range(16):
                    misses += body(store, args, rng)
                    ops += 1
        except BaseException as e:  # reported to the parent, which fails the run
            error = repr(e)
        finally:
            results.put((ops, misses, time.perf_counter() - start, error))

    return run


def mix_op(store, args, rng):
    """W3's mix: 50% get, 50% put, on uniformly random keys."""
    k = args.names[rng.randrange(args.keys)]
    if rng.random() < 0.5:
        return object_store.get(store, k) is None
    object_store.put(store, k, args.mix_value)
    return False


def read_op(store, args, rng):
    """W5's reader: a get of a uniformly random key."""
    return object_store.get(store, args.names[rng.randrange(args.keys)]) is None


def w3(args):
    """W3 (and W6, with more workers): the mix on a filled store."""
    store = fill(args)
    what = args.workload.upper()
    return {"total": fleet(what, worker(mix_op), store, args.workers, args)}


def w5(args):
    """W5: 1 reader, then 2, on a filled store."""
    store = fill(args)
    one = fleet("W5", worker(read_op), store, 1, args)
    two = fleet("W5", worker(read_op), store, 2, args)
    return {"one": one, "two": two, "scale": two / one}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["w1", "w2", "w3", "w5", "w6"])
    parser.add_argument("--keys", type=int, required=True)
    parser.add_argument("--len", type=int, required=True)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--secs", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    expect(args.keys > 0 and args.len >= 0, "--keys must be positive and --len not negative")
    out = {"w1": w1, "w2": w2, "w3": w3, "w5": w5, "w6": w3}[args.workload](args)
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()
