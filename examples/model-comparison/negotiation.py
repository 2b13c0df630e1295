"""A regulator and a tech company negotiate a rule over six rounds. Each round
both sides are asked, through the official `openai` client, whether they
cooperate (concede) or defect (hold out), seeing what the other side did last
round. The models come from the command line; the client finds Flotilla's
gateway through OPENAI_BASE_URL and OPENAI_API_KEY, so the calls are metered,
rate-limited and held to the experiment's budget."""
import json
import sys

from openai import OpenAI

regulator_model, company_model, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = OpenAI()
# (regulator, company) payoffs: a deal when both concede; holding out against a
# concession wins that round; both holding out costs both.
PAYOFF = {("cooperate", "cooperate"): (3, 3), ("cooperate", "defect"): (0, 5),
          ("defect", "cooperate"): (5, 0), ("defect", "defect"): (1, 1)}


def move(model, role, other_last):
    said = f"The other side chose to {other_last} last round." if other_last else "This is the first round."
    answer = client.chat.completions.create(
        model=model, max_tokens=16,
        messages=[{"role": "system", "content": f"You are the {role} in a negotiation over a new rule: each round, answer cooperate (concede) or defect (hold out)."},
                  {"role": "user", "content": f"{said} Your move?"}],
    ).choices[0].message.content.lower()
    return "defect" if "defect" in answer else "cooperate"


regulator_last = company_last = None
scores = [0, 0]
deals = 0
for _ in range(rounds):
    regulator = move(regulator_model, "regulator", company_last)
    company = move(company_model, "tech company", regulator_last)
    gained = PAYOFF[(regulator, company)]
    scores = [scores[0] + gained[0], scores[1] + gained[1]]
    deals += regulator == company == "cooperate"
    regulator_last, company_last = regulator, company

print(json.dumps({
    "welfare": scores[0] + scores[1],
    "regulator_score": scores[0],
    "company_score": scores[1],
    "deal": regulator_last == company_last == "cooperate",
    "deal_rounds": deals,
}))
