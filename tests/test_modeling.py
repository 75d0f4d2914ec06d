"""IAMM model behaviour (tiny-config tester pattern: `tests/helpers/tiny_model.py`)."""

import os
import subprocess
import sys

import pytest
import torch

from modeling_iamm import (IAMMConfig, IAMMDataCollator, IAMMEncoderModel, IAMMForConditionalGeneration, IAMMModel,
                           InformationAssociationModule, RELATIONS,
                           decode_extended)
from modeling_iamm.modeling_iamm import IAMM_ENCODER_INPUTS, IMPLICIT_REF, INVALID_REF, REF_STRIDE
from tests.helpers.tiny_model import IAMMModelTester, generation_inputs

RELS = ["to help", "a vet", "to rest", "cries", "sad"]
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "old_checkpoint")
tester = IAMMModelTester()


def gen_inputs(batch):
    return generation_inputs(batch)


def encoder_kwargs(batch):
    """The batch's encoder inputs (what `model.model(...)` takes)."""
    return {k: v for k, v in batch.items() if k.startswith(("context", "role", "situation"))}


def make(vocab=None, **kwargs):
    """The tiny model (for the tokenizer's vocabulary when `vocab` is given)."""
    if vocab is not None:
        kwargs["vocab_size"] = vocab
    return tester.create_model(**kwargs)


def dead_parameters(model):
    # "dead" includes gradients that are zero analytically but not numerically (rounding noise, ~1e-9 here; the
    # smallest real gradients are ~1e-5): e.g. a bias before a softmax
    return [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().max() > 1e-7]


@pytest.fixture(scope="module")
def batch():
    """Synthetic: dialogues of 1, 3 and 5 utterances, knowledge, copyable context words outside the vocabulary."""
    return tester.prepare_batch(turns=(1, 3, 5, 1, 5), seed=0)


@pytest.fixture(scope="module")
def collator(word_tokenizer):
    return IAMMDataCollator(word_tokenizer)


@pytest.fixture(scope="module")
def samples(sample_samples):
    """Real training samples with (synthetic) knowledge text, for the tests that read words as text."""
    ds = sample_samples["train"].select(range(300))
    return ds.map(lambda r: {"situation_knowledge": RELS,
                             "context_knowledge": [[f"{w} {i}" for w in RELS] for i, _ in enumerate(r["context"])]})


@pytest.fixture(scope="module")
def short_and_long(samples):
    short = [s for s in samples if len(s["context"]) == 1][:2]
    long = [s for s in samples if len(s["context"]) >= 5][:3]
    assert len(short) == 2 and len(long) == 3
    return short, long


def test_forward_outputs_and_joint_loss(batch):
    model = make().eval()
    out = model(**batch)
    B, Ly = batch["labels"].shape
    assert out.logits.shape == (B, Ly, tester.vocab_size + max(len(o) for o in batch["oov_words"]))
    # logits are the log of a distribution over the extended vocabulary
    assert torch.allclose(out.logits.exp().sum(-1), torch.ones(B, Ly), atol=1e-4)
    heads = [out.context_emotion_logits, out.situation_emotion_logits, out.memory_emotion_logits,
             out.knowledge_emotion_logits]
    assert all(h.shape == (B, 32) for h in heads)
    # prediction = argmax of the product of the four heads' probabilities
    assert torch.allclose(out.emotion_logits, sum(torch.log_softmax(h, -1) for h in heads), atol=1e-5)
    ce = sum(torch.nn.functional.cross_entropy(h, batch["emotion_labels"]) for h in heads)
    assert torch.allclose(out.emotion_loss, ce)
    assert torch.allclose(out.loss, out.generation_loss + out.emotion_loss)
    labels = batch["labels"]
    nll = -out.logits.gather(2, labels.clamp(min=0)[..., None]).squeeze(-1)
    assert torch.allclose(out.generation_loss, nll[labels != -100].mean(), atol=1e-5)  # mean over real tokens
    # training mode computes the loss from the target columns alone: same value, no (B, Ly, V) logits
    for copy in (True, False):
        m = make(use_pointer_generator=copy)
        train_out = m.train()(**batch)
        assert train_out.logits is None
        assert torch.allclose(train_out.loss, m.eval()(**batch).loss, atol=1e-5)


@pytest.mark.parametrize("switch", [None, "use_explicit_association", "use_implicit_association",
                                    "use_word_selector", "use_situation", "use_pointer_generator",
                                    "emotion_pooling=tanh", "association_direction=keyword_query", "memory_norm"])
def test_every_parameter_receives_a_gradient(batch, switch):
    if switch is None:
        kwargs = {}
    elif "=" in switch:
        kwargs = dict([switch.split("=")])
    else:
        kwargs = {switch: False}
    model = make(**kwargs, learned_rank_weighting=switch is None or "=" in switch)
    model.train()
    model(**batch).loss.backward()
    assert dead_parameters(model) == []


ABLATION_PARTS = {
    "use_explicit_association": ["model.explicit_association."],
    "use_implicit_association": ["model.knowledge_encoder", "model.knowledge_context_encoder",
                                 "model.knowledge_emotion_head", "model.implicit_association."],
    "use_word_selector": ["model.word_selector", "association_decoder", "gate"],
    "use_situation": ["model.situation_encoder"],
    "use_pointer_generator": ["generator.p_gen"],
}


@pytest.mark.parametrize("switch", list(ABLATION_PARTS))
def test_ablation_removes_exactly_its_part_and_trains(batch, switch):
    full = {n for n, _ in make().named_parameters()}
    model = make(**{switch: False})
    names = {n for n, _ in model.named_parameters()}
    removed = full - names
    assert names <= full
    assert {p for p in ABLATION_PARTS[switch] if any(n.startswith(p) for n in full)} == \
        {p for p in ABLATION_PARTS[switch] if any(n.startswith(p) for n in removed)}
    assert all(any(n.startswith(p) for p in ABLATION_PARTS[switch]) for n in removed)
    if switch == "use_implicit_association":  # it must run without knowledge inputs
        batch = {k: v for k, v in batch.items() if "knowledge" not in k}
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(8):
        loss = model(**batch).loss
        losses.append(loss.item())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert losses[-1] < losses[0] * 0.9


def test_batch_invariance():
    """A sample's emotion logits, loss, associated words and response do not depend on its batch."""
    model = make().eval()
    samples = tester.make_samples(turns=(5, 1, 3, 5), seed=3)
    alone = tester.collate(samples[1:2])
    batched = tester.collate(samples)  # longer dialogues, more padding
    assert batched["context_ids"].shape[1] > alone["context_ids"].shape[1]
    a = model(**alone, output_associations=True)
    b = model(**batched, output_associations=True)
    assert torch.allclose(a.emotion_logits[0], b.emotion_logits[1], atol=1e-5)
    n_tok = (alone["labels"] != -100).sum()
    lab_b = batched["labels"][1]

    def sample_nll(logits, labels):
        mask = labels != -100
        return -logits[mask].gather(1, labels[mask][:, None]).mean()

    assert torch.allclose(sample_nll(a.logits[0], alone["labels"][0]), sample_nll(b.logits[1], lab_b), atol=1e-5)
    assert (lab_b != -100).sum() == n_tok
    T = alone["context_ids"].shape[1]
    for key, value in a.associations.items():
        other = b.associations[key][1:2]
        if value.dim() > 2:  # (B, T, ...) per-turn tensors: the alone run has fewer turns
            other = other[:, :T]
            assert (b.associations[key][1, T:] == (INVALID_REF if "refs" in key else 0)).all(), key
        if "refs" in key:
            assert torch.equal(value, other), key
        else:
            assert torch.allclose(value, other, atol=1e-5), key
    for kwargs in (dict(), dict(num_beams=3)):
        g_alone = model.generate(**gen_inputs(alone), max_new_tokens=12, min_new_tokens=12, **kwargs)
        g_batch = model.generate(**gen_inputs(batched), max_new_tokens=12, min_new_tokens=12, **kwargs)
        assert torch.equal(g_alone[0], g_batch[1]), kwargs


def test_generate_greedy_cached_equals_uncached_and_other_modes(batch):
    model = make().eval()
    inputs = gen_inputs(batch)
    cached = model.generate(**inputs, max_new_tokens=15, use_cache=True)
    uncached = model.generate(**inputs, max_new_tokens=15, use_cache=False)
    assert torch.equal(cached, uncached)
    assert (cached[:, 0] == model.config.bos_token_id).all()
    beams = model.generate(**inputs, max_new_tokens=8, num_beams=3, num_return_sequences=2)
    assert beams.shape[0] == 2 * len(batch["labels"])
    torch.manual_seed(1)
    sampled = model.generate(**inputs, max_new_tokens=8, do_sample=True, top_k=10)
    assert sampled.shape[0] == len(batch["labels"])
    extended = tester.vocab_size + max(len(o) for o in batch["oov_words"])
    assert beams.max() < extended and sampled.max() < extended


def test_copy_head_pooling_scores_is_the_softmax_of_the_heads_mean_scores(batch):
    """`copy_head_pooling="scores"` copies with softmax(mean over heads of Dec_c's last cross-attention scores) (the
    authors' Generator); the default keeps the mean of the heads' distributions. Same weights, so only the copy
    distribution differs; it stays a distribution over the unmasked context tokens, and cached decoding agrees."""
    model = make().eval()
    scored = make(copy_head_pooling="scores").eval()
    scored.load_state_dict(model.state_dict())
    captured = {}
    model.context_decoder.layers[-1].cross_attn.register_forward_hook(
        lambda module, args, output: captured.update(heads=output[1]))
    encoder_inputs = encoder_kwargs(batch)
    with torch.no_grad():
        encoded = model.model(**encoder_inputs)
        copy_default = model.decode(batch["decoder_input_ids"], encoded)[1]  # (B, Ly, Lc)
        copy_scores = scored.decode(batch["decoder_input_ids"], encoded)[1]
        default_logits, scored_logits = model(**batch).logits, scored(**batch).logits
    heads, mask = captured["heads"], encoded.context_mask[:, None, :]  # (B, heads, Ly, Lc), (B, 1, Lc)
    # softmax of the mean scores = the normalised geometric mean of the heads' distributions
    geometric = torch.softmax(heads.clamp(min=1e-30).log().mean(1).masked_fill(~mask, -1e30), dim=-1)
    assert torch.allclose(copy_default, heads.mean(1), atol=1e-6)
    assert torch.allclose(copy_scores, geometric, atol=1e-5)
    assert not torch.allclose(copy_scores, copy_default, atol=1e-3)
    assert torch.allclose(copy_scores.sum(-1), torch.ones(copy_scores.shape[:2]), atol=1e-5)
    assert (copy_scores.masked_select(~mask.expand_as(copy_scores)) == 0).all()
    assert not torch.allclose(scored_logits, default_logits)
    inputs = gen_inputs(batch)
    assert torch.equal(scored.generate(**inputs, max_new_tokens=10, use_cache=True),
                       scored.generate(**inputs, max_new_tokens=10, use_cache=False))
    with pytest.raises(ValueError, match="copy_head_pooling"):
        IAMMConfig(copy_head_pooling="max")


def test_word_selector_input_raw_hands_the_slots_before_the_memory_encoder_to_the_association_decoder(batch):
    """`word_selector_input="raw"` (the authors' code) selects from and decodes with the memory slots before Enc_m;
    the paper's default reads Enc_m's output. Changing Enc_m's weights moves only the latter's selected memory; the
    memory emotion head reads Enc_m in both."""
    encoder_inputs = encoder_kwargs(batch)
    for source, moves in (("encoded", True), ("raw", False)):
        model = make(word_selector_input=source).eval()
        with torch.no_grad():
            before = model.model(**encoder_inputs)
            for p in model.model.memory_encoder.parameters():
                p.add_(0.5)
            after = model.model(**encoder_inputs)
        assert torch.equal(before.memory_mask, after.memory_mask)
        assert (not torch.allclose(before.memory_hidden_state, after.memory_hidden_state)) == moves, source
        assert not torch.allclose(before.memory_emotion_logits, after.memory_emotion_logits)
    with pytest.raises(ValueError, match="word_selector_input"):
        IAMMConfig(word_selector_input="both")


def test_causal_convolution_decodes_step_by_step_from_its_last_two_inputs():
    from transformers.cache_utils import DynamicCache

    from modeling_iamm.modeling_iamm import IAMMFeedForward

    torch.manual_seed(0)
    config = tester.get_config()
    ffn = IAMMFeedForward(config, causal=True).eval()
    x = torch.randn(2, 7, config.hidden_size)
    cache = DynamicCache()
    with torch.no_grad():
        whole = ffn(x)
        steps = [ffn(x[:, :3], cache=cache, layer_idx=0)]  # a first call with several positions, then one at a time
        steps += [ffn(x[:, t:t + 1], cache=cache, layer_idx=0) for t in range(3, 7)]
    assert torch.allclose(torch.cat(steps, 1), whole, atol=1e-6)
    # the cache holds the two inputs before the next step of each convolution, however long the response grows
    assert [tuple(cache.layers[i].keys.shape) for i in (0, 1)] == [(2, 1, 2, config.hidden_size),
                                                                   (2, 1, 2, config.intermediate_size)]


def test_pointer_generator_copies_words_outside_the_vocabulary(word_tokenizer):
    collator = IAMMDataCollator(word_tokenizer)
    sample = {"conv_id": "c", "emotion_id": 0, "situation": "i saw a zorblax", "context": ["zorblax zorblax zorblax"],
              "context_roles": ["speaker"], "target": "a zorblax", "situation_knowledge": RELS,
              "context_knowledge": [RELS]}
    batch = collator([sample])
    assert batch["oov_words"] == [["zorblax"]]
    model = make(len(word_tokenizer)).eval()
    V = len(word_tokenizer)
    out = model(**batch)
    assert out.logits.shape[-1] == V + 1 and out.logits[0, :, V].exp().min() > 1e-3  # the OOV word is copyable
    with torch.no_grad():
        model.generator.p_gen.bias.fill_(-30.0)  # always copy
    generated = model.generate(**gen_inputs(batch), max_new_tokens=3)
    assert generated[0, 1] == V
    assert decode_extended(generated[0, 1:], word_tokenizer, batch["oov_words"][0]).startswith("zorblax")
    # without the pointer-generator, words outside the vocabulary have (practically) no probability
    no_copy = make(len(word_tokenizer), use_pointer_generator=False).eval()
    assert no_copy(**batch).logits[0, :, V].exp().max() < 1e-20


def test_extract_associations_as_text(word_tokenizer, collator, short_and_long):
    model = make(len(word_tokenizer))
    short, long = short_and_long
    batch = collator([short[0], long[0]])
    results = model.extract_associations(batch, word_tokenizer)
    assert len(results) == 2
    one, many = results
    assert {"utterance-situation", "utterance-history", "utterance-memory", "implicit-utterance-situation",
            "selected_memory_words"} <= set(many)
    assert one["utterance-history"] == [] and one["utterance-memory"] == []  # a single utterance has no history
    situation_words = set(word_tokenizer.convert_ids_to_tokens(batch["situation_ids"][1].tolist()))
    context_words = set(word_tokenizer.convert_ids_to_tokens(batch["context_ids"][1].flatten().tolist()))
    for entry in many["utterance-situation"]:
        assert 0 <= entry["keyword_weight"] <= 1
        side = context_words if entry["keyword_side"] == "utterance" else situation_words
        assert entry["keyword"] in side
        assert entry["associated"] and all(w in (situation_words if entry["keyword_side"] == "utterance" else context_words)
                                           for w, _ in entry["associated"])
    turns = {e["turn"] for e in many["utterance-memory"]}
    assert turns == set(range(1, len(long[0]["context"])))
    relations = {e["keyword"].split("(")[0] for e in many["implicit-utterance-situation"]}
    assert relations <= set(RELATIONS)
    assert 0 < len(many["selected_memory_words"]) <= 3


def test_missing_knowledge_is_a_clear_error(batch):
    batch = {k: v for k, v in batch.items() if "knowledge" not in k}
    with pytest.raises(ValueError, match="generate_knowledge.py, or set use_implicit_association=False"):
        make()(**batch)


def test_save_and_load_with_remote_code_in_a_fresh_process(tmp_path, word_tokenizer, collator, short_and_long):
    model = make(len(word_tokenizer), ffn_type="conv").eval()
    batch = collator(short_and_long[0] + short_and_long[1][:1])
    batch.pop("oov_words")
    folder = tmp_path / "iamm"
    model.save_pretrained(folder, tokenizer=word_tokenizer)
    files = set(os.listdir(folder))
    assert {"model.safetensors", "config.json", "configuration_iamm.py", "modeling_iamm.py", "tokenizer.json"} <= files
    torch.save(batch, tmp_path / "batch.pt")
    helper = os.path.join(os.path.dirname(__file__), "helpers", "load_without_package.py")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf_home"), PYTHONPATH="")
    proc = subprocess.run([sys.executable, helper, str(folder), str(tmp_path / "batch.pt"), str(tmp_path / "out.pt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        out = model(**batch)
    expected = model.generate(**gen_inputs(batch), max_new_tokens=12)
    for name in ("auto_model", "auto_seq2seq"):
        assert results[name]["class"] == "IAMMForConditionalGeneration"
        assert torch.allclose(results[name]["logits"], out.logits, atol=1e-5)
        assert torch.allclose(results[name]["emotion_logits"], out.emotion_logits, atol=1e-5)
        assert torch.equal(results[name]["generated"], expected)
    assert results["tokenizer_vocab_size"] == len(word_tokenizer)


def test_auto_classes_in_the_library(tmp_path):
    from transformers import AutoConfig, AutoModel, AutoModelForSeq2SeqLM

    model = make(use_implicit_association=False)
    model.save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), IAMMConfig)
    for auto in (AutoModel, AutoModelForSeq2SeqLM):
        loaded = auto.from_pretrained(tmp_path)
        assert type(loaded) is IAMMForConditionalGeneration
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))
    weights = model.state_dict()
    seq2seq = IAMMModel.from_pretrained(tmp_path)  # encoder-decoder without the pointer-generator head
    assert set(seq2seq.state_dict()) == {k for k in weights if not k.startswith("generator.")}
    assert all(torch.equal(v, weights[k]) for k, v in seq2seq.state_dict().items())
    encoder = IAMMEncoderModel.from_pretrained(tmp_path)  # the encoder side alone
    assert set(encoder.state_dict()) == {k[len("model."):] for k in weights if k.startswith("model.")}
    assert all(torch.equal(v, weights["model." + k]) for k, v in encoder.state_dict().items())


def test_without_any_association_there_is_no_memory_branch(batch):
    """Both associations off (the w/o-EA ablation when no knowledge exists): no memory parts, every remaining
    parameter is trained, and the model still predicts an emotion and generates."""
    with pytest.raises(ValueError, match="set use_word_selector=False as well"):
        tester.get_config(use_explicit_association=False, use_implicit_association=False)
    model = make(use_explicit_association=False, use_implicit_association=False, use_word_selector=False)
    names = {n for n, _ in model.named_parameters()}
    assert not any(n.startswith(("model.memory_encoder", "model.memory_emotion_head", "model.explicit_",
                                 "model.implicit_", "model.knowledge_")) for n in names)
    batch = {k: v for k, v in batch.items() if "knowledge" not in k}
    model.train()
    out = model(**batch)
    assert out.memory_emotion_logits is None and out.situation_emotion_logits is not None
    out.loss.backward()
    assert dead_parameters(model) == []
    model.eval()
    generated = model.generate(**batch, max_new_tokens=4)  # generate() drops the training-only keys itself
    assert generated.shape[0] == batch["context_ids"].shape[0]


def ref_tokens(refs, batch):
    """The token ids that association refs `(B, ...)` name (implicit, null and invalid refs unchanged)."""
    B = refs.shape[0]
    flat = refs.reshape(B, -1)
    words = flat >= 0
    situation = words & (flat < REF_STRIDE)
    context = words & (flat >= REF_STRIDE) & (flat < IMPLICIT_REF)
    turn, position = flat // REF_STRIDE - 1, flat % REF_STRIDE
    rows = torch.arange(B)[:, None].expand_as(flat)
    tokens = flat.clone()
    tokens[situation] = batch["situation_ids"][rows[situation], flat[situation]]
    tokens[context] = batch["context_ids_extended"][rows[context], turn[context], position[context]]
    return tokens.view(refs.shape)


@pytest.mark.parametrize("variant", ["full", "explicit_linear"])
def test_old_checkpoint_loads_with_identical_outputs(variant):
    """Checkpoints saved by an earlier version of the model code (tests/fixtures/make_old_checkpoint.py) load and
    compute what they computed then: logits, losses, emotion logits, associations, greedy responses."""
    folder = os.path.join(FIXTURES, variant)
    expected = torch.load(os.path.join(folder, "expected.pt"))
    model = IAMMForConditionalGeneration.from_pretrained(folder).eval()
    batch = expected["batch"]
    with torch.no_grad():
        out = model(**batch, output_associations=True)
    assert torch.allclose(out.logits, expected["logits"], atol=1e-5)
    assert torch.allclose(out.loss, expected["loss"], atol=1e-5)
    assert torch.allclose(out.token_log_probs, expected["token_log_probs"], atol=1e-5)
    assert torch.allclose(out.emotion_logits, expected["emotion_logits"], atol=1e-5)
    for head, logits in expected["head_logits"].items():
        got = getattr(out, f"{head}_emotion_logits")
        assert (got is None) == (logits is None), head
        assert logits is None or torch.allclose(got, logits, atol=1e-5), head
    assert set(out.associations) == set(expected["associations"])
    for key, value in expected["associations"].items():
        if "refs" in key:  # the same words: a word repeated in a sentence may come from its other position
            assert torch.equal(ref_tokens(out.associations[key], batch), ref_tokens(value, batch)), key
        else:
            assert torch.allclose(out.associations[key], value, atol=1e-5), key
    model.train()
    with torch.no_grad():
        assert torch.allclose(model(**batch).loss, expected["train_loss"], atol=1e-5)
    model.eval()
    greedy = model.generate(**gen_inputs(batch), max_new_tokens=8, min_new_tokens=8)
    assert torch.equal(greedy, expected["greedy"])


def amplify_memory(model, factor=8.0):
    """Scale the memory pair's value and slot projections: each turn's memory slots are then built from values
    `factor**2` times larger than the last turn's (what a trained model was seen to do, ~10x a turn)."""
    with torch.no_grad():
        for side in (model.model.explicit_association, model.model.implicit_association):
            side.memory_association.value.weight.mul_(factor)
            side.memory_association.slot_proj.weight.mul_(factor)
    return model


def memory_pair_norms(model, batch):
    """Mean norm of sample 0's utterance-memory slots, per turn (turns 1..T-1), and the model's output."""
    captured = {}
    handle = model.model.explicit_association.register_forward_hook(lambda m, i, out: captured.update(out=out))
    with torch.no_grad():
        out = model(**batch)
    handle.remove()
    memory, config = captured["out"].memory[0], model.config
    S = 2 * config.association_heads * config.num_keywords
    per_turn = 3 * S  # situation, history and memory pairs
    T = batch["context_ids"].shape[1]
    norms = [memory[1 + t * per_turn + 2 * S: 1 + (t + 1) * per_turn].norm(dim=-1).mean().item() for t in range(1, T)]
    return norms, out


def test_memory_norm_keeps_the_memory_bounded_on_long_dialogues():
    """Memory slots are built from memory slots: on a model whose memory pair amplifies, they grow geometrically
    over the turns and overflow float32 on a 41-turn dialogue, unless the memory is normalised (memory_norm)."""
    batch = tester.prepare_batch(turns=(41, 3), seed=5)
    growing, out = memory_pair_norms(amplify_memory(make(memory_norm=False).eval()), batch)
    ratios = [b / a for a, b in zip(growing[:6], growing[1:7])]
    assert sorted(ratios)[len(ratios) // 2] > 5, growing[:7]
    assert not torch.isfinite(out.emotion_logits[0]).all()  # what evaluation on long dialogues ran into
    bounded, out = memory_pair_norms(amplify_memory(make(memory_norm=True).eval()), batch)
    assert max(bounded) < 3 * bounded[0], bounded
    assert torch.isfinite(out.emotion_logits).all() and torch.isfinite(out.loss)


def test_trained_model_on_a_40_turn_dialogue_gives_finite_outputs_and_a_response():
    """Trained on short dialogues, the model (memory_norm on, as every new config) still predicts, scores and
    answers a 41-turn dialogue."""
    model = amplify_memory(make())
    assert model.config.memory_norm
    train = tester.prepare_batch(turns=(3, 1, 5, 3), seed=6)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(25):
        model(**train).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    long = tester.prepare_batch(turns=(41, 39), seed=7)
    with torch.no_grad():
        out = model(**long)
    assert torch.isfinite(out.emotion_logits).all()
    assert torch.isfinite(out.token_log_probs).all() and torch.isfinite(out.generation_loss)
    generated = model.generate(**gen_inputs(long), max_new_tokens=10)
    assert (generated[:, 1] != model.config.eos_token_id).all()  # a response of at least one word


def test_memory_norm_is_on_for_new_configs_and_off_for_configs_saved_without_it(tmp_path):
    assert IAMMConfig().memory_norm
    tester.get_config().save_pretrained(tmp_path)
    assert IAMMConfig.from_pretrained(tmp_path).memory_norm  # saved with the key: kept
    old = IAMMConfig.from_pretrained(os.path.join(FIXTURES, "full"))  # written before the switch existed
    assert old.memory_norm is False
    assert IAMMConfig.from_pretrained(tmp_path, memory_norm=False).memory_norm is False


INDUCTOR = pytest.param("inductor", marks=pytest.mark.skipif(
    os.environ.get("IAMM_TEST_INDUCTOR") != "1",
    reason="inductor's first C++ compile takes 4+ minutes on 2 CPU cores; IAMM_TEST_INDUCTOR=1 runs it "
           "(aot_eager checks the same graph capture and autograd)"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["aot_eager", INDUCTOR])  # ~25 s and (cold cache) ~4 min on 2 CPU cores
def test_compiled_train_step_matches_eager(backend):
    """torch.compile(model) (what Trainer's `torch_compile` does) computes the eager loss, emotion logits and
    gradients."""
    batch = {k: v for k, v in tester.prepare_batch(turns=(1, 3, 5), seed=0).items() if k != "oov_words"}
    eager, compiled = make().train(), make().train()
    expected = eager(**batch)
    expected.loss.backward()
    torch._dynamo.reset()
    out = torch.compile(compiled, backend=backend)(**batch)
    out.loss.backward()
    assert torch.allclose(out.loss, expected.loss, atol=1e-5)
    assert torch.allclose(out.emotion_logits, expected.emotion_logits, atol=1e-4)
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-5, rtol=1e-4), name


@pytest.mark.parametrize("knowledge", [True, False])
def test_capture_path_matches_the_default_path(monkeypatch, knowledge):
    """Under torch.compile the forward keeps the input widths and encodes every turn (no host sync): on a batch
    with padded turns it computes the default path's loss, emotion logits and gradients."""
    import modeling_iamm.modeling_iamm as modeling

    batch = {k: v for k, v in tester.prepare_batch(turns=(1, 3, 5), seed=3, knowledge=knowledge).items()
             if k != "oov_words"}
    results = []
    for capture in (False, True):
        monkeypatch.setattr(modeling, "capturing", lambda: capture)
        model = make(use_implicit_association=knowledge).train()
        with torch.no_grad():
            width = model.get_encoder()(**{k: batch[k] for k in IAMM_ENCODER_INPUTS if k in batch}).context_mask.shape[1]
        out = model(**batch)
        out.loss.backward()
        results.append((out, {n: p.grad for n, p in model.named_parameters()}, width))
    (expected, expected_grads, trimmed), (out, grads, full) = results
    assert full == batch["context_ids"].shape[1] * batch["context_ids"].shape[2] > trimmed  # widths from the input
    assert torch.allclose(out.loss, expected.loss, atol=1e-6)
    assert torch.allclose(out.emotion_logits, expected.emotion_logits, atol=1e-5)
    for name, grad in expected_grads.items():
        assert torch.allclose(grads[name], grad, atol=1e-6, rtol=1e-4), name


@pytest.mark.parametrize("knowledge", [True, False])
def test_train_step_is_one_graph_under_compile(knowledge):
    """No graph break: torch.compile captures the whole forward (what CUDA graphs need)."""
    torch._dynamo.reset()
    batch = {k: v for k, v in tester.prepare_batch(turns=(1, 3, 5), seed=0, knowledge=knowledge).items()
             if k != "oov_words"}
    explanation = torch._dynamo.explain(make(use_implicit_association=knowledge).train())(**batch)
    assert (explanation.graph_count, explanation.graph_break_count) == (1, 0), explanation.break_reasons


@pytest.mark.slow
def test_compiled_generate_matches_eager_without_graph_breaks():
    """`model.compile(dynamic=True)` (what evaluate.py --torch_compile does): generate() runs the compiled
    encoder and decoding steps, without a graph break, and greedy decoding gives the eager tokens."""
    from torch._dynamo.utils import counters

    batches = [tester.prepare_batch(turns=(1, 3, 5), seed=seed) for seed in (2, 3, 4)]
    assert len({tuple(map(len, b["oov_words"])) for b in batches}) == 3  # other OOV words in every batch
    model = make().eval()
    with torch.no_grad():
        expected = [model.generate(**b, max_new_tokens=6, min_new_tokens=6) for b in batches]
        torch._dynamo.reset()
        counters.clear()
        model.compile(dynamic=True, backend="aot_eager")
        out = [model.generate(**batches[0], max_new_tokens=6, min_new_tokens=6)]
        graphs = counters["stats"]["unique_graphs"]
        out += [model.generate(**b, max_new_tokens=6, min_new_tokens=6) for b in batches[1:]]
    assert all(torch.equal(a, b) for a, b in zip(out, expected))
    assert graphs >= 2 and not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] <= graphs + 1  # new batches reuse the graphs (one recompile at most)


def test_association_direction_changes_which_words_a_keyword_associates():
    """Y has one word (the keyword of direction 0). With queries = identity and keys = M, `utterance_query` ranks
    the utterance words x by x . M y (x1 first), `keyword_query` by y . M x (x2 first)."""
    results = {}
    for direction in ("utterance_query", "keyword_query"):
        config = IAMMConfig(vocab_size=10, hidden_size=2, association_heads=1, association_head_dim=2, num_keywords=1,
                            num_associated_words=2, association_direction=direction)
        module = InformationAssociationModule(config, num_keywords=1, num_associated_words=2)
        with torch.no_grad():
            module.query.weight.copy_(torch.eye(2))
            module.key.weight.copy_(torch.tensor([[0.0, 1.0], [0.0, 0.0]]))
        x, y = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]), torch.tensor([[[1.0, 1.0]]])
        out = module(utterance=x, utterance_mask=torch.ones(1, 2, dtype=torch.bool), utterance_refs=torch.tensor([[10, 11]]),
                     other=y, other_mask=torch.ones(1, 1, dtype=torch.bool), other_refs=torch.tensor([[20]]))
        assert out.keyword_refs[0, 0, 0, 0] == 20
        results[direction] = out.associated_refs[0, 0, 0, 0].tolist()  # direction 0, head 0, keyword 0
    assert results == {"utterance_query": [10, 11], "keyword_query": [11, 10]}


def test_emotion_pooling_switch():
    linear, tanh = make(), make(emotion_pooling="tanh")
    assert linear.model.context_emotion_head.pooling_proj is None
    assert isinstance(tanh.model.context_emotion_head.pooling_proj, torch.nn.Linear)
    with pytest.raises(ValueError, match="emotion_pooling"):
        tester.get_config(emotion_pooling="mean")
    with pytest.raises(ValueError, match="association_direction"):
        tester.get_config(association_direction="both")


def test_return_dict_and_unsupported_outputs(batch):
    model = make().eval()
    inputs = {k: v for k, v in batch.items() if k in IAMM_ENCODER_INPUTS}
    with torch.no_grad():
        as_tuple = model.get_encoder()(**inputs, return_dict=False)
        named = model.get_encoder()(**inputs)
        assert isinstance(as_tuple, tuple) and torch.equal(as_tuple[0], named.last_hidden_state)
        assert isinstance(model(**batch, return_dict=False), tuple)
        with pytest.raises(ValueError, match="does not return attention weights"):
            model.get_encoder()(**inputs, output_attentions=True)
        # oov_words sizes the extended vocabulary without reading the ids back: the same logits
        with_oov = model(**batch).logits
        without = model(**{k: v for k, v in batch.items() if k != "oov_words"}).logits
        assert torch.equal(with_oov, without)


def test_generate_sizes_the_copy_vocabulary_from_oov_words():
    """generate() turns the batch's `oov_words` into the extended vocabulary's size, passed to each decoding step,
    instead of reading the ids back from the device."""
    tester = IAMMModelTester()
    model, batch = tester.create_model().eval(), tester.prepare_batch()
    seen = []
    model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs.get("extended_vocab_size")),
                                    with_kwargs=True)
    out = model.generate(**batch, max_new_tokens=3, num_beams=2, output_scores=True, return_dict_in_generate=True)
    expected = tester.vocab_size + max(len(words) for words in batch["oov_words"])
    assert len(seen) == 3 and set(seen) == {expected} and out.scores[0].shape[-1] == expected


def test_dropout_is_off_by_default_and_adds_no_parameters(batch):
    plain, regularised = make(), make(dropout=0.2, classifier_dropout=0.3)
    assert not any(isinstance(m, torch.nn.Dropout) for m in plain.modules())  # p = 0: no dropout operator at all
    assert sum(isinstance(m, torch.nn.Dropout) for m in regularised.modules()) > 0
    assert set(plain.state_dict()) == set(regularised.state_dict())  # checkpoints load either way
    regularised.load_state_dict(plain.state_dict())
    with torch.no_grad():  # dropout acts in training only
        assert torch.equal(plain.eval()(**batch).loss, regularised.eval()(**batch).loss)
    with pytest.raises(ValueError, match="classifier_dropout"):
        tester.get_config(classifier_dropout=1.0)
    with pytest.raises(ValueError, match="dropout"):
        tester.get_config(dropout=-0.1)


def losses_under_seeds(model, batch, seeds=(0, 1)):
    model.train()
    out = []
    for seed in seeds:
        torch.manual_seed(seed)
        with torch.no_grad():
            o = model(**batch)
        out.append((o.generation_loss, o.emotion_loss))
    return out


def test_classifier_dropout_acts_on_the_emotion_heads_only(batch):
    (gen0, emo0), (gen1, emo1) = losses_under_seeds(make(classifier_dropout=0.5), batch)
    assert torch.equal(gen0, gen1) and not torch.equal(emo0, emo1)


def test_dropout_acts_on_the_encoders_and_decoders(batch):
    (gen0, emo0), (gen1, emo1) = losses_under_seeds(make(dropout=0.3), batch)
    assert not torch.equal(gen0, gen1) and not torch.equal(emo0, emo1)
    (gen0, _), (gen1, _) = losses_under_seeds(make(), batch)
    assert torch.equal(gen0, gen1)  # without dropout, training mode is deterministic


def test_emotion_heads_and_gate_report(collator, samples):
    from modeling_iamm.diagnostics import emotion_heads_and_gate

    samples = [samples[i] for i in range(8)]
    model = make(vocab=len(collator.tokenizer)).eval()
    report = emotion_heads_and_gate(model, collator, samples, batch_size=3)
    batch = collator(samples)
    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if isinstance(v, torch.Tensor)})
    heads = {h: getattr(out, f"{h}_emotion_logits") for h in ("context", "situation", "memory", "knowledge")}
    assert set(report["cross_entropy_per_head"]) == {h for h, v in heads.items() if v is not None} and len(heads) == 4
    expected = (out.emotion_logits.argmax(-1) == batch["emotion_labels"]).float().mean().item()
    assert report["samples"] == len(samples) and report["acc_product_of_heads"] == round(100 * expected, 2)
    with torch.no_grad():  # with the context half of the gate and its bias at zero, all of the logit is Dec_a's part
        model.gate.weight[0, : model.config.hidden_size] = 0
        model.gate.bias.fill_(0)
    zeroed = emotion_heads_and_gate(model, collator, samples, batch_size=3)
    assert zeroed["gate_logit_mean"] == pytest.approx(zeroed["gate_logit_from_association_decoder"], abs=0.011)
    assert report["gate_logit_mean"] != zeroed["gate_logit_mean"]


@pytest.mark.parametrize("weight", [0.0, 0.5])
def test_emotion_loss_weight_scales_the_emotion_loss_in_the_total(batch, weight):
    with torch.no_grad():
        out = make(emotion_loss_weight=weight).eval()(**batch)
    assert out.emotion_loss > 0
    assert out.loss.item() == pytest.approx(out.generation_loss.item() + weight * out.emotion_loss.item(), rel=1e-6)


def test_emotion_label_smoothing_mixes_a_uniform_target_into_every_heads_cross_entropy(batch):
    with torch.no_grad():
        out = make(emotion_label_smoothing=0.2).eval()(**batch)
    heads = [out.context_emotion_logits, out.situation_emotion_logits, out.memory_emotion_logits,
             out.knowledge_emotion_logits]
    expected = 0.0
    for logits in (h for h in heads if h is not None):  # (1 - eps) x NLL of the label + eps x mean NLL of all emotions
        log_probs = torch.log_softmax(logits, -1)
        nll = -log_probs.gather(1, batch["emotion_labels"][:, None]).squeeze(1)
        expected = expected + (0.8 * nll - 0.2 * log_probs.mean(-1)).mean()
    assert out.emotion_loss.item() == pytest.approx(expected.item(), rel=1e-5)
    with torch.no_grad():  # and it is a real change: the same weights without smoothing give another loss
        plain = make(emotion_label_smoothing=0.0).eval()(**batch)
    assert plain.emotion_loss.item() != pytest.approx(out.emotion_loss.item(), rel=1e-3)
    with pytest.raises(ValueError, match="emotion_label_smoothing"):
        IAMMConfig(emotion_label_smoothing=1.0)


def test_gate_floor_keeps_the_association_decoder_in_the_output_and_trained(batch):
    """With the gate saturated (g = 1 in float32), the paper's gate (floor 0) passes no gradient to Dec_a; a floor
    keeps Dec_a's share at `floor` and trains it."""
    grads = {}
    for floor in (0.0, 0.2):
        model = make(gate_floor=floor).train()
        with torch.no_grad():
            model.gate.bias.fill_(100.0)
        model(**batch).loss.backward()
        grads[floor] = max(p.grad.abs().max().item() for p in model.association_decoder.parameters())
    assert grads[0.0] == 0.0 and grads[0.2] > 1e-6
    with pytest.raises(ValueError, match="gate_floor"):
        IAMMConfig(gate_floor=0.5)


def test_gate_report_gives_the_floored_gate(collator, samples):
    from modeling_iamm.diagnostics import emotion_heads_and_gate

    model = make(vocab=len(collator.tokenizer), gate_floor=0.2).eval()
    with torch.no_grad():
        model.gate.bias.fill_(100.0)  # saturated: sigmoid = 1, so g = 1 - floor
    report = emotion_heads_and_gate(model, collator, [samples[i] for i in range(4)], batch_size=2)
    assert report["share_tokens_gate_above_0.999"] == 1.0 and report["gate_mean"] == pytest.approx(0.8, abs=1e-4)
