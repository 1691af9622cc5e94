"""One ``launch.py --role all`` run from a bench: its hub's summary (the last stdout line), or a clear error."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_all(args: list[str], seconds: float, label: str) -> dict:
    """``launch.py --role all *args`` (which should carry ``--max-seconds``), printed to stderr first; the summary
    has ``wall_s`` added. Raises RuntimeError with the end of stderr when the run fails."""
    cmd = [sys.executable, str(ROOT / "launch.py"), "--role", "all", *args]
    print(f"[{label}] {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 300)
    if out.returncode != 0:
        raise RuntimeError(f"{label}: launch.py exited {out.returncode}:\n{out.stderr[-3000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    summary["wall_s"] = time.monotonic() - t0
    return summary
