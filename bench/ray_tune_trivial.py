"""Ray Tune running trivial trials: a grid of `--trials` values, a trainable
that reports one metric. Prints "trials seconds" (from tuner.fit() start)."""
import argparse
import tempfile
import time

from ray import tune
import ray


def trainable(config):
    return {"score": config["x"] * 2}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=200)
    args = parser.parse_args()
    # Loopback only: the benchmark must not use any other address.
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    tuner = tune.Tuner(
        trainable,
        param_space={"x": tune.grid_search(list(range(args.trials)))},
        tune_config=tune.TuneConfig(metric="score", mode="max"),
        run_config=tune.RunConfig(verbose=0, storage_path=tempfile.mkdtemp(prefix="ray-results-")),
    )
    start = time.perf_counter()
    results = tuner.fit()
    elapsed = time.perf_counter() - start
    assert len(results) == args.trials, len(results)
    print(f"{args.trials} {elapsed:.6f}")


if __name__ == "__main__":
    main()
