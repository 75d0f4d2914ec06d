"""Where a trained IAMM's emotion accuracy comes from and how much its association decoder is used.

`emotion_heads_and_gate` runs the model teacher-forced over samples and reports the accuracy and cross-entropy of
each emotion head alone (context, situation, memory, knowledge: whichever the model has) beside the product of
the heads that the model predicts with (Eq. 25), and the decoder gate of Eq. 30 over the real target tokens
(g = sigmoid(logit) is the weight of the context decoder; a logit above about 17 is g = 1 in float32, and then no
gradient reaches the association decoder through the gate; with `gate_floor` f, g = f + (1 - 2f) sigmoid(logit),
and `gate_mean` reports it; `share_tokens_gate_above_0.999` counts the tokens whose sigmoid(logit) is above 0.999). `gate_logit_from_association_decoder` is the part of
the logit that the association decoder's output contributes (its half of the gate weight times its output).
`emotion_log_probs` gives each head's log-probabilities and the product's (the encoder only), for comparisons with
other classifiers (`modeling_iamm.baselines.combined_accuracy`).
"""

from typing import Any, Dict, Sequence

import torch
import torch.nn.functional as F

from .collator import IAMMDataCollator
from .modeling_iamm import IAMM_ENCODER_INPUTS

HEADS = ("context", "situation", "memory", "knowledge")


@torch.no_grad()
def emotion_log_probs(model, collator: IAMMDataCollator, samples: Sequence[Dict[str, Any]],
                      batch_size: int = 64) -> Dict[str, torch.Tensor]:
    """Log-probabilities `(N, n_emotions)` of each emotion head the model has (`"context"`, `"situation"`,
    `"memory"`, `"knowledge"`) and of the product of the heads it predicts with (`"product"`, Eq. 25), and the gold
    ids (`"labels"`, `(N,)`), in the order of `samples`."""
    model.eval()
    device = next(model.parameters()).device
    encoder = model.get_encoder()
    collected: Dict[str, list] = {}
    for start in range(0, len(samples), batch_size):
        batch = collator([samples[i] for i in range(start, min(start + batch_size, len(samples)))])
        out = encoder(**{k: batch[k].to(device) for k in IAMM_ENCODER_INPUTS if k in batch})
        for name, logits in [("product", out.emotion_logits)] + [(h, getattr(out, f"{h}_emotion_logits")) for h in HEADS]:
            if logits is not None:
                collected.setdefault(name, []).append(torch.log_softmax(logits.float(), dim=-1).cpu())
        collected.setdefault("labels", []).append(batch["emotion_labels"])
    return {name: torch.cat(parts) for name, parts in collected.items()}


@torch.no_grad()
def emotion_heads_and_gate(model, collator: IAMMDataCollator, samples: Sequence[Dict[str, Any]],
                           batch_size: int = 64) -> Dict[str, Any]:
    """Per-head emotion accuracy (x100) and cross-entropy, and gate statistics, of `model` on `samples`."""
    model.eval()
    device = next(model.parameters()).device
    logits: Dict[str, list] = {h: [] for h in HEADS}
    labels, product, gate_logits, from_association = [], [], [], []
    captured: Dict[str, torch.Tensor] = {}
    gate = getattr(model, "gate", None)
    hook = gate.register_forward_hook(lambda m, i, o: captured.update(inputs=i[0], logit=o)) if gate is not None else None
    d = model.config.hidden_size
    try:
        for start in range(0, len(samples), batch_size):
            batch = collator([samples[i] for i in range(start, min(start + batch_size, len(samples)))])
            out = model(**{k: v.to(device) for k, v in batch.items() if isinstance(v, torch.Tensor)})
            for head in HEADS:
                value = getattr(out, f"{head}_emotion_logits")
                if value is not None:
                    logits[head].append(value.float().cpu())
            product.append(out.emotion_logits.float().cpu())  # what the model predicts with (Eq. 25)
            labels.append(batch["emotion_labels"])
            if gate is not None:
                real = (batch["labels"] != -100).to(device)
                gate_logits.append(captured["logit"].squeeze(-1)[real].float().cpu())
                from_association.append((captured["inputs"][..., d:] @ gate.weight[0, d:])[real].float().cpu())
    finally:
        if hook is not None:
            hook.remove()
    y = torch.cat(labels)
    heads = {h: torch.cat(v) for h, v in logits.items() if v}

    def accuracy(x: torch.Tensor) -> float:
        return round(100 * (x.argmax(-1) == y).float().mean().item(), 2)

    report: Dict[str, Any] = {"samples": int(y.numel())}
    report.update({f"acc_{h}_head_alone": accuracy(x) for h, x in heads.items()})
    report["acc_product_of_heads"] = accuracy(torch.cat(product))
    report["cross_entropy_per_head"] = {h: round(F.cross_entropy(x, y).item(), 3) for h, x in heads.items()}
    if gate is not None:
        g, m = torch.cat(gate_logits), torch.cat(from_association)
        floor = getattr(model.config, "gate_floor", 0.0)
        report.update({
            "gate_logit_mean": round(g.mean().item(), 2),
            "gate_logit_min": round(g.min().item(), 2),
            "share_tokens_gate_above_0.999": round((torch.sigmoid(g) > 0.999).float().mean().item(), 4),
            "gate_mean": round((floor + (1 - 2 * floor) * torch.sigmoid(g)).mean().item(), 4),
            "gate_logit_from_association_decoder": round(m.mean().item(), 2),
        })
    return report
