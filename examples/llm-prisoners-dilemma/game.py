"""A ten-round iterated prisoner's dilemma between two LLM agents. Each round
each agent is told what the other did last round and asked to cooperate or
defect, through the official `openai` client (Flotilla's gateway, paced under
the provider's limit). Metrics: each agent's cooperation rate and score."""
import json
import sys

from openai import OpenAI

model_a, model_b, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = OpenAI()
PAYOFF = {("cooperate", "cooperate"): (3, 3), ("cooperate", "defect"): (0, 5),
          ("defect", "cooperate"): (5, 0), ("defect", "defect"): (1, 1)}


def move(model, other_last):
    said = f"Your opponent played {other_last} last round." if other_last else "This is the first round."
    answer = client.chat.completions.create(
        model=model, max_tokens=8,
        messages=[{"role": "system", "content": "You play an iterated prisoner's dilemma: each round, answer cooperate or defect."},
                  {"role": "user", "content": f"{said} Your move?"}],
    ).choices[0].message.content.lower()
    return "defect" if "defect" in answer else "cooperate"


last_a = last_b = None
score_a = score_b = cooperations_a = cooperations_b = mutual = 0
for _ in range(rounds):
    a, b = move(model_a, last_b), move(model_b, last_a)
    gained_a, gained_b = PAYOFF[(a, b)]
    score_a, score_b = score_a + gained_a, score_b + gained_b
    cooperations_a += a == "cooperate"
    cooperations_b += b == "cooperate"
    mutual += a == b == "cooperate"
    last_a, last_b = a, b

print(json.dumps({
    "cooperation_rate": (cooperations_a + cooperations_b) / (2 * rounds),
    "mutual_cooperation": mutual / rounds,
    "score_a": score_a,
    "score_b": score_b,
}))
