"""Asks one model a question through the official `ollama` client. The worker
sets OLLAMA_HOST to its gateway, which sends `ollama/…` models to the Ollama
the worker was started with (`--ollama-url`)."""
import json
import sys

import ollama

model, question = sys.argv[1], sys.argv[2]
reply = ollama.Client().chat(model=model, messages=[{"role": "user", "content": question}])
print(json.dumps({
    "answer_words": len(reply.message.content.split()),
    "prompt_tokens": reply.prompt_eval_count,
    "answered": bool(reply.message.content.strip()),
}))
