#!/usr/bin/env python3
"""bench/ab.py against stub benchmarks: the builds alternate round by round, every point of every
round is kept, the change against the first build is the ratio of the means, and bad arguments are
refused with a message."""
import json
import os
import stat
import subprocess
import sys
import tempfile

AB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench", "ab.py")

# A benchmark that appends its name to a log (to check the order of runs) and reports `us` per point,
# plus 1 us per earlier run of itself (so that rounds differ).
STUB = """#!/usr/bin/env python3
import json, os, sys
args = sys.argv[1:]
out = args[args.index("--json") + 1]
log = {log!r}
previous = sum(1 for line in open(log) if line.strip() == {name!r}) if os.path.exists(log) else 0
open(log, "a").write({name!r} + "\\n")
runs = [{{"shape": "gpt-oss-20b", "scheme": "w4a16", "tokens": t, "ms": ({us} + previous + t) / 1000.0}} for t in (1, 128)]
json.dump({{"runs": runs, "args": args}}, open(out, "w"))
"""


def stub(folder, name, us, log):
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(STUB.format(log=log, name=name, us=us))
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def ab(*args):
    return subprocess.run([sys.executable, AB, *args], capture_output=True, text=True)


def main():
    with tempfile.TemporaryDirectory() as folder:
        log = os.path.join(folder, "order.log")
        a, b = stub(folder, "a", 100, log), stub(folder, "b", 110, log)
        out = os.path.join(folder, "ab.json")
        r = ab("--rounds", "3", "--json", out, f"main={a}", f"new={b}", "--", "--tokens", "1,128")
        assert r.returncode == 0, r.stderr
        assert open(log).read().split() == ["a", "b"] * 3, open(log).read()
        data = json.load(open(out))
        assert data["bench_args"] == ["--tokens", "1,128"] and data["rounds"] == 3
        assert len(data["rows"]) == 2 * 3 * 2
        us = {(row["build"], row["round"], row["tokens"]): row["us"] for row in data["rows"]}
        assert us[("main", 1, 1)] == 101 and us[("main", 3, 1)] == 103 and us[("new", 2, 128)] == 239, us
        # T=1: main 101/102/103, new 111/112/113: +9.8%. T=128: main 228-230, new 238-240: +4.4%.
        lines = r.stdout.splitlines()
        assert "101.0 / 102.0 / 103.0 | 111.0 / 112.0 / 113.0 (+9.8%)" in lines[1], r.stdout
        assert lines[2].endswith("(+4.4%)"), r.stdout

        for bad, message in [((f"main={a}",), "at least two builds"),
                             ((f"main={a}", f"main={b}"), "named twice"),
                             ((f"main={a}", f"new={folder}/missing"), "not an executable"),
                             ((f"main={a}", "new"), "NAME=BINARY"),
                             (("--rounds", "0", f"main={a}", f"new={b}"), "at least 1"),
                             ((f"main={a}", f"new={b}", "--", "--json", "x"), "--json goes before")]:
            r = ab(*bad)
            assert r.returncode != 0 and message in r.stderr, (bad, r.stderr)
    print("ab: all checks passed")


if __name__ == "__main__":
    main()
