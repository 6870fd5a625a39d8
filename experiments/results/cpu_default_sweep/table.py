"""The sweep's table from its arms' summary.json files: python experiments/results/cpu_default_sweep/table.py <dir>.

<dir> holds one folder per arm (run.sh's output) or one <arm>.json per arm (as committed in arms/).
"""

import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parent / "arms")
files = sorted(root.glob("*/summary.json")) or sorted(root.glob("*.json"))
names = ["gsm8k", "math500", "humaneval", "mbpp", "mt_bench", "avg"]
print("| arm | steps | minutes | " + " | ".join(names) + " | val TF-τ |")
print("|---|---:|---:|" + "---:|" * len(names) + "---:|")
for f in files:
    s = json.loads(f.read_text())
    arm = f.parent.name if f.name == "summary.json" else f.stem
    taus = " | ".join(f"{s['eval'][f'eval/tau/{n}']:.3f}" for n in names)
    print(f"| {arm} | {s['steps']} | {s['minutes']:.1f} | {taus} | {s['metrics']['val/tf_tau']:.3f} |")
