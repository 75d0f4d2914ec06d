"""Trainer integration: IAMM trains with Seq2SeqTrainer and the collator; predict_with_generate works."""

import math

import pytest
import torch

from modeling_iamm import IAMMConfig, IAMMDataCollator, encode_samples
from modeling_iamm.inference import predict
from modeling_iamm.training import IAMMTrainer, IAMMTrainingArguments, noam_lambda
from tests.helpers.tiny_model import IAMMModelTester


def test_noam_schedule_matches_the_authors_formula():
    f = noam_lambda(300, 8000)
    assert math.isclose(f(7999), 300**-0.5 * 8000**-0.5)  # the peak, ~6.45e-4, at step 8000
    assert math.isclose(f(7999), 6.455e-4, rel_tol=1e-3)
    assert f(0) < f(3999) < f(7999) > f(15999)
    assert math.isclose(f(31999), 300**-0.5 * 32000**-0.5)


def test_trainer_overfits_a_tiny_set_and_predicts_with_generate(tmp_path, word_tokenizer, sample_samples):
    train = encode_samples(sample_samples["train"].select(range(16)))
    model = _tiny_model(word_tokenizer)
    args = IAMMTrainingArguments(
        output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=8, max_steps=40,
        learning_rate=1.0, schedule="noam", noam_warmup_steps=10, logging_steps=5, save_strategy="no", report_to=[],
        use_cpu=True, seed=0, predict_with_generate=True, generation_max_length=6, disable_tqdm=True,
    )
    assert args.label_names == ["labels", "emotion_labels"] and args.remove_unused_columns is False
    trainer = IAMMTrainer(model=model, args=args, train_dataset=train,
                          data_collator=IAMMDataCollator(word_tokenizer, return_oov_words=False))
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 8 and losses[-1] < 0.6 * losses[0]
    # the Noam schedule drove the learning rate: it rose to d^-0.5 * warmup^-0.5, then fell
    lrs = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert max(lrs) <= 32**-0.5 * 10**-0.5 + 1e-9 and lrs[-1] < max(lrs)

    result = trainer.predict(train, max_new_tokens=6)
    predictions = torch.as_tensor(result.predictions)
    assert predictions.shape[0] == 16
    assert (predictions[:, 0] == word_tokenizer.bos_token_id).all()
    assert ((predictions[:, 7:] == word_tokenizer.pad_token_id) | (predictions[:, 7:] == -100)).all()  # <= 6 new tokens
    assert "test_loss" in result.metrics

    records = list(predict(model, word_tokenizer, list(train.select(range(3))), batch_size=2, max_new_tokens=5))
    assert [r["conv_id"] for r in records] == train["conv_id"][:3]
    assert all(r["emotion"] in model.config.label2id and isinstance(r["response"], str) for r in records)
    assert "utterance-situation" in records[0]["associations"]


def test_training_arguments_validate():
    with pytest.raises(ValueError, match="--schedule must be 'noam' or 'hf'"):
        IAMMTrainingArguments(output_dir="unused", schedule="cosine", use_cpu=True)


def test_compiled_training_pads_to_buckets_by_default():
    """--torch_compile gets bucketed padding unless told otherwise (fewer shapes, fewer recompilations)."""
    assert IAMMTrainingArguments(output_dir="unused", use_cpu=True).pad_to_multiple_of == 0
    assert IAMMTrainingArguments(output_dir="unused", use_cpu=True, torch_compile=True).pad_to_multiple_of == 8
    assert IAMMTrainingArguments(output_dir="unused", use_cpu=True, torch_compile=True,
                                 pad_to_multiple_of=0).pad_to_multiple_of == 0
    with pytest.raises(ValueError, match="--pad_to_multiple_of must be >= 1, or 0"):
        IAMMTrainingArguments(output_dir="unused", use_cpu=True, pad_to_multiple_of=-8)


def test_presets_files_and_flags(tmp_path):
    from modeling_iamm.cli import parse_args
    from modeling_iamm.preparation import DataArguments
    from modeling_iamm.training import ModelArguments

    types = (DataArguments, ModelArguments, IAMMTrainingArguments)
    data, model, train = parse_args(types, ["--preset", "paper", "--data", "d", "--output_dir", "o", "--use_cpu", "true"])
    assert (train.max_steps, train.noam_warmup_steps, train.eval_steps, train.eval_start_step) == (17600, 8000, 800, 10000)
    assert (train.adam_beta2, train.adam_epsilon, train.per_device_train_batch_size) == (0.98, 1e-9, 16)
    assert train.max_grad_norm == 0.0 and train.load_best_model_at_end and train.metric_for_best_model == "eval_ppl"
    # as the authors' code: no early stopping, every evaluated checkpoint kept
    assert train.early_stopping_patience is None and train.save_total_limit is None and train.greater_is_better is False
    # architecture flags left unset keep IAMMConfig's defaults, the paper's sizes
    assert model.config_kwargs() == {} and IAMMConfig(**model.config_kwargs()).hidden_size == 300
    # a flag beats the preset
    _, _, train = parse_args(types, ["--preset", "paper", "--data", "d", "--output_dir", "o", "--max_steps", "5",
                                     "--use_cpu", "true"])
    assert train.max_steps == 5
    # the emotion-loss weight is a flag, and reaches the config of a fresh model
    _, model, _ = parse_args(types, ["--preset", "paper", "--data", "d", "--output_dir", "o", "--use_cpu", "true",
                                     "--emotion_loss_weight", "0.5", "--emotion_label_smoothing", "0.1"])
    assert IAMMConfig(**model.config_kwargs()).emotion_loss_weight == 0.5
    assert IAMMConfig(**model.config_kwargs()).emotion_label_smoothing == 0.1
    with pytest.raises(ValueError, match="emotion_loss_weight"):
        IAMMConfig(emotion_loss_weight=-1.0)
    # the same from a YAML file naming the preset
    config = tmp_path / "run.yaml"
    config.write_text("preset: tiny\ndata: d\noutput_dir: o\nmax_steps: 7\nuse_situation: false\nuse_cpu: true\n")
    data, model, train = parse_args(types, [str(config)])
    assert (data.data, train.max_steps, model.hidden_size, model.use_situation) == ("d", 7, 32, False)
    config.write_text("data: d\noutput_dir: o\nnot_a_flag: 1\n")
    with pytest.raises(SystemExit, match="unknown keys"):
        parse_args(types, [str(config)])


def test_bf16_autocast_trains(word_tokenizer, sample_samples):
    """What --bf16 does on a GPU, checked with CPU autocast: finite loss, every parameter gets a gradient."""
    batch = IAMMDataCollator(word_tokenizer)(list(sample_samples["train"].select(range(8))))
    model = _tiny_model(word_tokenizer)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(**batch).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    model.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model.generate(**batch, max_new_tokens=4).shape == (8, 5)


def _tiny_model(tokenizer, seed=0):
    """The model tests' tiny IAMM, sized for `tokenizer`, without knowledge (as ED without COMET trains it)."""
    return IAMMModelTester(vocab_size=len(tokenizer), use_implicit_association=False).create_model(seed)


def test_evaluation_reports_perplexities_and_accuracy_computed_per_sample(tmp_path, word_tokenizer, sample_samples):
    """eval_ppl / eval_ppl_corpus / eval_emotion_accuracy equal a direct per-sample computation (batching and
    padding must not change them)."""
    from modeling_iamm.metrics import perplexities

    valid = encode_samples(sample_samples["valid"].select(range(13)))
    model = _tiny_model(word_tokenizer).eval()
    collator = IAMMDataCollator(word_tokenizer, return_oov_words=False)
    nll, counts, hits = [], [], 0
    with torch.no_grad():
        for i in range(len(valid)):  # one sample at a time: no padding at all
            batch = collator([valid[i]])
            out = model(**batch, return_logits=True)
            labels = batch["labels"][0]
            log_probs = out.logits[0].gather(1, labels[:, None]).squeeze(1)
            nll.append(-log_probs.sum().item())
            counts.append(len(labels))
            hits += int(out.emotion_logits.argmax(-1).item() == batch["emotion_labels"].item())
    expected = perplexities(nll, counts)
    args = IAMMTrainingArguments(output_dir=str(tmp_path), per_device_eval_batch_size=5, report_to=[], use_cpu=True,
                                 disable_tqdm=True)
    trainer = IAMMTrainer(model=model, args=args, eval_dataset=valid, data_collator=collator)
    metrics = trainer.evaluate()
    assert metrics["eval_ppl"] == pytest.approx(expected["ppl_paper"], rel=1e-4)
    assert metrics["eval_ppl_corpus"] == pytest.approx(expected["ppl_corpus"], rel=1e-4)
    assert metrics["eval_ppl"] != pytest.approx(metrics["eval_ppl_corpus"], rel=1e-4)  # two different estimators
    assert metrics["eval_emotion_accuracy"] == pytest.approx(hits / len(valid))


def test_early_stopping_and_time_budget_stop_training(tmp_path, word_tokenizer, sample_samples):
    train = encode_samples(sample_samples["train"].select(range(16)))
    collator = IAMMDataCollator(word_tokenizer, return_oov_words=False)
    common = dict(per_device_train_batch_size=8, per_device_eval_batch_size=8, learning_rate=1.0, schedule="noam",
                  noam_warmup_steps=10, report_to=[], use_cpu=True, seed=0, disable_tqdm=True, max_steps=40,
                  eval_strategy="steps", eval_steps=2, save_strategy="steps", save_steps=2,
                  load_best_model_at_end=True, metric_for_best_model="eval_ppl")
    # a criterion that training on the evaluation set makes worse at every evaluation: patience 2 stops it at the
    # third evaluation (step 6), and the best checkpoint is the first one
    args = IAMMTrainingArguments(output_dir=str(tmp_path / "early"), greater_is_better=True, early_stopping_patience=2,
                                 **common)
    trainer = IAMMTrainer(model=_tiny_model(word_tokenizer), args=args, train_dataset=train, eval_dataset=train,
                          data_collator=collator)
    trainer.train()
    ppls = [h["eval_ppl"] for h in trainer.state.log_history if "eval_ppl" in h]
    assert ppls == sorted(ppls, reverse=True) and len(ppls) == 3
    assert trainer.state.global_step == 6 and trainer.state.best_model_checkpoint.endswith("checkpoint-2")

    # a wall-clock budget that is spent after the first step: it evaluates and saves that step, then stops
    args = IAMMTrainingArguments(output_dir=str(tmp_path / "budget"), max_train_seconds=1e-6, greater_is_better=False,
                                 eval_start_step=30, **common)
    trainer = IAMMTrainer(model=_tiny_model(word_tokenizer), args=args, train_dataset=train, eval_dataset=train,
                          data_collator=collator)
    trainer.train()
    assert trainer.state.global_step == 1
    assert [h["step"] for h in trainer.state.log_history if "eval_ppl" in h] == [1]
    assert (tmp_path / "budget" / "checkpoint-1").is_dir()

    with pytest.raises(ValueError, match="early_stopping_patience needs evaluation"):
        IAMMTrainingArguments(output_dir="unused", early_stopping_patience=3, use_cpu=True)
    with pytest.raises(ValueError, match="max_train_seconds must be a finite number of seconds > 0"):
        IAMMTrainingArguments(output_dir="unused", max_train_seconds=0, use_cpu=True)


def test_resume_with_new_callbacks_and_refusal_of_an_optimizer_state_of_another_parameter_order(tmp_path, word_tokenizer, sample_samples):
    """torch restores optimizer states by position without checking shapes (fused Adam then crashes or reads out of
    bounds): a checkpoint whose parameters do not line up must be refused with a clear error."""
    train = encode_samples(sample_samples["train"].select(range(16)))
    collator = IAMMDataCollator(word_tokenizer, return_oov_words=False)

    def args(steps):
        return IAMMTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, max_steps=steps,
                                     save_strategy="steps", save_steps=2, report_to=[], use_cpu=True, seed=0,
                                     disable_tqdm=True)

    IAMMTrainer(model=_tiny_model(word_tokenizer), args=args(2), train_dataset=train, data_collator=collator).train()
    same = IAMMTrainer(model=_tiny_model(word_tokenizer), args=args(3), train_dataset=train, data_collator=collator)
    same.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))  # the same model resumes
    assert same.state.global_step == 3
    # a run continued with a callback its checkpoint did not have (early stopping) saves checkpoints normally
    more = IAMMTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8, per_device_eval_batch_size=8,
                                 max_steps=4, save_strategy="steps", save_steps=2, eval_strategy="steps", eval_steps=2,
                                 load_best_model_at_end=True, metric_for_best_model="eval_ppl", greater_is_better=False,
                                 early_stopping_patience=2, report_to=[], use_cpu=True, seed=0, disable_tqdm=True)
    continued = IAMMTrainer(model=_tiny_model(word_tokenizer), args=more, train_dataset=train, eval_dataset=train,
                            data_collator=collator)
    continued.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))
    assert continued.state.global_step == 4 and (tmp_path / "checkpoint-4" / "trainer_state.json").exists()
    reordered = _tiny_model(word_tokenizer)
    modules = dict(reordered.model._modules)  # same weights by name, in another order
    head = modules.pop("context_emotion_head")
    object.__setattr__(reordered.model, "_modules", {"context_emotion_head": head, **modules})
    assert [p.shape for p in reordered.parameters()] != [p.shape for p in _tiny_model(word_tokenizer).parameters()]
    trainer = IAMMTrainer(model=reordered, args=args(4), train_dataset=train, data_collator=collator)
    with pytest.raises(ValueError, match="optimizer state does not match this model's parameters"):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_settings_given_with_a_saved_model_are_named_as_not_applied(tmp_path, word_tokenizer, caplog):
    """--model_name_or_path keeps the saved config: architecture flags that differ from it are named in a warning
    (not silently dropped); the loaded model is the saved one."""
    import logging

    from modeling_iamm.training import ModelArguments, build_model

    saved = _tiny_model(word_tokenizer)
    saved.save_pretrained(tmp_path / "saved")
    args = ModelArguments(model_name_or_path=str(tmp_path / "saved"), gate_floor=0.2, dropout=saved.config.dropout)
    with caplog.at_level(logging.WARNING, logger="modeling_iamm.training"):
        model = build_model(args, word_tokenizer, has_knowledge=False)
    assert model.config.gate_floor == 0.0
    assert "--gate_floor 0.2" in caplog.text and "--dropout" not in caplog.text  # only what differs
