import json
import os

import pytest
import torch

from modeling_iamm.averaging import average_state_dicts, checkpoints_between
from modeling_iamm.training import load_model
from scripts import average_checkpoints as average_checkpoints_script
from scripts.average_checkpoints import main
from tests.helpers.tiny_model import IAMMModelTester


@pytest.fixture()
def run(tmp_path, word_tokenizer):
    """A run folder with three checkpoints of one tiny architecture, each with other weights."""
    tester = IAMMModelTester(vocab_size=len(word_tokenizer))
    for seed, step in enumerate((800, 1600, 2400)):
        tester.create_model(seed=seed).save_pretrained(tmp_path / "run" / f"checkpoint-{step}", tokenizer=word_tokenizer)
    return tmp_path / "run", tester


def test_range_picks_the_checkpoints_between_the_steps_and_names_an_empty_range(run):
    run_dir, _ = run
    assert [os.path.basename(c) for c in checkpoints_between(str(run_dir), 1600)] == ["checkpoint-1600", "checkpoint-2400"]
    assert [os.path.basename(c) for c in checkpoints_between(str(run_dir), 0, 1600)] == ["checkpoint-800", "checkpoint-1600"]
    with pytest.raises(FileNotFoundError, match=r"3200 <= N.*800, 1600, 2400"):
        checkpoints_between(str(run_dir), 3200)
    with pytest.raises(ValueError, match="before"):
        checkpoints_between(str(run_dir), 2400, 800)


def test_script_writes_the_mean_of_the_weights_as_a_loadable_model(run, tmp_path):
    run_dir, tester = run
    out = tmp_path / "average"
    main(["--run_dir", str(run_dir), "--from_step", "800", "--to_step", "2400", "--output_dir", str(out)])
    models = [load_model(str(run_dir / f"checkpoint-{s}")) for s in (800, 1600, 2400)]
    averaged = load_model(str(out))  # a folder that loads on its own: config, weights, code, tokenizer
    for name, tensor in averaged.state_dict().items():
        expected = sum(m.state_dict()[name].double() for m in models) / 3
        assert torch.allclose(tensor.double(), expected, atol=1e-6), name
    assert not torch.equal(averaged.state_dict()["model.embed_tokens.weight"], models[0].state_dict()["model.embed_tokens.weight"])
    assert averaged.config.checkpoint_average["steps"] == [800, 1600, 2400]
    assert os.path.isfile(out / "tokenizer.json") and os.path.isfile(out / "modeling_iamm.py")
    batch = tester.prepare_batch()
    with torch.no_grad():
        assert torch.isfinite(averaged.eval()(**batch).loss)
    # never over an existing folder, and no partial folder left beside it
    with pytest.raises(SystemExit, match="^average_checkpoints: .* exists: choose another --output_dir"):
        main(["--run_dir", str(run_dir), "--output_dir", str(out)])
    assert sorted(os.listdir(tmp_path)) == ["average", "run"]


def test_one_checkpoint_averaged_with_itself_gives_the_same_outputs(run, tmp_path):
    run_dir, tester = run
    checkpoint = str(run_dir / "checkpoint-1600")
    main(["--checkpoints", checkpoint, checkpoint, "--output_dir", str(tmp_path / "same")])
    batch = tester.prepare_batch()
    with torch.no_grad():
        a = load_model(checkpoint).eval()(**batch)
        b = load_model(str(tmp_path / "same")).eval()(**batch)
    assert torch.equal(a.logits, b.logits) and torch.equal(a.emotion_logits, b.emotion_logits)


def test_checkpoints_of_another_architecture_are_refused_by_name(run, tmp_path, word_tokenizer):
    run_dir, tester = run
    other = tmp_path / "other" / "checkpoint-800"
    tester.create_model(hidden_size=48).save_pretrained(other, tokenizer=word_tokenizer)
    with pytest.raises(ValueError, match=rf"{other}: config differs .* hidden_size"):
        average_state_dicts([str(run_dir / "checkpoint-800"), str(other)])
    with pytest.raises(SystemExit, match="^average_checkpoints: pass either --run_dir"):
        main(["--output_dir", str(tmp_path / "x")])


def test_a_failed_write_leaves_neither_the_output_folder_nor_a_partial_one(run, tmp_path, monkeypatch):
    run_dir, _ = run
    real_load_tokenizer = average_checkpoints_script.load_tokenizer

    def failing_tokenizer(*args, **kwargs):  # the weights are written, then saving the tokenizer fails
        tokenizer = real_load_tokenizer(*args, **kwargs)
        monkeypatch.setattr(tokenizer, "save_pretrained", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
        return tokenizer

    monkeypatch.setattr(average_checkpoints_script, "load_tokenizer", failing_tokenizer)
    with pytest.raises(SystemExit, match="^average_checkpoints: disk full$"):
        main(["--run_dir", str(run_dir), "--output_dir", str(tmp_path / "average")])
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_a_field_an_older_config_lacks_counts_as_its_default(run):
    """A run resumed under a newer version writes config fields its earlier checkpoints lack: averaging across
    them is allowed when the field holds its default, and refused when it does not."""
    run_dir, _ = run
    older = run_dir / "checkpoint-800" / "config.json"
    config = json.loads(older.read_text())
    assert config.pop("emotion_label_smoothing") == 0.0
    older.write_text(json.dumps(config))
    averaged = average_state_dicts([str(run_dir / "checkpoint-800"), str(run_dir / "checkpoint-1600")])
    assert "model.embed_tokens.weight" in averaged
    newer = run_dir / "checkpoint-1600" / "config.json"
    newer.write_text(json.dumps({**json.loads(newer.read_text()), "emotion_label_smoothing": 0.1}))
    with pytest.raises(ValueError, match=r"checkpoint-1600: config differs .* emotion_label_smoothing"):
        average_state_dicts([str(run_dir / "checkpoint-800"), str(run_dir / "checkpoint-1600")])
