"""How OpenMP's wait policy moves torch on a few shared cores: tiny-model trainings run alone and side by side.

Each training is the random tiny model, 120 steps of batch 8 x 96 tokens plus a short forward pass, in a
process of its own. libgomp's idle threads spin by default; OMP_WAIT_POLICY=PASSIVE makes them sleep. The
test suite sets PASSIVE (tests/conftest.py) because it runs several torch processes on 2 cores.

    python bench/omp_wait.py [--steps 120] [--together 1 2 3]

Prints the wall time of each group under each policy. The losses printed by the runs agree: the policy
changes how threads wait, not what they compute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

TRAIN = """
import sys, time, torch
from trainables.tiny.model import build_tiny_model
from trainables.tiny.tokenizer import build_char_tokenizer
model = build_tiny_model(build_char_tokenizer(), seed=0)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
torch.manual_seed(0)
batch = torch.randint(0, 80, (8, 96))
for _ in range(int(sys.argv[1])):
    loss = model(input_ids=batch, labels=batch).loss
    loss.backward(); optimizer.step(); optimizer.zero_grad()
    with torch.no_grad():
        model(input_ids=batch[:, :8])
print(f"{loss.item():.6f}")
"""

POLICIES = {"default (spin)": None, "PASSIVE": "PASSIVE"}


def run_group(steps: int, together: int, policy: str | None) -> tuple[float, set[str]]:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    start = time.monotonic()
    runs = [subprocess.Popen([sys.executable, "-c", TRAIN, str(steps)], env=env, stdout=subprocess.PIPE, text=True)
            for _ in range(together)]
    losses = {run.communicate()[0].strip() for run in runs}
    if any(run.returncode for run in runs):
        sys.exit("a training run failed")
    return time.monotonic() - start, losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="training steps per run (default 120)")
    parser.add_argument("--together", type=int, nargs="+", default=[1, 2, 3],
                        help="how many runs share the machine at once, one group per number (default 1 2 3)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs; {args.steps} steps per run")
    print("| runs at once | " + " | ".join(POLICIES) + " |")
    print("|---|" + "---|" * len(POLICIES))
    for together in args.together:
        cells, losses = [], set()
        for policy in POLICIES.values():
            seconds, group_losses = run_group(args.steps, together, policy)
            cells.append(f"{seconds:.1f} s")
            losses |= group_losses
        print(f"| {together} | " + " | ".join(cells) + f" |   (final losses: {', '.join(sorted(losses))})", flush=True)


if __name__ == "__main__":
    main()
