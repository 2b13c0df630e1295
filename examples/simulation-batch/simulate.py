"""A village through lean and fat years: each turn the village harvests (more
hands, more food, up to the land's limit), eats by its policy, and grows or
shrinks with how well it ate. The configuration comes from FLOTILLA_PARAMS;
the outcome is printed as the metrics line."""
import json
import os
import random
import sys

params = json.load(open(os.environ["FLOTILLA_PARAMS"]))
population = params["state.population"]
food = params["state.food"]
policy = params["policy"]
turns = params["turns"]
if not isinstance(turns, int) or turns <= 0:
    print(f"turns must be a positive whole number, got {turns!r}", file=sys.stderr)
    sys.exit(2)
if policy not in ("share", "hoard", "ration"):
    print(f"policy must be share, hoard or ration, got {policy!r}", file=sys.stderr)
    sys.exit(2)

rng = random.Random(int(os.environ["FLOTILLA_SEED"]))
LAND = 600  # the most the fields yield in a year
starved_years = 0
for year in range(turns):
    weather = rng.uniform(0.6, 1.3)
    food += min(LAND, 2.2 * population) * weather
    need = population * {"share": 1.0, "hoard": 1.4, "ration": 0.8}[policy]
    eaten = min(food, need)
    food -= eaten
    fed = eaten / max(population, 1)
    if policy == "hoard":
        food *= 0.85  # stores rot
    if fed < 0.75:
        starved_years += 1
    population = max(0, round(population * (0.9 + 0.15 * min(fed, 1.0))))
    if population == 0:
        break

print(json.dumps({
    "final_population": population,
    "survived": population > 0,
    "food_per_person": round(food / population, 3) if population else 0.0,
    "starved_years": starved_years,
}))
