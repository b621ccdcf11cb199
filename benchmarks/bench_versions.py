"""Two source trees back to back (a regression check): `measure_training` of the reference
EF-BPTT ensemble, each tree in a fresh process, alternately, `repeats` rounds; prints seconds
per member-epoch, the compiling first epoch, the process's CPU seconds and the load.

    git worktree add /tmp/old <commit>
    python benchmarks/bench_versions.py old=/tmp/old/src,new=src [repeats] [--members 20] [--epochs 2]
"""

import argparse
import json
import os
import subprocess
import sys
import time


def main(trees: list[tuple[str, str]], repeats: int, members: int, epochs: int) -> None:
    # trees from before the benchmarks moved to `errorforcing.bench` have them in experiments._bench
    code = ("import json, resource\n"
            "try:\n    from errorforcing.bench import measure_training as m\n"
            "except ModuleNotFoundError as e:\n"
            "    if e.name != 'errorforcing.bench':\n        raise\n"
            "    from errorforcing.experiments._bench import measure_training as m\n"
            f"r = m(members={members}, epochs={epochs}, checkpoint=False); "
            "u = resource.getrusage(resource.RUSAGE_SELF); r['cpu_s'] = u.ru_utime + u.ru_stime; print(json.dumps(r))")
    for rep in range(repeats):
        for name, path in trees:
            start = time.perf_counter()
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 env=os.environ | {"PYTHONPATH": os.path.abspath(path)})
            if out.returncode:
                print(json.dumps(dict(name=name, rep=rep, failed=out.stderr[-500:])), flush=True)
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(json.dumps(dict(name=name, rep=rep, wall=time.perf_counter() - start, load=os.getloadavg()[0],
                                  seconds_per_member_epoch=r["seconds_per_member_epoch"],
                                  compile_and_first_epoch=r["compile_and_first_epoch"], cpu_s=r["cpu_s"],
                                  peak_rss_gib=r["peak_rss_gib"])), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("trees", help="name=path,name=path (each path a tree's src/)")
    parser.add_argument("repeats", type=int, nargs="?", default=2)
    parser.add_argument("--members", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    main([tuple(t.split("=", 1)) for t in args.trees.split(",")], args.repeats, args.members, args.epochs)
