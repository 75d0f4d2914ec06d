"""The demo page (iamm.hub.demo), its CLI and the Space writer: the prediction function the page calls, checkpoint
errors, and the page itself in a real headless Chromium (selenium) against the app served on 127.0.0.1."""

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import pytest
import torch

from modeling_iamm import EMOTION_LABELS
from modeling_iamm.inference import predict
from tests.helpers.tiny_model import IAMMModelTester

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
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
    assert first.response == again.response  # the seed makes sampling repeatable
    assert len(first.response.split()) <= 12


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


def test_model_with_knowledge_shows_all_four_heads(word_tokenizer):
    from iamm.hub.demo import predict_for_demo

    model = tiny_model(word_tokenizer)  # use_implicit_association=True (the full IAMM)
    result = predict_for_demo(model, word_tokenizer, SITUATION, DIALOGUE)
    assert set(result.head_probabilities) == {"context", "situation", "memory", "knowledge"} and not result.missing_heads
    assert any("gives it none" in n for n in result.notes)  # the page says the knowledge input is empty


def test_bad_checkpoint_path(tmp_path, checkpoint):
    from iamm.hub.demo import DemoError, load_model

    missing = str(tmp_path / "no_such_run")
    with pytest.raises(DemoError, match=re.escape(missing) + ": no such folder"):
        load_model(missing)
    with pytest.raises(DemoError, match="no config.json"):
        load_model(str(tmp_path))
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "demo.py"), "--model_name_or_path", missing],
                          env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"error: {missing}: no such folder (pass a folder written by save_pretrained, or a Hub model id)"


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
    assert f"gradio=={gradio.__version__}" in requirements and any(r.startswith("torch==") for r in requirements)
    # app.py builds the page from the Space's own copy of the code (not this checkout's)
    check = ("import sys; sys.path.insert(0, '.'); import app, modeling_iamm, gradio; "
             "assert modeling_iamm.__file__.startswith(sys.argv[1]), modeling_iamm.__file__; "
             "assert isinstance(app.demo, gradio.Blocks); print('built', app.MODEL_ID)")
    proc = subprocess.run([sys.executable, "-c", check, str(space)], cwd=space, env=ENV, capture_output=True, text=True,
                          timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"built {checkpoint}" in proc.stdout
    installed = write_space("user/iamm", str(tmp_path / "pip"), package_requirement="iamm==0.1.0")["files"]
    assert installed == ["README.md", "app.py", "requirements.txt"]
    assert "from iamm.hub.demo import build_demo" in (tmp_path / "pip" / "app.py").read_text()


# ---------------------------------------------------------------------------------------------------------------
# The page in a real headless browser
# ---------------------------------------------------------------------------------------------------------------


def browser_missing():
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.path.exists(path)]
    if missing:
        return f"{' and '.join(missing)} not installed (apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def chromium_driver(user_data_dir, width=1200, height=1400):
    """Debian's Chromium through its chromedriver: nothing is downloaded (no Selenium Manager), no network."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    return driver


def serve(demo):
    """Launch a demo on a free local port (no share link, no analytics); returns its URL."""
    os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, ssr_mode=False,
                quiet=True)
    return f"http://127.0.0.1:{port}/"


class Page:
    """The demo page as a person uses it: fill the fields, press Predict, read the outputs."""

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

    def set_text(self, elem_id, text):
        """Type into a textbox the way Svelte notices (value + input event), newlines included."""
        box = self.find(f"#{elem_id} textarea")
        self.driver.execute_script(
            "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('input', {bubbles: true}));",
            box, text)

    def value(self, elem_id):
        return self.find(f"#{elem_id} textarea").get_attribute("value")

    def status(self):
        return self.find("#status").text

    def errors(self):
        return [e.text for e in self.driver.find_elements(self.By.CSS_SELECTOR, self.ERRORS)]

    def submit(self, situation, dialogue, until):
        """Fill both fields, press Predict and wait until `until(page)` holds (the page answered)."""
        self.set_text("situation", situation)
        self.set_text("dialogue", "\n".join(dialogue) if isinstance(dialogue, list) else dialogue)
        self.find("#submit").click()
        self.wait(lambda d: until(self) or self.errors())
        assert not self.errors(), f"the page shows an error: {self.errors()}"


@pytest.mark.slow
def test_demo_page_in_headless_chromium(tmp_path, checkpoint, loaded, word_tokenizer):
    reason = browser_missing()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    from iamm.hub.demo import build_demo

    model, tokenizer = loaded
    start = time.time()
    examples = [{"situation": "My dog died yesterday.", "turns": ["My dog died yesterday.", "I am so sorry.", "He was 14."],
                 "emotion": "sad", "response": "That is a long life."}]
    demo = build_demo(checkpoint, examples=examples)  # loads the folder itself, as scripts/demo.py does
    url = serve(demo)
    driver = chromium_driver(tempfile.mkdtemp(dir=tmp_path))
    try:
        page = Page(driver, url)
        assert "knowledge head" in page.find("body").text  # the absent head is named and explained

        # a situation and a dialogue typed in: emotion and response as predict() gives them (greedy, 50 tokens)
        expected = greedy(model, tokenizer, DIALOGUE, SITUATION)
        page.submit(SITUATION, DIALOGUE, until=lambda p: p.value("response") == expected["response"] and p.value("emotion"))
        emotion = page.value("emotion")
        assert emotion in EMOTION_LABELS and emotion == expected["emotion"]
        assert page.status() == "Done."
        # each head's top emotions, the combined one headed by the predicted emotion; no knowledge head on the page
        assert page.find("#probs-combined").text.splitlines()[1] == emotion
        for head in ("context", "situation", "memory"):
            assert len(page.find(f"#probs-{head}").text.splitlines()) >= 6, head  # label, heading, 5 rows
        assert not driver.find_elements(page.By.CSS_SELECTOR, "#probs-knowledge")
        # the dialogue's words highlighted by association weight, and the heat map image
        spans = driver.find_elements(page.By.CSS_SELECTOR, "#highlights .token")
        assert "they" in [s.text.strip() for s in spans]
        coloured = [s for s in spans if "background-color" in (s.get_attribute("style") or "")]
        assert coloured, "no highlighted words"
        image = page.find("#heatmap img")
        page.wait(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) > 100)
        driver.save_screenshot(str(tmp_path / "demo.png"))
        assert os.path.getsize(tmp_path / "demo.png") > 10_000

        # 40 turns: a result, and the page says how much was read
        long_expected = greedy(model, tokenizer, LONG_DIALOGUE[-12:])
        page.submit("", LONG_DIALOGUE, until=lambda p: "40 utterances" in p.status())
        assert "last 12" in page.status()
        assert page.value("emotion") in EMOTION_LABELS and page.value("response") == long_expected["response"]

        # non-English text: unknown words, still a result
        foreign = greedy(model, tokenizer, NON_ENGLISH, "Ich bin traurig.")
        page.submit("Ich bin traurig.", NON_ENGLISH, until=lambda p: "vocabulary" in p.status())
        assert page.value("emotion") in EMOTION_LABELS and page.value("emotion") == foreign["emotion"]
        assert page.value("response") == foreign["response"]

        # empty input: a message, not an error
        page.submit(SITUATION, "", until=lambda p: "Type the dialogue first" in p.status())
        assert page.value("emotion") == "" and page.value("response") == ""

        # an example from the dropdown fills the fields and shows the dataset's reference
        page.find("#example input").click()
        page.wait(lambda d: d.find_elements(page.By.CSS_SELECTOR, "#example li[role=option]"))
        page.find("#example li[role=option]").click()
        page.wait(lambda d: page.value("dialogue") == "My dog died yesterday.\nI am so sorry.\nHe was 14.")
        assert page.value("situation") == "My dog died yesterday."
        page.wait(lambda d: "That is a long life." in page.find("#reference").text)
        assert not page.errors()
    finally:
        driver.quit()
        demo.close()
    assert time.time() - start < 150


def take_readme_screenshot(model_dir: str, out: str, example_index: int = 4, width: int = 1200, height: int = 1500):
    """docs/demo.png: the page after picking a bundled example from the dropdown and predicting for it."""
    from iamm.hub.demo import build_demo

    demo = build_demo(model_dir)
    url = serve(demo)
    folder = tempfile.mkdtemp()
    driver = chromium_driver(folder, width, height)
    try:
        page = Page(driver, url)
        page.find("#example input").click()
        page.wait(lambda d: len(d.find_elements(page.By.CSS_SELECTOR, "#example li[role=option]")) > example_index)
        driver.find_elements(page.By.CSS_SELECTOR, "#example li[role=option]")[example_index].click()
        page.wait(lambda d: page.value("dialogue"))
        page.find("#submit").click()
        page.wait(lambda d: page.value("emotion"))
        page.wait(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth",
                                             page.find("#heatmap img")) > 100)
        time.sleep(1)
        driver.save_screenshot(out)
    finally:
        driver.quit()
        demo.close()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":  # python tests/test_demo.py MODEL_DIR docs/demo.png
    take_readme_screenshot(sys.argv[1], sys.argv[2])
