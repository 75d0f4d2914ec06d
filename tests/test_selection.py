import json
import os

import pytest

from modeling_iamm.selection import RULE, evaluated_checkpoints, select_checkpoint
from scripts.select_checkpoint import main


def make_run(tmp_path, validations, kept):
    """A run folder whose last checkpoint's trainer_state.json logs `validations` [(step, ppl, acc)]."""
    history = [{"loss": 12.0, "step": 100}]
    history += [{"eval_ppl": ppl, "eval_emotion_accuracy": acc, "eval_ppl_corpus": ppl + 5, "step": step}
                for step, ppl, acc in validations]
    for step in kept:
        os.makedirs(tmp_path / f"checkpoint-{step}")
    with open(tmp_path / f"checkpoint-{max(kept)}" / "trainer_state.json", "w") as f:
        json.dump({"log_history": history}, f)
    return str(tmp_path)


def test_most_accurate_under_the_perplexity_ceiling(tmp_path):
    run = make_run(tmp_path, [(800, 36.0, 0.52), (1600, 35.0, 0.47), (2400, 34.0, 0.49), (3200, 35.2, 0.49)],
                   kept=[800, 1600, 2400, 3200])
    evaluated = evaluated_checkpoints(run)
    assert [e.step for e in evaluated] == [800, 1600, 2400, 3200]
    chosen = select_checkpoint(evaluated, max_ppl=35.3)
    assert chosen.step == 2400  # 800 is more accurate but over the ceiling; 2400 and 3200 tie: the earlier wins
    assert chosen.checkpoint == os.path.join(run, "checkpoint-2400")
    assert select_checkpoint(evaluated, max_ppl=None).step == 2400  # no ceiling: lowest perplexity


def test_lowest_perplexity_when_none_is_under_the_ceiling_and_only_kept_checkpoints(tmp_path):
    run = make_run(tmp_path, [(800, 40.0, 0.52), (1600, 37.0, 0.47), (2400, 38.0, 0.49)], kept=[800, 2400])
    chosen = select_checkpoint(evaluated_checkpoints(run), max_ppl=35.3)
    assert chosen.step == 2400  # 1600 has the lowest perplexity but was not kept


def test_script_prints_and_records_the_choice_and_refuses_to_overwrite(tmp_path, capsys):
    run = make_run(tmp_path / "run", [(800, 36.0, 0.52), (1600, 35.0, 0.47)], kept=[800, 1600])
    out = tmp_path / "selection.json"
    main(["--run_dir", run, "--max_ppl", "35.3", "--output_file", str(out)])
    assert capsys.readouterr().out.strip().endswith(os.path.join(run, "checkpoint-1600"))
    record = json.loads(out.read_text())
    assert record["selected"]["step"] == 1600 and len(record["evaluated"]) == 2
    assert record["rule"] == RULE and "max_ppl" in record["rule"] and "35.3" not in record["rule"]
    with pytest.raises(SystemExit, match="exists"):
        main(["--run_dir", run, "--output_file", str(out)])
    with pytest.raises(SystemExit, match="exists"):  # refused before reading the run (here: there is none)
        main(["--run_dir", str(tmp_path / "missing"), "--output_file", str(out)])


def test_a_run_without_checkpoints_or_validations_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
        evaluated_checkpoints(str(tmp_path))
    run = make_run(tmp_path / "run", [], kept=[800])
    with pytest.raises(ValueError, match="no validation"):
        evaluated_checkpoints(run)
