"""Shared fixtures: offline Hub, seeded RNGs, the bundled ED sample, tiny tokenizers and models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

SHARED_ED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "empathetic_dialogues")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def sample_conversations():
    from modeling_iamm import SAMPLE_DATA_DIR, load_empathetic_dialogues

    return load_empathetic_dialogues(SAMPLE_DATA_DIR)


@pytest.fixture(scope="session")
def sample_samples(sample_conversations):
    from modeling_iamm import build_samples

    return build_samples(sample_conversations)


@pytest.fixture(scope="session")
def word_tokenizer(sample_conversations):
    from modeling_iamm import build_tokenizer

    return build_tokenizer(sample_conversations["train"], min_frequency=2)


@pytest.fixture(scope="session")
def ab_outputs(tmp_path_factory, word_tokenizer):
    """Two tiny models' evaluations and an LLM results file for the A/B study tests (tests/helpers/ab_outputs.py)."""
    from tests.helpers.ab_outputs import make_outputs

    return make_outputs(str(tmp_path_factory.mktemp("ab_outputs")), word_tokenizer)
