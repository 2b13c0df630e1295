#!/usr/bin/env python3
"""Iterated prisoner's dilemma: one strategy against an opponent drawn from a
mixed population, with noise (each intended move flips with probability
--noise). Standard library only.

Follows the Flotilla run contract: metrics go to $FLOTILLA_METRICS as a JSON
object, the move history to $FLOTILLA_OUTPUT_DIR/moves.csv.
"""
import argparse
import json
import os
import random

# Payoffs (mine, theirs) for (my move, their move); C = cooperate, D = defect.
PAYOFF = {("C", "C"): (3, 3), ("C", "D"): (0, 5), ("D", "C"): (5, 0), ("D", "D"): (1, 1)}
OPPONENTS = ["tit-for-tat", "grim", "always-defect", "always-cooperate", "random"]


def decide(strategy, mine, theirs, rng):
    if strategy == "tit-for-tat":
        return theirs[-1] if theirs else "C"
    if strategy == "grim":
        return "D" if "D" in theirs else "C"
    if strategy == "always-defect":
        return "D"
    if strategy == "always-cooperate":
        return "C"
    if strategy == "random":
        return rng.choice("CD")
    raise SystemExit(f"unknown strategy {strategy!r}; known: {', '.join(OPPONENTS)}")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--noise", type=float, default=0.0)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    rng = random.Random(args.seed)
    # The opponent depends on the seed only, so repetition k meets the same
    # opponent in every variation: the runs pair up across variations.
    opponent = OPPONENTS[args.seed % len(OPPONENTS)]
    mine, theirs, rows = [], [], []
    my_score = their_score = cooperations = 0
    for round_number in range(args.rounds):
        my_move = decide(args.strategy, mine, theirs, rng)
        their_move = decide(opponent, theirs, mine, rng)
        if rng.random() < args.noise:
            my_move = "D" if my_move == "C" else "C"
        if rng.random() < args.noise:
            their_move = "D" if their_move == "C" else "C"
        gain, their_gain = PAYOFF[(my_move, their_move)]
        my_score += gain
        their_score += their_gain
        cooperations += (my_move == "C") + (their_move == "C")
        mine.append(my_move)
        theirs.append(their_move)
        rows.append(f"{round_number + 1},{my_move},{their_move},{gain},{their_gain}")

    output_dir = os.environ.get("FLOTILLA_OUTPUT_DIR")
    if output_dir:
        with open(os.path.join(output_dir, "moves.csv"), "w") as f:
            f.write("round,mine,theirs,my_payoff,their_payoff\n" + "\n".join(rows) + "\n")

    metrics = {
        "score": my_score / args.rounds,
        "opponent_score": their_score / args.rounds,
        "cooperation_rate": cooperations / (2 * args.rounds),
        "win": my_score > their_score,
        "opponent": opponent,
    }
    metrics_path = os.environ.get("FLOTILLA_METRICS")
    if metrics_path:
        with open(metrics_path, "w") as f:
            json.dump(metrics, f)
    print(f"{args.strategy} vs {opponent}: {my_score}-{their_score}")


if __name__ == "__main__":
    main()
