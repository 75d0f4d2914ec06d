"""The `empathetic-response` pipeline: a dialogue in, the speaker's emotion, a listener response and IAMM's associated
words out.

It ships with every checkpoint as remote code (next to `modeling_iamm.py`, with the files it imports, all by
single-level relative imports), and the checkpoint's `config.json` names it under `custom_pipelines`, so

>>> from transformers import pipeline
>>> chat = pipeline("empathetic-response", model="org/iamm", trust_remote_code=True)
>>> chat(["I lost my job today."])
{'emotion': 'sad', 'emotion_scores': {...}, 'head_probabilities': {...}, 'response': '...', 'associated_words': {...}}

works where the `modeling_iamm` package is not installed. With the package imported, the task is registered in
transformers' pipeline registry, so `pipeline("empathetic-response", model=model, tokenizer=tokenizer)` takes an
in-memory model too.
"""

import os
import shutil
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from transformers import Pipeline

from .collator import IAMMDataCollator
from .inference import Dialogue, as_sample, compact_associations, predict_batch

TASK = "empathetic-response"

CUSTOM_PIPELINES = {
    TASK: {"impl": "pipeline_iamm.EmpatheticResponsePipeline", "pt": ["AutoModel"], "tf": [], "type": "text"},
}
"""What `config.json` holds under `custom_pipelines` (how `pipeline(..., trust_remote_code=True)` finds the class)."""

HEADS = ("context", "situation", "memory", "knowledge")
"""The emotion aggregation heads (Eq. 20-24), by the name of the encoding each one pools."""


def is_single_dialogue(inputs: Any) -> bool:
    """True for one dialogue (a list of utterance strings, or a dict), False for a list of dialogues."""
    if isinstance(inputs, (str, dict)):
        return True
    return isinstance(inputs, (list, tuple)) and len(inputs) > 0 and all(isinstance(t, str) for t in inputs)


def pipeline_files(directory: Optional[str] = None) -> List[str]:
    """The pipeline's file and every file it imports (recursively), as paths in `directory` (default: this one)."""
    from transformers.dynamic_module_utils import get_relative_import_files

    directory = directory or os.path.dirname(os.path.abspath(__file__))
    main = os.path.join(directory, "pipeline_iamm.py")
    return [main] + sorted(get_relative_import_files(main))


def ship_pipeline(config, save_directory: str) -> None:
    """Put the pipeline's remote code in `save_directory` and name it in `config.custom_pipelines` (called by
    `IAMMForConditionalGeneration.save_pretrained` before the config is written)."""
    os.makedirs(save_directory, exist_ok=True)
    for path in pipeline_files():
        target = os.path.join(save_directory, os.path.basename(path))
        if os.path.abspath(path) != os.path.abspath(target):
            shutil.copy(path, target)
    config.custom_pipelines = {task: dict(info) for task, info in CUSTOM_PIPELINES.items()}


def _top(probs: torch.Tensor, id2label: Dict[int, str], k: Optional[int]) -> Dict[str, float]:
    k = probs.numel() if k is None else min(k, probs.numel())
    values, indices = probs.topk(k)
    return {id2label[int(i)]: round(float(p), 4) for p, i in zip(values, indices)}


class EmpatheticResponsePipeline(Pipeline):
    """Emotion, response and associated words for dialogues, with a trained IAMM.

    Call it on one dialogue or a list of them. A dialogue is a list of utterances (oldest first; the last one is the
    speaker's, the model answers as the listener) or a dict `{"turns": [...], "situation": "...", "roles": [...]}`
    (`situation` and `roles` optional).

    Args (at call time):
        top_k (`int`, defaults to 5): how many emotions `emotion_scores` and each head list (None: all 32).
        with_associations (`bool`, defaults to True): return `associated_words`.
        keywords_per_pair / words_per_keyword (`int`, default 3): size of the `associated_words` view.
        **generate_kwargs: passed to `model.generate` (`num_beams`, `do_sample`, `top_p`, `max_new_tokens`, ...).

    Returns, per dialogue, a dict:
        `emotion`: the predicted label (argmax of the product of the heads' probabilities, Eq. 25);
        `emotion_scores`: {label: probability} of that product, renormalised, top-k;
        `head_probabilities`: per active head, `{"emotion": p of the predicted emotion, "top": {label: p}}`;
        `response`: the generated listener turn (a list with `num_return_sequences > 1`);
        `associated_words`: see :func:`compact_associations`.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model.eval()
        self.collator = IAMMDataCollator(self.tokenizer, relation_names=self.model.config.relation_names)

    def _sanitize_parameters(self, top_k: Optional[int] = 5, with_associations: bool = True,
                             keywords_per_pair: int = 3, words_per_keyword: int = 3, **generate_kwargs):
        postprocess = {"top_k": top_k, "keywords_per_pair": keywords_per_pair, "words_per_keyword": words_per_keyword}
        return {}, {"with_associations": with_associations, "generate_kwargs": generate_kwargs}, postprocess

    def __call__(self, inputs: Union[Dialogue, Sequence[Dialogue]], **kwargs) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
        """Predict for one dialogue (returns a dict) or a list of dialogues (returns a list of dicts)."""
        if is_single_dialogue(inputs):
            return super().__call__([inputs], **kwargs)[0]
        return super().__call__(list(inputs), **kwargs)

    def preprocess(self, dialogue: Dialogue) -> Dict[str, Any]:
        return {"sample": as_sample(dialogue)}

    def _forward(self, model_inputs: Dict[str, Any], with_associations: bool = True,
                 generate_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        prediction = predict_batch(self.model, self.tokenizer, self.collator, [model_inputs["sample"]],
                                   with_associations, **(generate_kwargs or {}))
        out = prediction.encoder_outputs
        return {
            "emotion_logits": out.emotion_logits[0].float().cpu(),
            "head_logits": {head: getattr(out, f"{head}_emotion_logits")[0].float().cpu() for head in HEADS
                            if getattr(out, f"{head}_emotion_logits", None) is not None},
            "response": prediction.responses[0],
            "associations": prediction.associations[0] if prediction.associations is not None else None,
        }

    def postprocess(self, model_outputs: Dict[str, Any], top_k: Optional[int] = 5, keywords_per_pair: int = 3,
                    words_per_keyword: int = 3) -> Dict[str, Any]:
        id2label = {int(i): label for i, label in self.model.config.id2label.items()}
        probs = model_outputs["emotion_logits"].softmax(-1)
        predicted = int(probs.argmax())
        heads = {}
        for head, logits in model_outputs["head_logits"].items():
            head_probs = logits.softmax(-1)
            heads[head] = {"emotion": round(float(head_probs[predicted]), 4), "top": _top(head_probs, id2label, top_k)}
        result = {
            "emotion": id2label[predicted],
            "emotion_scores": _top(probs, id2label, top_k),
            "head_probabilities": heads,
            "response": model_outputs["response"],
        }
        if model_outputs["associations"] is not None:
            result["associated_words"] = compact_associations(model_outputs["associations"], keywords_per_pair,
                                                              words_per_keyword)
        return result
