import pytest
import torch

from modeling_iamm import IAMMDataCollator, decode_extended, encode_samples
from modeling_iamm.collator import IGNORE_INDEX


def _sample(context, target, roles=None, situation="my dog was sick", emotion_id=5):
    roles = roles or ["speaker" if (len(context) - 1 - i) % 2 == 0 else "listener" for i in range(len(context))]
    return {"conv_id": "c", "emotion_id": emotion_id, "situation": situation, "context": context,
            "context_roles": roles, "target": target}


@pytest.fixture
def collator(word_tokenizer):
    return IAMMDataCollator(word_tokenizer)


def test_shapes_masks_and_roles(collator, word_tokenizer):
    batch = collator([
        _sample(["i feel so sad today"], "why is that ?"),
        _sample(["my dog died", "oh no", "yes , last week"], "i am so sorry"),
    ])
    B, T, L = batch["context_ids"].shape
    assert (B, T, L) == (2, 3, 1 + 5)  # [CLS] + "i feel so sad today"
    assert batch["context_mask"].dtype == torch.bool
    # padding is distinguishable everywhere: padded turns and padded tokens are masked and [PAD]
    assert batch["context_mask"][0, 1:].sum() == 0 and (batch["context_ids"][0, 1:] == 0).all()
    assert batch["context_mask"][0, 0].sum() == 1 + 5 and batch["context_mask"][1, 1].sum() == 1 + 2
    assert (batch["context_ids"][:, :, 0][batch["context_mask"][:, :, 0]] == word_tokenizer.cls_token_id).all()
    spk, lsn = word_tokenizer.convert_tokens_to_ids(["[SPK]", "[LSN]"])
    assert batch["role_ids"].tolist() == [[spk, 0, 0], [spk, lsn, spk]]
    assert batch["situation_ids"][:, 0].tolist() == [word_tokenizer.cls_token_id] * 2
    assert batch["decoder_input_ids"][:, 0].tolist() == [word_tokenizer.bos_token_id] * 2
    # labels: target + [EOS], -100 after; decoder inputs: [SOS] + target
    assert batch["labels"][0].tolist()[:5] == word_tokenizer("why is that ?").input_ids + [word_tokenizer.eos_token_id]
    assert batch["labels"][0, 5:].eq(IGNORE_INDEX).all()
    assert batch["decoder_attention_mask"].sum(1).tolist() == [5, 5]
    assert batch["emotion_labels"].tolist() == [5, 5]
    assert "situation_knowledge_ids" not in batch


def test_oov_words_get_extended_ids_and_can_be_copied(collator, word_tokenizer):
    V = len(word_tokenizer)
    batch = collator([_sample(["my zorblax ate the qwertyuiop", "a zorblax ?"], "the zorblax is fine , not the flimflam")])
    assert batch["oov_words"] == [["zorblax", "qwertyuiop"]]
    ids, ext = batch["context_ids"][0, 0], batch["context_ids_extended"][0, 0]
    assert ids[2] == word_tokenizer.unk_token_id and ext[2] == V and ext[5] == V + 1
    assert batch["context_ids_extended"][0, 1, 2] == V  # the same word keeps its id across utterances
    labels = batch["labels"][0]
    assert labels[1] == V  # a context OOV word in the target is a copy target
    assert labels[7] == word_tokenizer.unk_token_id  # "flimflam": not in the context, cannot be copied
    assert batch["decoder_input_ids"][0, 2] == word_tokenizer.unk_token_id  # decoder inputs stay in the vocabulary
    assert decode_extended(labels[labels != IGNORE_INDEX], word_tokenizer, batch["oov_words"][0]) == \
        "the zorblax is fine , not the [UNK]"


def test_pre_encoded_samples_give_the_same_batch(collator, sample_samples):
    rows = sample_samples["valid"].select(range(8))
    a = collator(list(rows))
    b = collator(list(encode_samples(rows)))
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] == b[k]).all() if torch.is_tensor(a[k]) else a[k] == b[k], k


def test_knowledge_tensors(collator):
    rels = ["to help", "a vet", "to rest", "cries", "sad"]
    f1 = dict(_sample(["my dog died"], "sorry"), situation_knowledge=rels, context_knowledge=[rels])
    f2 = dict(_sample(["a", "b", "my cat"], "oh"), situation_knowledge=rels, context_knowledge=[rels, rels, ["x"] * 5])
    batch = collator([f1, f2])
    assert batch["situation_knowledge_ids"].shape == (2, 5, 1 + 2)
    assert batch["context_knowledge_ids"].shape == (2, 3, 5, 3)
    assert batch["context_knowledge_mask"][0, 1:].sum() == 0  # padded turns have no knowledge
    assert batch["context_knowledge_mask"][1, 2].sum(-1).tolist() == [2] * 5
    with pytest.raises(ValueError, match="some samples of the batch have knowledge"):
        collator([f1, _sample(["x"], "y")])
    with pytest.raises(ValueError, match="knowledge must have 5 relations"):
        collator([dict(f1, situation_knowledge=rels[:4])])


def test_truncation_options(word_tokenizer):
    c = IAMMDataCollator(word_tokenizer, max_context_turns=2, max_utterance_length=2, max_target_length=3)
    batch = c([_sample(["one two three", "four five", "six seven eight"], "a b c d e")])
    assert batch["context_ids"].shape == (1, 2, 3)
    assert batch["role_ids"][0].tolist() == word_tokenizer.convert_tokens_to_ids(["[LSN]", "[SPK]"])
    assert (batch["labels"][0] != IGNORE_INDEX).sum() == 4


def test_pad_to_multiple_of_buckets_the_shapes_and_leaves_the_model_outputs_alone(word_tokenizer):
    from modeling_iamm import IAMMConfig, IAMMForConditionalGeneration

    rels = ["to help", "a vet", "to rest", "cries", "sad"]
    features = [dict(_sample(["my dog died"], "sorry"), situation_knowledge=rels, context_knowledge=[rels]),
                dict(_sample(["a", "b", "my cat ran away"], "oh no , that is sad"), situation_knowledge=rels,
                     context_knowledge=[rels] * 3)]
    plain = IAMMDataCollator(word_tokenizer, return_oov_words=False)(features)
    bucketed = IAMMDataCollator(word_tokenizer, return_oov_words=False, pad_to_multiple_of=8)(features)
    assert bucketed["context_ids"].shape == (2, 3, 8) and plain["context_ids"].shape == (2, 3, 5)
    assert bucketed["situation_ids"].shape[1] == 8 and bucketed["context_knowledge_ids"].shape[-1] == 8
    assert bucketed["labels"].shape == bucketed["decoder_input_ids"].shape == (2, 8)
    for key, value in plain.items():  # the same content, more padding
        cut = bucketed[key][tuple(slice(0, n) for n in value.shape)]
        assert torch.equal(cut, value), key
    torch.manual_seed(0)
    model = IAMMForConditionalGeneration(IAMMConfig(vocab_size=len(word_tokenizer), hidden_size=32, attention_head_dim=8,
                                                    intermediate_size=16, association_head_dim=8)).eval()
    with torch.no_grad():
        a, b = model(**plain), model(**bucketed)
    assert torch.allclose(a.loss, b.loss, atol=1e-5) and torch.allclose(a.emotion_logits, b.emotion_logits, atol=1e-5)
    with pytest.raises(ValueError, match="pad_to_multiple_of must be >= 1"):
        IAMMDataCollator(word_tokenizer, pad_to_multiple_of=0)


def test_a_context_ending_with_a_listener_turn_is_refused_naming_the_sample(collator):
    collator([_sample(["my dog died", "oh no", "yes , last week"], "i am sorry")])
    with pytest.raises(ValueError, match=r"sample c: the context ends with a 'listener' turn; .* must be 'speaker'"):
        collator([_sample(["my dog died", "oh no"], "i am sorry", roles=["speaker", "listener"])])
