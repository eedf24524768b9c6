"""Wall time of the main job: ``text2emoji run`` (quick preset by default) from nothing, in a
fresh run directory and, with ``--cold-cache``, a fresh model cache (the embedded model's
one-time conversion included). DESIGN target: at most 20 minutes on 2 CPU cores.

    python bench/quick_run.py [--preset quick] [--cold-cache] [--keep DIR] [-- extra run flags]

Runs the command line as a user would (a subprocess), then prints JSON: the process's wall
time, each stage's seconds and share of it (from the run's own ``summary.json``), and the
ratio of the wall time to the 1,200 s target. Takes as long as the run itself (~20 minutes
on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import emit

TARGET_S = 1200


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick", choices=["quick", "paper"])
    ap.add_argument("--cold-cache", action="store_true", help="a fresh TEXT2EMOJI_CACHE (converts the model once)")
    ap.add_argument("--keep", metavar="DIR", help="run directory to write and keep (default: a temporary one)")
    ap.add_argument("extra", nargs="*", help="further `text2emoji run` flags, after --")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(a.keep) if a.keep else Path(tmp) / "run"
        if out.exists() and any(out.iterdir()):
            sys.exit(f"{out} is not empty: the benchmark times a run from nothing")
        env = dict(os.environ)
        if a.cold_cache:
            env["TEXT2EMOJI_CACHE"] = str(Path(tmp) / "cache")
        cli = Path(sys.executable).with_name("text2emoji")
        cmd = [str(cli), "run", "--preset", a.preset, "--out", str(out), *a.extra]
        t = time.perf_counter()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t
        summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    stages = summary.get("stage_seconds", {})
    emit({
        "benchmark": "quick_run", "preset": a.preset, "cold_cache": a.cold_cache, "command": " ".join(cmd[1:]),
        "wall_seconds": round(wall, 1), "target_seconds": TARGET_S, "wall_over_target": round(wall / TARGET_S, 3),
        "stage_seconds": stages,
        "stage_share": {k: round(v / wall, 3) for k, v in stages.items()},
        "startup_seconds": round(wall - summary.get("wall_seconds", wall), 1),
    })


if __name__ == "__main__":
    main()
