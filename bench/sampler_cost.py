"""The time a sampler takes to propose one trial, as the study grows: what bounds `auto`'s use of the GP sampler.

    python -m bench.sampler_cost [--sizes 25,50,100,200,400] [--samplers gp,tpe,nsga2]

For each size N, a study of the embedded default's search space (sweeps/tiny.yaml) is filled with N finished
random trials whose readings come from a smooth synthetic trade-off; then the sweep's own searcher with the
sampler under test opens the same study and its next proposals are timed (median of 3). The driver makes these proposals in a sweep; a proposal
of a few seconds is nothing beside a GPU-hour trial, but it grows with N for GP and stays flat for TPE.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def readings(config: dict) -> dict:
    lr, mix, epochs = config["train.learning_rate"], config["reasoning_mix"], config["train.epochs"]
    harm = max(0.0, 100 - 12_000 * lr * epochs / 3 + 60 * mix)
    return {"harmful_score": harm, "reasoning_accuracy": min(100.0, 100 - 6_000 * lr * epochs / 3 + 40 * mix)}


def _searcher(sampler: str, size: int, storage: str, repeats: int):
    from sweeps.search_space import build_searcher, tune_param_space
    from sweeps.loader import load_spec

    spec = load_spec(None, ["initial_points=[]", f"optuna.storage={storage}", "name=cost", f"sampler={sampler}",
                            f"num_samples={max(size + repeats, 8)}",
                            *([f"population_size={max(2, size // 4)}"] if sampler == "nsga2" else [])])
    searcher = build_searcher(spec)
    searcher.set_search_properties(None, None, tune_param_space(spec.search_space))
    return searcher


def propose_seconds(sampler: str, size: int, repeats: int = 3) -> float:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/optuna.db"
        filler = _searcher("random", size, storage, repeats)
        for k in range(size):
            filler.on_trial_complete(f"t{k}", readings(filler.suggest(f"t{k}")))
        searcher = _searcher(sampler, size, storage, repeats)  # opens the same study
        times = []
        for k in range(size, size + repeats):
            start = time.perf_counter()
            config = searcher.suggest(f"t{k}")
            times.append(time.perf_counter() - start)
            searcher.on_trial_complete(f"t{k}", readings(config))
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sampler_cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="25,50,100,200,400", help="Finished trials before the timed "
                                                                      "proposal (default %(default)s).")
    parser.add_argument("--samplers", default="gp,tpe,nsga2", help="Samplers to time (default %(default)s).")
    args = parser.parse_args(argv)
    sizes = [int(size) for size in args.sizes.split(",")]
    print("| sampler | " + " | ".join(f"{n} trials" for n in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for sampler in args.samplers.split(","):
        cells = [f"{propose_seconds(sampler, n):.2f} s" for n in sizes]
        print(f"| {sampler} | " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
