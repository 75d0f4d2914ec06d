"""The `empathetic-response` pipeline: a dialogue in, the speaker's emotion, a listener response and IAMM's associated
words out.

It ships with every checkpoint as remote code (next to `modeling_iamm.py`, with the files it imports, all by
single-level relative imports), and the checkpoint's `config.json` names it under `custom_pipelines`, so

>>> from transformers import pipeline
>>> chat = pipeline("empathetic-response", model="org/iamm", trust_remote_code=True)
>>> chat(["I lost my job today."])
{'emotion': 'sad', 'emotion_scores': {...}, 'head_probabilities': {...}, 'response': '...', 'situation': ...,
 'truncated': {}, 'associated_words': {...}}

works where the `modeling_iamm` package is not installed. With the package imported, the task is registered in
transformers' pipeline registry, so `pipeline("empathetic-response", model=model, tokenizer=tokenizer)` takes an
in-memory model too.
"""

import os
import shutil
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from transformers import Pipeline

from .collator import IAMMDataCollator, resolve_length_limits
from .inference import (
    HEADS,
    Dialogue,
    as_sample,
    check_generate_kwargs,
    check_model_tokenizer,
    compact_associations,
    predict_dialogues,
    prediction_collator,
)

TASK = "empathetic-response"

CUSTOM_PIPELINES = {
    TASK: {"impl": "pipeline_iamm.EmpatheticResponsePipeline", "pt": ["AutoModel"], "tf": [], "type": "text"},
}
"""What `config.json` holds under `custom_pipelines` (how `pipeline(..., trust_remote_code=True)` finds the class)."""

DEFAULT_BATCH_SIZE = 16
"""Dialogues per batch when the caller does not pass `batch_size` (the same as `modeling_iamm.inference.predict`)."""



def is_single_dialogue(inputs: Any) -> bool:
    """True for one dialogue (a list of utterance strings, or a dict), False for a list of dialogues. A list holding
    any string is one dialogue (a list of dialogues holds lists and dicts), so that a non-string among its
    utterances is named as such (:func:`~modeling_iamm.inference.dialogue_sample`)."""
    if isinstance(inputs, (str, dict)):
        return True
    return isinstance(inputs, (list, tuple)) and any(isinstance(t, str) for t in inputs)


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
    (`situation` and `roles` optional). A list is run in batches of `batch_size` dialogues (the standard pipeline
    argument, at construction or call time; default :data:`DEFAULT_BATCH_SIZE`). The tokenizer must be the model's
    (checked at construction, as the scripts check it).

    Args (at call time):
        top_k (`int`, defaults to 5): how many emotions `emotion_scores` and each head list (None: all 32).
        with_associations (`bool`, defaults to True): return `associated_words`.
        keywords_per_pair / words_per_keyword (`int`, default 3): size of the `associated_words` view.
        length_limits (`dict`, optional): replace some of the model's saved length limits
            (`{"max_utterance_length": 500}`; None or 0 lifts one); see `modeling_iamm.inference.predict`.
        **generate_kwargs: passed to `model.generate` (`num_beams`, `do_sample`, `top_p`, `max_new_tokens`, ...).

    Returns, per dialogue, a dict:
        `emotion`: the predicted label (argmax of the product of the heads' probabilities, Eq. 25);
        `emotion_scores`: {label: probability} of that product, renormalised, top-k;
        `head_probabilities`: per active head, `{"emotion": p of the predicted emotion, "top": {label: p}}`;
        `response`: the generated listener turn (a list with `num_return_sequences > 1`);
        `situation`: `"with_situation"`, or `"without_situation"` when the dialogue has none (or the model reads
            none): then the situation head, the utterance-situation pairs and the situation knowledge are left out;
        `truncated`: what the length limits cut, `{limit: words dropped}` (turns for `max_context_turns`);
        `associated_words`: see :func:`compact_associations`.
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._batch_size is None:
            self._batch_size = DEFAULT_BATCH_SIZE
        check_model_tokenizer(self.model, self.tokenizer)
        self.model.eval()
        self._collators: Dict[Any, IAMMDataCollator] = {}

    def collator(self, length_limits: Optional[Mapping[str, Optional[int]]] = None) -> IAMMDataCollator:
        """The collator for these limit overrides (made once per distinct overrides)."""
        key = tuple(sorted((length_limits or {}).items()))
        if key not in self._collators:
            self._collators[key] = prediction_collator(self.model, self.tokenizer, length_limits)
        return self._collators[key]

    def _sanitize_parameters(self, top_k: Optional[int] = 5, with_associations: bool = True,
                             keywords_per_pair: int = 3, words_per_keyword: int = 3,
                             length_limits: Optional[Mapping[str, Optional[int]]] = None, **generate_kwargs):
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a whole number >= 1 (emotions listed), or None for all of them; got {top_k!r}")
        check_generate_kwargs(generate_kwargs)
        resolve_length_limits(None, length_limits)  # an unknown limit name fails here, before any work
        postprocess = {"top_k": top_k, "keywords_per_pair": keywords_per_pair, "words_per_keyword": words_per_keyword}
        forward = {"with_associations": with_associations, "length_limits": length_limits,
                   "generate_kwargs": generate_kwargs}
        return {}, forward, postprocess

    def __call__(self, inputs: Union[Dialogue, Sequence[Dialogue]], **kwargs) -> Union[Dict[str, Any], List[Dict[str, Any]]]:
        """Predict for one dialogue (returns a dict) or a list of dialogues (returns a list of dicts)."""
        if isinstance(inputs, (list, tuple)) and len(inputs) == 0:
            raise ValueError("no dialogue given: pass a dialogue (a list of utterances, the last one the speaker's, "
                             "or a dict with 'turns') or a non-empty list of dialogues")
        single = is_single_dialogue(inputs)
        dialogues = [inputs] if single else list(inputs)
        # as samples now: a bad dialogue is named by its place before any work (preprocess passes samples through)
        samples = [as_sample(dialogue, index) for index, dialogue in enumerate(dialogues)]
        outputs = super().__call__(samples, **kwargs)
        return outputs[0] if single else outputs

    def preprocess(self, dialogue: Dialogue) -> Dict[str, Any]:
        return {"sample": as_sample(dialogue)}

    def _forward(self, model_inputs: Dict[str, Any], with_associations: bool = True,
                 length_limits: Optional[Mapping[str, Optional[int]]] = None,
                 generate_kwargs: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        # one sample (batch_size 1), or the list the pipeline's batching made of the samples' "sample" entries;
        # a list comes back as a list, which the pipeline splits into one output per dialogue
        sample = model_inputs["sample"]
        samples = sample if isinstance(sample, list) else [sample]
        predictions = predict_dialogues(self.model, self.tokenizer, self.collator(length_limits), samples,
                                        with_associations, **(generate_kwargs or {}))
        return {"prediction": predictions if isinstance(sample, list) else predictions[0]}

    def postprocess(self, model_outputs: Dict[str, Any], top_k: Optional[int] = 5, keywords_per_pair: int = 3,
                    words_per_keyword: int = 3) -> Dict[str, Any]:
        prediction = model_outputs["prediction"]
        id2label = {int(i): label for i, label in self.model.config.id2label.items()}
        probs = prediction.emotion_logits.softmax(-1)
        predicted = int(probs.argmax())
        heads = {}
        for head, logits in prediction.head_logits.items():
            head_probs = logits.softmax(-1)
            heads[head] = {"emotion": round(float(head_probs[predicted]), 4), "top": _top(head_probs, id2label, top_k)}
        result = {
            "emotion": id2label[predicted],
            "emotion_scores": _top(probs, id2label, top_k),
            "head_probabilities": heads,
            "response": prediction.response,
            "situation": prediction.situation,
            "truncated": prediction.truncated,
        }
        if prediction.associations is not None:
            result["associated_words"] = compact_associations(prediction.associations, keywords_per_pair,
                                                              words_per_keyword)
        return result
