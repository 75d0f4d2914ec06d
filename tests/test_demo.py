"""The demo page (iamm.hub.demo), its CLI and the Space writer: the prediction function the page calls, checkpoint
errors, and the page itself in a real headless Chromium (selenium) against the app served on 127.0.0.1."""

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from modeling_iamm import EMOTION_LABELS
from modeling_iamm.inference import predict
from tests.helpers.browser import browser_missing, chromium_driver, free_port
from tests.helpers.tiny_model import IAMMModelTester

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1",
           TOKENIZERS_PARALLELISM="false", HF_DATASETS_DISABLE_PROGRESS_BARS="1")

SITUATION = "I lost my job last week and I do not know how to tell my family."
DIALOGUE = ["I got fired today.", "Oh no, what happened?", "They cut half the team and I was one of them."]
LONG_DIALOGUE = [f"this is turn number {i} and i feel a bit tired of work" for i in range(40)]
NON_ENGLISH = ["Ich habe heute meine Arbeit verloren.", "Das tut mir leid!", "我今天很难过，因为我失去了工作。"]


def tiny_model(tokenizer, **kwargs):
    return IAMMModelTester(vocab_size=len(tokenizer), **kwargs).create_model().eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, word_tokenizer):
    """A tiny IAMM without knowledge (the w/o-IA model train.py writes for ED without COMET), saved with its tokenizer."""
    folder = tmp_path_factory.mktemp("demo") / "iamm"
    tiny_model(word_tokenizer, use_implicit_association=False).save_pretrained(folder, tokenizer=word_tokenizer)
    return str(folder)


@pytest.fixture(scope="module")
def loaded(checkpoint):
    from iamm.hub.demo import load_model

    return load_model(checkpoint)


def greedy(model, tokenizer, turns, situation=""):
    return next(predict(model, tokenizer, [{"turns": turns, "situation": situation}], max_new_tokens=50))


# ---------------------------------------------------------------------------------------------------------------
# The page's prediction function, without a browser
# ---------------------------------------------------------------------------------------------------------------


def test_predict_for_demo_gives_what_the_page_shows(loaded):
    from iamm.hub.demo import heatmap_figure, predict_for_demo

    model, tokenizer = loaded
    result = predict_for_demo(model, tokenizer, SITUATION, "\n".join(DIALOGUE))
    reference = greedy(model, tokenizer, DIALOGUE, SITUATION)
    assert result.emotion == reference["emotion"] and result.emotion in EMOTION_LABELS
    assert result.response == reference["response"]
    # the heads this model has, each a distribution over the 32 labels; the knowledge head is absent and explained
    assert set(result.head_probabilities) == {"context", "situation", "memory"}
    assert "knowledge" in result.missing_heads and "knowledge" in result.missing_heads["knowledge"]
    for probs in [result.emotion_probabilities, *result.head_probabilities.values()]:
        assert list(probs) == list(EMOTION_LABELS) and abs(sum(probs.values()) - 1) < 1e-3
    assert max(result.emotion_probabilities, key=result.emotion_probabilities.get) == result.emotion
    # the dialogue, word by word, with association weights on the words the associations picked
    text = "".join(span for span, _ in result.highlights)
    assert "Situation: i lost my job" in text and "Speaker: they cut half the team" in text
    weights = [w for _, w in result.highlights if w is not None]
    assert weights and all(w > 0 for w in weights)
    # a word's colour is its total weight over the associations that picked it (checked on words said once)
    words = [span.strip() for span, _ in result.highlights]
    checked = 0
    for span, weight in result.highlights:
        word = span.strip()
        if weight is None or words.count(word) != 1:
            continue
        total = sum(e["keyword_weight"] * (e["keyword"] == word) + sum(w for a, w in e["associated"] if a == word)
                    for pair in ("utterance-situation", "utterance-history", "utterance-memory")
                    for e in reference["associations"].get(pair, []))
        assert weight == pytest.approx(total, abs=0.01), word
        checked += 1
    assert checked >= 3
    assert result.highlights[0] == ("Situation: ", None)
    # the heat map: keywords x associated words
    rows, cols = len(result.heatmap_keywords), len(result.heatmap_words)
    assert rows >= 1 and cols >= 1 and len(result.heatmap_weights) == rows
    assert all(len(row) == cols for row in result.heatmap_weights) and any(w > 0 for row in result.heatmap_weights for w in row)
    figure = heatmap_figure(result)
    labels = [t.get_text() for t in figure.axes[0].get_yticklabels()]
    assert labels == result.heatmap_keywords
    assert not result.notes


def test_a_blank_situation_leaves_the_situation_head_out(loaded):
    """The situation is optional: without one the model runs in its no-situation mode, the page shows the heads it
    used and says that the emotion was predicted without the situation head."""
    from iamm.hub.demo import NO_SITUATION_REASON, predict_for_demo

    model, tokenizer = loaded
    for blank in ("", "   "):
        result = predict_for_demo(model, tokenizer, blank, "I passed my exam!")
        reference = greedy(model, tokenizer, ["I passed my exam!"])
        assert reference["situation"] == "without_situation"
        assert (result.emotion, result.response) == (reference["emotion"], reference["response"])
        assert set(result.head_probabilities) == {"context", "memory"}
        assert result.missing_heads["situation"] == NO_SITUATION_REASON
        assert result.notes == ["No situation given: the emotion was predicted without the situation head, from the "
                                "context head (H_c) and memory head (H_m) (the model's no-situation mode)."]
        assert not any(span.startswith("Situation") for span, _ in result.highlights)
    # the paper's "without any association" model keeps one head: named alone
    bare = tiny_model(tokenizer, use_explicit_association=False, use_implicit_association=False,
                      use_word_selector=False)
    assert predict_for_demo(bare, tokenizer, "", "I passed my exam!").notes == [
        "No situation given: the emotion was predicted without the situation head, from the context head (H_c) (the "
        "model's no-situation mode)."]


def test_seeds_outside_the_generators_range_are_refused(loaded):
    from iamm.hub.demo import DemoError, predict_for_demo

    model, tokenizer = loaded
    for seed in (2**64, 2**70, -1, 2.5):
        with pytest.raises(DemoError, match=r"^The seed must be a whole number from 0 to 18446744073709551615"):
            predict_for_demo(model, tokenizer, SITUATION, DIALOGUE, decoding="sampling", seed=seed, max_new_tokens=4)
    top = predict_for_demo(model, tokenizer, SITUATION, DIALOGUE, decoding="sampling", seed=2**64 - 1, max_new_tokens=4)
    assert top.seed == 2**64 - 1
    # greedy and beam search use no seed: whatever the seed box holds does not matter
    assert predict_for_demo(model, tokenizer, SITUATION, DIALOGUE, seed=2**70, max_new_tokens=4).seed is None


def test_decoding_choices(loaded):
    from iamm.hub.demo import DemoError, generation_kwargs, predict_for_demo

    model, tokenizer = loaded
    assert generation_kwargs("beam search", 20, num_beams=3) == {"max_new_tokens": 20, "num_beams": 3, "do_sample": False}
    assert generation_kwargs("sampling", 20, top_p=0.8, temperature=0.7)["do_sample"] is True
    with pytest.raises(DemoError, match="unknown decoding"):
        generation_kwargs("topk")
    beam = predict_for_demo(model, tokenizer, SITUATION, DIALOGUE, decoding="beam search", num_beams=3, max_new_tokens=8)
    reference = next(predict(model, tokenizer, [{"turns": DIALOGUE, "situation": SITUATION}], num_beams=3,
                             max_new_tokens=8))
    assert beam.response == reference["response"]
    first = predict_for_demo(model, tokenizer, SITUATION, DIALOGUE, decoding="sampling", seed=3, max_new_tokens=12)
    again = predict_for_demo(model, tokenizer, SITUATION, DIALOGUE, decoding="sampling", seed=3, max_new_tokens=12)
    assert first.response == again.response and first.seed == again.seed == 3  # the seed makes sampling repeatable
    assert len(first.response.split()) <= 12
    assert beam.seed is None and not any("seed" in n for n in beam.notes)


def test_sampling_draws_a_new_seed_unless_one_is_given(loaded):
    from iamm.hub.demo import predict_for_demo

    model, tokenizer = loaded
    kwargs = dict(decoding="sampling", max_new_tokens=12, temperature=2.0)
    drawn = [predict_for_demo(model, tokenizer, SITUATION, DIALOGUE, **kwargs) for _ in range(2)]
    seeds = [result.seed for result in drawn]
    assert all(isinstance(seed, int) for seed in seeds) and seeds[0] != seeds[1]  # a new seed per call
    for result in drawn:
        assert f"Sampled with seed {result.seed}" in " ".join(result.notes)  # the page says which, to repeat it
        torch.manual_seed(12345)  # whatever the global RNG holds, the reported seed gives the same response
        assert predict_for_demo(model, tokenizer, SITUATION, DIALOGUE, seed=result.seed, **kwargs).response == result.response


def test_long_non_english_and_empty_input(loaded):
    from iamm.hub.demo import DemoError, DemoLimits, predict_for_demo

    model, tokenizer = loaded
    long = predict_for_demo(model, tokenizer, "", LONG_DIALOGUE, limits=DemoLimits(max_context_turns=12))
    assert long.emotion in EMOTION_LABELS and isinstance(long.response, str)
    assert any("40 utterances" in n and "last 12" in n for n in long.notes)
    turn_labels = [span for span, _ in long.highlights if span in ("Speaker: ", "Listener: ")]
    assert len(turn_labels) == 12 and turn_labels[-1] == "Speaker: "
    assert "turn number 39" in "".join(span for span, _ in long.highlights)
    assert "turn number 27 " not in "".join(span for span, _ in long.highlights)  # only the last 12 (28..39)
    words = predict_for_demo(model, tokenizer, "", ["word " * 100], limits=DemoLimits(max_utterance_words=60))
    assert any("cut to their first 60 words" in n for n in words.notes)
    foreign = predict_for_demo(model, tokenizer, "Ich bin traurig.", NON_ENGLISH)
    assert foreign.emotion in EMOTION_LABELS and isinstance(foreign.response, str)
    assert any("not in the model's vocabulary" in n for n in foreign.notes)
    for empty in ("", "  \n \n"):
        with pytest.raises(DemoError, match="Type the dialogue first"):
            predict_for_demo(model, tokenizer, SITUATION, empty)


def draw_heatmap(keywords, words):
    """Draw a heat map of these labels; returns its tick labels and matplotlib's missing-glyph warnings."""
    import warnings

    from iamm.hub.demo import DemoResult, heatmap_figure

    result = DemoResult(emotion="sad", response="", emotion_probabilities={}, head_probabilities={}, missing_heads={},
                        highlights=[], heatmap_keywords=keywords, heatmap_words=words,
                        heatmap_weights=[[1.0 + i + j for j in range(len(words))] for i in range(len(keywords))])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = heatmap_figure(result)
        figure.canvas.draw()
    axes = figure.axes[0]
    labels = [t.get_text() for t in axes.get_yticklabels() + axes.get_xticklabels()]
    return labels, [str(w.message) for w in caught if "missing from font" in str(w.message)]


CJK_AND_EMOJI = (["难过", "sad", "🦄"], ["工作", "job", "🎉"])  # none of these is in matplotlib's DejaVu Sans


def test_heatmap_draws_cjk_and_emoji_with_an_installed_font():
    from iamm.hub.demo import _drawable_fonts

    for char in ("难", "🦄"):
        if not any(ord(char) in charmap for _, _, charmap in _drawable_fonts()):
            pytest.skip(f"no installed font has {char!r} (Debian: fonts-noto-cjk, fonts-symbola; .ci/run installs them)")
    labels, missing = draw_heatmap(*CJK_AND_EMOJI)
    assert not missing, missing  # every glyph drawn: no empty boxes
    assert labels == CJK_AND_EMOJI[0] + CJK_AND_EMOJI[1]


@pytest.mark.parametrize("columns", [1, 2, 8])
def test_heatmap_title_fits_narrow_maps(columns):
    from iamm.hub.demo import DemoResult, heatmap_figure

    result = DemoResult(emotion="sad", response="", emotion_probabilities={}, head_probabilities={}, missing_heads={},
                        highlights=[], heatmap_keywords=["job"], heatmap_words=[f"w{i}" for i in range(columns)],
                        heatmap_weights=[[1.0] * columns])
    figure = heatmap_figure(result)
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(figure).get_renderer()
    figure.draw(renderer)
    title = figure.axes[0].get_title(loc="left")
    assert title.startswith("rows: keywords")
    box = figure.axes[0]._left_title.get_window_extent(renderer)
    assert 0 <= box.x0 and box.x1 <= figure.bbox.width, (box, figure.bbox.width)


def test_heatmap_names_characters_no_installed_font_has(monkeypatch):
    from iamm.hub import demo

    monkeypatch.setattr(demo, "_drawable_fonts", lambda: ())  # a machine with only matplotlib's own font
    labels, missing = draw_heatmap(*CJK_AND_EMOJI)
    assert not missing, missing
    assert labels == ["U+96BEU+8FC7", "sad", "U+1F984", "U+5DE5U+4F5C", "job", "U+1F389"]


def test_model_with_knowledge_shows_all_four_heads(word_tokenizer):
    from iamm.hub.demo import predict_for_demo

    model = tiny_model(word_tokenizer)  # use_implicit_association=True (the full IAMM)
    result = predict_for_demo(model, word_tokenizer, SITUATION, DIALOGUE)
    assert set(result.head_probabilities) == {"context", "situation", "memory", "knowledge"} and not result.missing_heads
    assert any("gives it none" in n for n in result.notes)  # the page says the knowledge input is empty


def test_bad_checkpoint_path(tmp_path, checkpoint):
    from iamm.hub.demo import DemoError, load_model

    missing = str(tmp_path / "no_such_run")
    with pytest.raises(DemoError, match=re.escape(missing) + ": folder does not exist"):
        load_model(missing)
    with pytest.raises(DemoError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(DemoError, match="a file, not a folder"):
        load_model(os.path.join(checkpoint, "config.json"))


def test_missing_folder_named_like_a_hub_id_fails_at_once(tmp_path, monkeypatch):
    """`runs/iamm` (the README's example) is a folder or a Hub id: the message says the folder does not exist, at
    once when `runs/` is here, after one short Hub lookup otherwise, never after from_pretrained's download retries."""
    from huggingface_hub import constants

    from iamm.hub.demo import DemoError, load_model
    from tests.helpers.hub_server import FakeHub

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing may be asked of it
    with pytest.raises(DemoError, match=r"^runs/iamm: folder does not exist \(pass a folder"):
        load_model("runs/iamm")
    for name in ("iamm", "runs/iamm/checkpoint-10", "./iamm"):  # not owner/name: never a Hub id
        with pytest.raises(DemoError, match=re.escape(name) + ": folder does not exist"):
            load_model(name)
    (tmp_path / "runs").rmdir()
    # no runs/ here: a Hub id it could be, so the Hub is asked, once
    start = time.time()
    with pytest.raises(DemoError, match=r"^runs/iamm: folder does not exist, and the Hub \(http://127.0.0.1:9\) could "
                                        r"not be reached"):
        load_model("runs/iamm")  # port 9 (discard) refuses the connection
    hub = FakeHub().start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", hub.endpoint)
        with pytest.raises(DemoError, match=rf"^runs/iamm: folder does not exist, and the Hub \({hub.endpoint}\) has no "
                                            r"model runs/iamm"):
            load_model("runs/iamm")
        assert [r for r in hub.requests if "runs/iamm" in r]  # it was asked
    finally:
        hub.stop()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DemoError, match=r"^runs/iamm: folder does not exist, and no Hub model of that id is in the cache"):
        load_model("runs/iamm")
    assert time.time() - start < 30
    # the command line, as the README runs it: one line, exit 1
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--model_name_or_path", "runs/iamm"],
                          env=ENV, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("demo: runs/iamm: folder does not exist, and no Hub model of that id is in the cache "
                                   "(HF_HUB_OFFLINE is set)")


def test_api_as_the_readme_calls_it(checkpoint, loaded, word_tokenizer):
    """`gradio_client.Client(url).predict(..., api_name="/predict")` against the served page: one documented
    endpoint (the page's helpers are private), outputs named by their labels, only the heads the model has, and a
    new sampling seed per call unless one is given."""
    from gradio_client import Client

    from iamm.hub.demo import build_demo

    model, tokenizer = loaded
    demo = build_demo(checkpoint, examples=[{"situation": "", "turns": ["hi"], "emotion": "sad", "response": "x"}])
    url = serve(demo)
    try:
        client = Client(url, verbose=False)
        api = client.view_api(return_format="dict", print_info=False)
        assert list(api["named_endpoints"]) == ["/predict"] and not api["unnamed_endpoints"]
        endpoint = api["named_endpoints"]["/predict"]
        assert [p["parameter_name"] for p in endpoint["parameters"]] == [
            "situation", "dialogue", "decoding", "max_new_tokens", "num_beams", "top_p", "temperature", "seed",
            "randomize_seed"]
        returns = [r["label"] for r in endpoint["returns"]]
        assert returns[:3] == ["Predicted emotion", "Response", "Messages"]
        assert returns[5:] == ["Seed (sampling)", "All heads combined", "Context head (H_c)", "Situation head (H_s)",
                               "Memory head (H_m)"]
        assert all(label and not label.startswith("value_") for label in returns)  # gradio's name for unlabelled

        expected = greedy(model, tokenizer, DIALOGUE, SITUATION)
        emotion, response, messages, highlights, heatmap, seed, *heads = client.predict(  # as the README has it
            situation=SITUATION, dialogue="\n".join(DIALOGUE), decoding="greedy", api_name="/predict")
        assert (emotion, response, messages) == (expected["emotion"], expected["response"], "Done.")
        assert len(heads) == 4 and heads[0]["label"] == emotion and len(heads[0]["confidences"]) == 5
        assert "".join(token["token"] for token in highlights).startswith("Situation: i lost my job")
        seeds = []
        for _ in range(2):  # a new seed per call, returned
            outputs = client.predict(situation=SITUATION, dialogue="\n".join(DIALOGUE), decoding="sampling",
                                     api_name="/predict")
            assert f"Sampled with seed {outputs[5]}" in outputs[2]
            seeds.append(outputs[5])
        assert seeds[0] != seeds[1]
        fixed = [client.predict(situation=SITUATION, dialogue="\n".join(DIALOGUE), decoding="sampling", seed=7,
                                randomize_seed=False, api_name="/predict")[1:6] for _ in range(2)]
        assert fixed[0] == fixed[1] and "seed 7" in fixed[0][1] and fixed[0][4] == 7

        # the README's call without a situation: the heads the model used, the situation head's output empty
        blank = greedy(model, tokenizer, ["I passed my exam!"])
        emotion, response, messages, _, _, _, combined, context, situation, memory = client.predict(
            situation="", dialogue="I passed my exam!", decoding="greedy", api_name="/predict")
        assert (emotion, response) == (blank["emotion"], blank["response"])
        assert "predicted without the situation head" in messages and combined["label"] == emotion
        assert not situation and context["confidences"] and memory["confidences"]
        # a seed the generator cannot take: a message, not a bare "Error"
        outputs = client.predict(situation=SITUATION, dialogue="\n".join(DIALOGUE), decoding="sampling",
                                 seed=2**70, randomize_seed=False, api_name="/predict")
        assert outputs[2].startswith("**The seed must be a whole number from 0 to 18446744073709551615")
        assert outputs[0] == "" and outputs[5] is None
    finally:
        demo.close()
    # a model with a knowledge head has the fourth head's output
    full = build_demo((tiny_model(word_tokenizer), word_tokenizer), examples=[]).get_api_info()
    assert [r["label"] for r in full["named_endpoints"]["/predict"]["returns"]][-1] == "Knowledge head (H~_cs)"


def test_write_space_runs_the_demo_from_its_own_folder(tmp_path, checkpoint):
    import gradio

    from iamm.hub.space import write_space

    space = tmp_path / "space"
    written = write_space(checkpoint, str(space))["files"]
    for name in ("app.py", "requirements.txt", "README.md", "iamm_demo.py", "modeling_iamm/__init__.py",
                 "modeling_iamm/sample_data/valid.jsonl.gz"):
        assert name in written and (space / name).is_file(), name
    readme = (space / "README.md").read_text()
    front = readme.split("---")[1]
    assert readme.startswith("---\n") and "sdk: gradio" in front and "app_file: app.py" in front
    assert f"sdk_version: {gradio.__version__}" in front
    requirements = (space / "requirements.txt").read_text().split()
    # the ranges this package declares, never this machine's exact versions
    assert "gradio>=6.0" in requirements and "torch>=2.6" in requirements, requirements
    assert not any("==" in r or "+" in r for r in requirements), requirements
    # app.py builds the page from the Space's own copy of the code (not this checkout's)
    check = ("import sys; sys.path.insert(0, '.'); import app, modeling_iamm, gradio; "
             "assert modeling_iamm.__file__.startswith(sys.argv[1]), modeling_iamm.__file__; "
             "assert isinstance(app.demo, gradio.Blocks); print('built', app.MODEL_ID); "
             # the page's /predict function, as the Space serves it, with a blank situation
             "fn = next(f.fn for f in app.demo.fns.values() if f.api_name == 'predict'); "
             "out = fn('', 'I passed my exam!'); print('blank:', out[2])")
    proc = subprocess.run([sys.executable, "-c", check, str(space)], cwd=space, env=ENV, capture_output=True, text=True,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"built {checkpoint}" in proc.stdout
    assert "blank: - No situation given: the emotion was predicted without the situation head" in proc.stdout
    installed = write_space("user/iamm", str(tmp_path / "pip"), package_requirement="iamm==0.1.0")["files"]
    assert installed == ["README.md", "app.py", "requirements.txt"]
    assert "from iamm.hub.demo import build_demo" in (tmp_path / "pip" / "app.py").read_text()


# ---------------------------------------------------------------------------------------------------------------
# The page in a real headless browser
# ---------------------------------------------------------------------------------------------------------------


def phone_width(driver, width=400, height=800):
    """A phone-sized viewport (Chromium will not make a window narrower than 500 px; device emulation does)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
    assert driver.execute_script("return window.innerWidth") == width


def serve(demo):
    """Launch a demo on a free local port (no share link, no analytics); returns its URL."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, ssr_mode=False,
                quiet=True)
    return f"http://127.0.0.1:{port}/"


class Page:
    """The demo page as a person uses it: type into the fields (real key presses), click, read the outputs."""

    ERRORS = ".toast-body.error, .error"

    def __init__(self, driver, url):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.By = driver, By
        self.wait = lambda condition, timeout=90: WebDriverWait(driver, timeout, poll_frequency=0.2).until(condition)
        driver.get(url)
        self.wait(lambda d: d.find_elements(By.CSS_SELECTOR, "#dialogue textarea"))

    def find(self, css):
        return self.driver.find_element(self.By.CSS_SELECTOR, css)

    def type(self, css, text, replace=True):
        """Click a field and type `text` key by key (Enter for a newline); `replace`: select all and delete first."""
        from selenium.webdriver.common.keys import Keys

        box = self.find(css)
        box.click()
        if replace:
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(Keys.DELETE)
        box.send_keys(text)

    def value(self, elem_id):
        return self.find(f"#{elem_id} textarea").get_attribute("value")

    def status(self):
        return self.find("#status").text

    def errors(self):
        return [e.text for e in self.driver.find_elements(self.By.CSS_SELECTOR, self.ERRORS)]

    def in_view(self, css):
        """Whether the element is entirely inside the viewport."""
        return self.driver.execute_script(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
            "return r.top >= -1 && r.bottom <= window.innerHeight + 1", css)

    def idle(self):
        """No output is waiting for the server (Gradio hides their status trackers)."""
        return not self.driver.find_elements(self.By.CSS_SELECTOR, "#status [data-testid=status-tracker]:not(.hide)")

    def predict(self, until):
        """Press Predict and wait until `until(page)` holds (the page answered)."""
        self.find("#submit").click()
        self.wait(lambda d: (until(self) and self.idle()) or self.errors())
        assert not self.errors(), f"the page shows an error: {self.errors()}"

    def choose(self, decoding):
        self.find(f'#decoding input[value="{decoding}"]').click()


INJECTED = '<img src=x onerror="window.injected=1"> <b>bold</b> they cut half the team'


@pytest.mark.slow
def test_demo_page_in_headless_chromium(tmp_path, monkeypatch, checkpoint, loaded, word_tokenizer):
    """One page load, typed with real key presses: greedy, beam search and sampling; an utterance with HTML in it;
    one turn per line; an example (cached) and its reference; empty input; a 400-px wide screen."""
    reason = browser_missing()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    from iamm.hub.demo import HEATMAP_NUMBER_POINTS, build_demo, predict_for_demo

    model, tokenizer = loaded
    start = time.time()
    example = {"situation": "My dog died yesterday.", "turns": ["My dog died yesterday.", "I am so sorry.", "He was 14."],
               "emotion": "sad", "response": "That is a long life."}
    monkeypatch.setenv("GRADIO_EXAMPLES_CACHE", str(tmp_path / "examples_cache"))
    demo = build_demo(checkpoint, examples=[example], cache_examples=True)  # loads the folder, as scripts/demo.py does
    url = serve(demo)
    driver = chromium_driver(tempfile.mkdtemp(dir=tmp_path))
    By = None
    try:
        page = Page(driver, url)
        By = page.By
        assert "knowledge head" in page.find("body").text  # the absent head is named and explained

        # typed: a situation and a dialogue whose last utterance carries HTML; greedy as predict() gives it
        turns = DIALOGUE[:2] + [INJECTED]
        expected = greedy(model, tokenizer, turns, SITUATION)
        page.type("#situation textarea", SITUATION)
        page.type("#dialogue textarea", "\n".join(turns))
        assert page.value("dialogue") == "\n".join(turns)  # Enter typed a newline
        page.predict(until=lambda p: p.value("response") == expected["response"] and p.value("emotion"))
        assert page.value("emotion") == expected["emotion"] and page.status() == "Done."
        # the HTML is shown as text, nothing of it runs or renders
        assert driver.execute_script("return window.injected") is None
        assert not driver.find_elements(By.CSS_SELECTOR, "#highlights img, #highlights b, #status img, #reference img")
        # one line per turn (and the situation), each with its words
        lines = [" ".join(line.split()) for line in driver.execute_script(
            "return document.querySelector('#highlights .textfield').innerText").splitlines() if line.strip()]
        spans = "".join(span for span, _ in predict_for_demo(model, tokenizer, SITUATION, turns).highlights)
        assert lines == [" ".join(line.split()) for line in spans.splitlines() if line.strip()]
        assert [line.split(":")[0] for line in lines] == ["Situation", "Speaker", "Listener", "Speaker"]
        assert "< img src = x onerror" in lines[-1] and "< b > bold < / b >" in lines[-1]
        # each head's top emotions, the combined one headed by the predicted emotion; no knowledge head on the page
        assert page.find("#probs-combined").text.splitlines()[1] == expected["emotion"]
        for head in ("context", "situation", "memory"):
            assert len(page.find(f"#probs-{head}").text.splitlines()) >= 6, head  # label, heading, 5 rows
        assert not driver.find_elements(By.CSS_SELECTOR, "#probs-knowledge")
        coloured = driver.find_elements(By.CSS_SELECTOR, "#highlights .token[style*=background-color]")
        assert coloured, "no highlighted words"
        page.wait(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                             page.find("#heatmap img")) > 100)

        # no situation (the box says it is optional): the heads the model used, and the page says so
        blank = greedy(model, tokenizer, ["I passed my exam!"])
        page.type("#situation textarea", "")
        page.type("#dialogue textarea", "I passed my exam!")
        page.predict(until=lambda p: "without the situation head" in p.status() and p.value("response") == blank["response"])
        assert page.value("emotion") == blank["emotion"]
        assert page.find("#probs-combined").text.splitlines()[1] == blank["emotion"]
        for head in ("context", "memory"):
            assert len(page.find(f"#probs-{head}").text.splitlines()) >= 6, head
        assert len(page.find("#probs-situation").text.splitlines()) <= 2  # its label, no probabilities
        assert [line.split(":")[0] for line in driver.execute_script(
            "return document.querySelector('#highlights .textfield').innerText").splitlines() if line.strip()] == [
            "Speaker"]
        page.type("#situation textarea", SITUATION)
        page.type("#dialogue textarea", "\n".join(turns))

        # beam search, 8 new tokens (typed into the slider's box)
        beam = next(predict(model, tokenizer, [{"turns": turns, "situation": SITUATION}], num_beams=4, max_new_tokens=8))
        assert beam["response"] != expected["response"]
        page.find("#decoding-options button").click()  # open the accordion
        page.wait(lambda d: page.find('#decoding input[value="beam search"]').is_displayed())
        page.choose("beam search")
        page.type("#max-new-tokens input[type=number]", "8\t")
        page.predict(until=lambda p: p.value("response") == beam["response"])

        # sampling: a new seed per click, shown; with "New seed each time" off, the seed typed in draws the same
        # response again
        page.choose("sampling")
        seen = []
        for _ in range(2):
            page.predict(until=lambda p: "Sampled with seed" in p.status() and p.status() not in seen)
            seen.append(page.status())
        seed = int(re.search(r"seed (\d+)", seen[0]).group(1))
        assert seed != int(re.search(r"seed (\d+)", seen[1]).group(1))
        assert page.find("#seed input").get_attribute("value") == re.search(r"seed (\d+)", seen[1]).group(1)
        first = predict_for_demo(model, tokenizer, SITUATION, turns, decoding="sampling", max_new_tokens=8, seed=seed)
        page.find("#randomize-seed input").click()
        page.type("#seed input", str(seed) + "\t")
        page.predict(until=lambda p: p.status() == seen[0])
        assert page.value("response") == first.response

        # empty input: a message, not an error
        page.type("#dialogue textarea", " ")
        page.predict(until=lambda p: "Type the dialogue first" in p.status())
        assert page.value("emotion") == "" and page.value("response") == ""

        # an example, clicked: it fills the fields, shows the dataset's reference and its cached (greedy) result
        example_expected = greedy(model, tokenizer, example["turns"], example["situation"])
        page.find("#examples button").click()
        page.wait(lambda d: page.value("dialogue") == "\n".join(example["turns"]))
        assert page.value("situation") == example["situation"]
        page.wait(lambda d: "That is a long life." in page.find("#reference").text)
        page.wait(lambda d: page.value("response") == example_expected["response"])
        # typing a dialogue of one's own clears the example's reference
        page.type("#dialogue textarea", " Thank you.", replace=False)
        page.wait(lambda d: page.find("#reference").text.strip() == "")

        # a phone: after Predict the results are in view, the heat map keeps its size, no label is cut
        phone_width(driver)
        driver.execute_script("window.scrollTo(0, 0)")
        assert not page.in_view("#emotion")  # the inputs fill the screen
        page.predict(until=lambda p: p.status() == seen[0])  # the seed still fixed: the same message
        page.wait(lambda d: page.in_view("#emotion") and page.in_view("#response"))
        image = page.find("#heatmap img")
        shown, natural = driver.execute_script("return [arguments[0].clientWidth, arguments[0].naturalWidth]", image)
        assert natural > 300 and shown >= natural - 1  # numbers at HEATMAP_NUMBER_POINTS pt, 100 dpi: >= 13 px
        assert HEATMAP_NUMBER_POINTS * 100 / 72 * shown / natural >= 13
        for label in driver.find_elements(By.CSS_SELECTOR, "[id^=probs-] [data-testid=block-label]"):
            fits = driver.execute_script(
                "const l = arguments[0], box = l.closest('[id^=probs-]').getBoundingClientRect(),"
                " r = l.getBoundingClientRect();"
                "return l.scrollWidth <= l.clientWidth + 1 && r.height < 32 && r.right <= box.right + 1", label)
            assert fits, label.text
        assert not page.errors()
    finally:
        driver.quit()
        demo.close()
    assert time.time() - start < 150


def take_readme_screenshot(model_dir: str, out: str, example_index: int = 4, width: int = 1200, height: int = 1500):
    """docs/demo.png: the page after clicking a bundled example and predicting for it."""
    from iamm.hub.demo import build_demo

    demo = build_demo(model_dir)
    url = serve(demo)
    folder = tempfile.mkdtemp()
    driver = chromium_driver(folder, width, height)
    try:
        page = Page(driver, url)
        page.driver.find_elements(page.By.CSS_SELECTOR, "#examples button.gallery-item")[example_index].click()
        page.wait(lambda d: page.value("dialogue"))
        page.find("#submit").click()
        page.wait(lambda d: page.value("emotion"))
        page.wait(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                             page.find("#heatmap img")) > 100)
        time.sleep(1)
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(out)
    finally:
        driver.quit()
        demo.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":  # python -m tests.test_demo MODEL_DIR docs/demo.png
    take_readme_screenshot(sys.argv[1], sys.argv[2])
