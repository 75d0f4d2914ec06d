"""Two systems' outputs for the A/B study tests, written by this package's own scripts.

* `valid.jsonl`: the first conversations of the bundled sample's valid split, one utterance of one conversation
  carrying HTML (`INJECTED`), so that the page's escaping is tested on data the evaluation wrote;
* `eval0/predictions.jsonl`, `eval1/predictions.jsonl`: `scripts/evaluate.py` of two tiny random IAMMs (seeds 0 and
  1) on that split: greedy responses of 8 tokens, many identical between the two (ties);
* `llm.jsonl`: `run_prompting`'s results file (what `scripts/prompt_openai.py` writes) for the same samples against
  the local OpenAI-compatible server, whose answers are `Emotion: ...\\nResponse: ...`, one with an empty response,
  one with HTML in it, one failed request.
"""

import gzip
import importlib.util
import json
import os
from typing import Dict

from modeling_iamm import SAMPLE_DATA_DIR, build_samples, load_empathetic_dialogues

INJECTED = '<img src=x onerror="window.injected=1"><b>bold</b>'
CONVERSATIONS = 24


def _evaluate_script():
    spec = importlib.util.spec_from_file_location(
        "iamm_evaluate_script", os.path.join(os.path.dirname(__file__), "..", "..", "scripts", "evaluate.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_data(folder: str) -> str:
    """The test split (`valid.jsonl`, per conversation) with HTML in the first speaker turn of the 2nd conversation."""
    os.makedirs(folder, exist_ok=True)
    with gzip.open(os.path.join(SAMPLE_DATA_DIR, "valid.jsonl.gz"), "rt", encoding="utf-8") as f:
        conversations = [json.loads(line) for line in f][:CONVERSATIONS]
    conversations[1]["turns"][0]["text"] = f"{INJECTED} {conversations[1]['turns'][0]['text']}"
    with open(os.path.join(folder, "valid.jsonl"), "w", encoding="utf-8") as f:
        for conversation in conversations:
            f.write(json.dumps(conversation) + "\n")
    return folder


def make_outputs(folder: str, tokenizer) -> Dict[str, str]:
    """Write the data, two tiny models, their evaluations and an LLM results file under `folder`; their paths."""
    from iamm.llm.openai_prompting import PromptingConfig, run_prompting
    from tests.helpers.openai_server import OpenAIServer
    from tests.helpers.tiny_model import IAMMModelTester

    data = write_data(os.path.join(folder, "data"))
    evaluate = _evaluate_script()
    paths = {"data": data}
    for seed in (0, 1):
        model_dir = os.path.join(folder, f"model{seed}")
        model = IAMMModelTester(vocab_size=len(tokenizer), use_implicit_association=False).create_model(seed=seed)
        model.eval().save_pretrained(model_dir, tokenizer=tokenizer)
        out = os.path.join(folder, f"eval{seed}")
        evaluate.main(["--model_name_or_path", model_dir, "--data", data, "--split", "valid", "--output_dir", out,
                       "--max_new_tokens", "8", "--with_associations", "false", "--batch_size", "16"])
        paths[f"eval{seed}"] = os.path.join(out, "predictions.jsonl")
    ids = [f"{s['conv_id']}#{s['turn']}" for s in build_samples(load_empathetic_dialogues(data)["valid"])]
    special = {ids[0]: "Emotion: sad\nResponse: ", ids[1]: f"Emotion: joyful\nResponse: {INJECTED} how nice!"}

    def answer(sample_id: str) -> str:
        return special.get(sample_id, f"Emotion: sad\nResponse: I am sorry to hear that, truly ({sample_id[-2:]}).")

    rows = [{"id": i, "messages": [{"role": "user", "content": f"answer {i}"}]} for i in ids]
    paths["llm"] = os.path.join(folder, "llm.jsonl")
    with OpenAIServer({ids[2]: ["400"]}, answer=answer) as server:
        config = PromptingConfig(base_url=server.base_url, api_key="test", max_attempts=1, concurrency=4)
        run_prompting(rows, paths["llm"], config, split="valid")
    paths["ids"] = ids
    paths["special"] = special
    return paths
