"""The annotation page of A/B studies (iamm.hub.annotation): its API through gradio_client (logins included), and the
page in headless Chromium with two annotators at once (key presses and clicks), going back to change an answer, a
SIGKILL of the server in the middle of a session and a restart."""

import os
import runpy
import signal
import subprocess
import sys
import tempfile

import pytest

from modeling_iamm.ab_study import Study, load_dialogues, prepare_study, read_outputs
from tests.helpers.browser import AnnotationPage, browser_missing, chromium_driver, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1",
           TOKENIZERS_PARALLELISM="false")


@pytest.fixture()
def study(tmp_path, ab_outputs):
    """IAMM (a tiny model's evaluation) against an LLM results file, joined to the data: dialogues and responses
    with HTML in them, an empty response."""
    return prepare_study(str(tmp_path / "study"), read_outputs(ab_outputs["eval0"]), read_outputs(ab_outputs["llm"]),
                         "IAMM", "GPT", seed=11, dialogues=load_dialogues(ab_outputs["data"], "valid"))


def has_html(pair) -> bool:
    return any("<img" in text for text in (*pair.dialogue.turns, pair.response_a, pair.response_b))


def test_page_api(study):
    """/start, /save and /previous as gradio_client calls them; a login decides who the annotator is."""
    from gradio_client import Client

    from iamm.hub.annotation import launch_annotation_page

    port = free_port()
    page = launch_annotation_page(study, port=port, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        api = client.view_api(return_format="dict", print_info=False)
        assert sorted(api["named_endpoints"]) == ["/previous", "/save", "/start"] and not api["unnamed_endpoints"]
        save_api = api["named_endpoints"]["/save"]
        assert [p["parameter_name"] for p in save_api["parameters"]] == ["annotator", "pair_id", "empathy",
                                                                        "relevance", "fluency"]
        assert [r["label"] for r in save_api["returns"]] == ["Annotator", "Pair id", "Progress", "Dialogue",
                                                             "Response 1", "Response 2", "Empathy", "Relevance",
                                                             "Fluency", "Status"]
        order = study.order_for("ann")
        view = client.predict("ann", api_name="/start")
        assert view[1] == order[0] and f"pair 1 of {len(order)} · 0 of {len(order)} answered" in view[2]
        pair = study.pair(order[0])
        assert (view[4], view[5]) == pair.shown() and view[6:9] == (None, None, None)
        saved = client.predict("ann", order[0], "1", "equal", "2", api_name="/save")
        assert saved[1] == order[1] and saved[9] == "Saved pair 1." and "1 of" in saved[2]
        assert study.answers_of("ann")[order[0]] == {"empathy": pair.to_system("1"), "relevance": "equal",
                                                     "fluency": pair.to_system("2")}
        back = client.predict("ann", order[1], api_name="/previous")
        assert back[1] == order[0] and back[6:9] == ("1", "equal", "2")  # the saved answers, in screen terms
        refused = client.predict("ann", order[1], "1", None, None, api_name="/save")
        assert "answer every aspect first" in refused[9] and order[1] not in study.answers_of("ann")
        # HTML in a dialogue is escaped: shown as text
        after = next(order[i + 1] for i in range(len(order) - 1)
                     if any("<img" in t for t in study.pair(order[i]).dialogue.turns))
        shown = client.predict("ann", after, api_name="/previous")  # the pair before `after`: one with HTML
        assert "&lt;img src=x onerror=&quot;window.injected=1&quot;&gt;" in shown[3] and "<img" not in shown[3]
    finally:
        page.close()
    # with logins, the annotator is the logged-in user, whatever a call says
    page = launch_annotation_page(study, port=port, users=[("alice", "pw-a"), ("bob", "pw-b")], block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", auth=("alice", "pw-a"), verbose=False)
        order = study.order_for("alice")
        assert client.predict("", api_name="/start")[0] == "alice"
        pretend = client.predict("bob", order[0], "1", "1", "1", api_name="/save")
        assert "logged in as 'alice', not 'bob'" in pretend[9] and "bob" not in study.annotators()
        client.predict("alice", order[0], "1", "1", "1", api_name="/save")
        assert order[0] in study.answers_of("alice")
        with pytest.raises(Exception):
            Client(f"http://127.0.0.1:{port}/", auth=("alice", "wrong"), verbose=False)
    finally:
        page.close()


# ---------------------------------------------------------------------------------------------------------------
# In the browser
# ---------------------------------------------------------------------------------------------------------------


def start_server(study_folder, port):
    """The annotation page served by `scripts/ab_test.py annotate` in a process of its own (the load benchmark's
    launcher), so that it can be killed."""
    serve = runpy.run_path(os.path.join(ROOT, "scripts", "benchmark_annotation.py"), run_name="imported")["serve"]
    return serve(study_folder, port)


@pytest.mark.slow
def test_two_annotators_in_chromium_and_a_killed_server(tmp_path, study):
    reason = browser_missing()
    if reason:
        pytest.skip(f"no headless browser: {reason}")
    from selenium.webdriver.common.keys import Keys

    total = len(study.asked_pairs())
    # an annotator whose first pair has HTML in it (the orders are drawn from the name)
    alice = next(f"alice{i}" for i in range(200) if has_html(study.pair(study.order_for(f"alice{i}")[0])))
    alice_order, bob_order = study.order_for(alice), study.order_for("bob")
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    server = start_server(study.folder, port)
    drivers = [chromium_driver(tempfile.mkdtemp(dir=tmp_path)) for _ in range(2)]
    try:
        a = AnnotationPage(drivers[0], f"{url}?annotator={alice}")
        b = AnnotationPage(drivers[1], f"{url}?annotator=bob")
        assert f"{alice}: pair 1 of {total} · 0 of {total} answered" in a.text("#progress")
        assert (a.response(1), a.response(2)) == study.pair(alice_order[0]).shown()
        # HTML in the dialogue or a response is shown as text; nothing of it renders or runs
        assert "<img src=x" in a.text("#dialogue") + a.response(1) + a.response(2)
        assert drivers[0].execute_script("return window.injected") is None
        assert not drivers[0].find_elements(a.By.CSS_SELECTOR, "#dialogue img, #dialogue b")
        assert "Whether the emotion in the response is appropriate." in a.text("body")  # the paper's definitions

        # alice answers with the keyboard, bob with the mouse, at the same time
        pressed = {}
        a.keys("1", "2", "e")
        a.wait(lambda d: [a.checked(x) for x in ("empathy", "relevance", "fluency")] == ["1", "2", "equal"])
        for css in ('#aspect-empathy input[value="2"]', '#aspect-relevance input[value="2"]',
                    '#aspect-fluency input[value="1"]'):
            b.click(css)
        a.keys(Keys.ENTER)
        b.click("#save")
        pressed[(alice, alice_order[0])] = ("1", "2", "equal")
        pressed[("bob", bob_order[0])] = ("2", "2", "1")
        a.saved(1, total)
        b.saved(1, total)
        for position, keys in ((2, ("2", "2", "2")), (3, ("3", "1", "1"))):
            a.keys(*keys, Keys.ENTER)
            a.saved(position, total)
            pressed[(alice, alice_order[position - 1])] = tuple("equal" if k == "3" else k for k in keys)
        assert f"· 3 of {total} answered" in a.text("#progress")
        # back to pair 3: its saved answers are shown; change one and save again
        a.keys(Keys.BACKSPACE)
        a.wait(lambda d: f"pair 3 of {total}" in a.text("#progress"))
        assert [a.checked(x) for x in ("empathy", "relevance", "fluency")] == ["equal", "1", "1"]
        a.click('#aspect-fluency input[value="2"]')
        a.click("#save")
        a.saved(3, total)  # ... and on to the first pair still open
        pressed[(alice, alice_order[2])] = ("equal", "1", "2")

        def stored():
            return {(name, pair): tuple(study.pair(pair).to_screen(answers[x])
                                        for x in ("empathy", "relevance", "fluency"))
                    for name in (alice, "bob") for pair, answers in study.answers_of(name).items()}

        assert stored() == pressed
        # bob answers a second pair but has not saved it when the server is killed
        for css in ('#aspect-empathy input[value="1"]', '#aspect-relevance input[value="1"]'):
            b.click(css)
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
        assert stored() == pressed  # every answer the page showed as saved is in the store
        server = start_server(study.folder, port)
        b = AnnotationPage(drivers[1], f"{url}?annotator=bob")  # bob comes back: his first open pair, nothing lost
        assert f"bob: pair 2 of {total} · 1 of {total} answered" in b.text("#progress")
        assert [b.checked(x) for x in ("empathy", "relevance", "fluency")] == [None, None, None]
        a = AnnotationPage(drivers[0], f"{url}?annotator={alice}")
        assert f"pair 4 of {total} · 3 of {total} answered" in a.text("#progress")
        a.keys("1", "1", "1", Keys.ENTER)
        a.saved(4, total)
        pressed[(alice, alice_order[3])] = ("1", "1", "1")
        assert stored() == pressed
        with Study.open(study.folder).connect() as conn:  # one row per annotator x pair x aspect
            assert conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0] == 3 * len(pressed)
    finally:
        for driver in drivers:
            driver.quit()
        server.kill()
        server.wait(timeout=30)


def test_answers_collected_on_a_space_come_home(tmp_path, study):
    """The Space folder runs the page from its own code and its own copy of the store; its administrator exports
    the answers as CSV, which `import` adds to the local study."""
    from gradio_client import Client

    from iamm.hub.annotation import launch_annotation_page
    from iamm.hub.space import write_annotation_space

    space = tmp_path / "space"
    files = write_annotation_space(study.folder, str(space))["files"]
    for name in ("app.py", "requirements.txt", "README.md", "iamm_annotation.py", "study/study.sqlite",
                 "modeling_iamm/ab_study.py"):
        assert name in files and (space / name).is_file(), name
    check = ("import sys; sys.path.insert(0, '.'); import app, modeling_iamm, gradio; "
             "assert modeling_iamm.__file__.startswith(sys.argv[1]), modeling_iamm.__file__; "
             "assert isinstance(app.demo, gradio.Blocks); print(app.STUDY, app.USERS, app.ADMIN, app.NOTICE)")
    env = dict(ENV, AB_USERS="alice:pw-a\nowner:pw-o\n", AB_ADMIN="owner")
    proc = subprocess.run([sys.executable, "-c", check, str(space)], cwd=space, env=env, capture_output=True,
                          text=True, timeout=150)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "study [('alice', 'pw-a'), ('owner', 'pw-o')] owner This Space has no persistent storage" in proc.stdout
    # the Space's copy of the store, served with logins: alice answers, the owner exports, the study imports
    remote = Study.open(str(space / "study"))
    port = free_port()
    page = launch_annotation_page(remote, port=port, users=[("alice", "pw-a"), ("owner", "pw-o")], block=False,
                                  admin="owner")
    try:
        url = f"http://127.0.0.1:{port}/"
        alice = Client(url, auth=("alice", "pw-a"), verbose=False)
        first = alice.predict("", api_name="/start")
        alice.predict("", first[1], "1", "2", "equal", api_name="/save")
        with pytest.raises(Exception, match="only the study's administrator"):
            alice.predict(api_name="/export_answers")
        progress, csv_path = Client(url, auth=("owner", "pw-o"), verbose=False).predict(api_name="/export_answers")
    finally:
        page.close()
    assert "alice" in progress and "1 of" in progress
    assert open(csv_path).read().splitlines()[0] == "pair_id,annotator,aspect,choice"
    assert study.import_judgements(csv_path) == {"records": 3, "annotators": 1, "replaced": 0}
    assert study.answers_of("alice") == remote.answers_of("alice")
