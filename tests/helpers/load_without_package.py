"""Run in a fresh process: load an IAMM folder with trust_remote_code while the `modeling_iamm` package is NOT
importable (an import hook refuses it), run it on a saved batch, and save the results for the test to compare."""

import importlib.abc
import sys


class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "modeling_iamm" or name.startswith("modeling_iamm.") or name in ("llm", "hub"):
            raise ImportError(f"{name} is deliberately not importable in this process")
        return None


sys.meta_path.insert(0, _Refuse())

import torch  # noqa: E402
from transformers import AutoModel, AutoModelForSeq2SeqLM, AutoTokenizer  # noqa: E402


def main(folder: str, batch_file: str, out_file: str) -> None:
    try:
        import modeling_iamm  # noqa: F401
    except ImportError:
        pass
    else:
        raise SystemExit("modeling_iamm is importable: the check would prove nothing")
    batch = torch.load(batch_file)
    results = {}
    for name, auto in (("auto_model", AutoModel), ("auto_seq2seq", AutoModelForSeq2SeqLM)):
        model = auto.from_pretrained(folder, trust_remote_code=True).eval()
        assert "transformers_modules" in type(model).__module__, type(model).__module__
        with torch.no_grad():
            out = model(**batch)
        results[name] = {
            "class": type(model).__name__,
            "logits": out.logits,
            "emotion_logits": out.emotion_logits,
            "generated": model.generate(**batch, max_new_tokens=12),
        }
    tokenizer = AutoTokenizer.from_pretrained(folder)
    results["tokenizer_vocab_size"] = len(tokenizer)
    torch.save(results, out_file)


if __name__ == "__main__":
    main(*sys.argv[1:4])
