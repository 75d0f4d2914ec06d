"""The annotation page of an A/B study (:mod:`modeling_iamm.ab_study`): annotators compare two responses in the
browser, one pair at a time.

    from iamm.hub.annotation import build_annotation_page
    build_annotation_page("studies/iamm-vs-woia").launch()     # http://127.0.0.1:7860/?annotator=alice

An annotator opens the page with their name (`?annotator=<name>` in the URL, a login when the page is launched with
`auth=`, or typed on the page), and sees one pair at a time: the dialogue as turns with roles, the two responses as
"Response 1" and "Response 2" (the study's display order: nothing says which system wrote which), and for each
aspect, with its definition, a choice of Response 1 / Response 2 / Equal. Keyboard: `1`, `2` and `3` (or `e`) answer
the first aspect still open, `Enter` saves and moves on, `Backspace` goes back one pair. Going back shows the saved
answers, which can be changed; a later visit resumes at the first pair not yet answered. Every answer is committed to
the study's SQLite store before the page moves on, and the page then says "Saved".

Dialogue and responses are shown as text: HTML in them is escaped, never rendered.

The page's API (`gradio_client.Client(url).predict(..., api_name=...)`) has three endpoints, which the page's own
buttons call: `/start` (annotator) -> the first open pair, `/save` (annotator, pair_id, one answer per aspect: "1",
"2" or "equal") -> the next open pair, `/previous` (annotator, pair_id) -> the pair before. Each returns the
annotator, the pair id, the progress line, the dialogue (HTML), Response 1, Response 2, the saved answer of each
aspect and a status line. With a login, the annotator is the logged-in user whatever the call says. With logins and
an administrator, `/export_answers` (the administrator only) returns the study's progress and a CSV of every
person's answers in the format `scripts/ab_test.py import` reads.

This module imports only `modeling_iamm` (absolute imports), so a Space can ship it as a single file.
"""

import html
import inspect
import logging
import os
import tempfile
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from modeling_iamm.ab_study import (
    Pair,
    Study,
    StudyError,
    check_annotator_name,
    export_answers_csv,
    status_text,
    study_status,
)

logger = logging.getLogger(__name__)

CHOICE_LABELS = (("Response 1", "1"), ("Response 2", "2"), ("Equal", "equal"))
"""The radio buttons of every aspect: what the page shows and the value it saves (in screen terms)."""

SHORTCUTS_HEAD = """<script>
// A/B study shortcuts: 1 / 2 / 3 (or e) answer the first aspect without an answer, Enter saves and moves on,
// Backspace goes back one pair. Ignored while typing in a text box.
document.addEventListener('keydown', (event) => {
  const target = event.target;
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  if (target && (target.tagName === 'TEXTAREA' || (target.tagName === 'INPUT' && target.type !== 'radio'))) return;
  const values = {'1': '1', '2': '2', '3': 'equal', 'e': 'equal', 'E': 'equal'};
  if (event.key in values) {
    const open = [...document.querySelectorAll('.ab-aspect')].find((group) => !group.querySelector('input:checked'));
    const input = open && open.querySelector(`input[value="${values[event.key]}"]`);
    if (input) { input.click(); event.preventDefault(); }
  } else if (event.key === 'Enter') {
    const save = document.querySelector('#save');
    if (save) { save.click(); event.preventDefault(); }
  } else if (event.key === 'Backspace') {
    const back = document.querySelector('#previous');
    if (back) { back.click(); event.preventDefault(); }
  }
});
</script>"""

PAGE_CSS = """
.ab-dialogue p { margin: 0.2em 0; }
.ab-dialogue .ab-role { font-weight: 600; }
.ab-dialogue .ab-situation { font-style: italic; margin-bottom: 0.6em; }
"""

ROLE_NAMES = {"speaker": "Speaker", "listener": "Listener"}


def dialogue_html(pair: Pair) -> str:
    """The dialogue of a pair as HTML, every text escaped (shown as written, never rendered)."""
    parts = ['<div class="ab-dialogue">']
    if pair.dialogue.situation.strip():
        parts.append(f'<p class="ab-situation"><span class="ab-role">Situation:</span> '
                     f'{html.escape(pair.dialogue.situation)}</p>')
    for role, turn in zip(pair.dialogue.roles, pair.dialogue.turns):
        name = ROLE_NAMES.get(role, html.escape(role.capitalize()))
        parts.append(f'<p class="ab-turn ab-{html.escape(role)}"><span class="ab-role">{name}:</span> '
                     f'{html.escape(turn)}</p>')
    parts.append("</div>")
    return "\n".join(parts)


class AnnotationSession:
    """What the page does for one annotator, in plain Python (the page's event handlers and API call these). Each
    call reads the annotator's order and answers once from the store, so several pages (and processes) can serve the
    same study."""

    def __init__(self, study: Study):
        self.study = study

    def _view(self, annotator: str, order: List[str], answers: Dict[str, Dict[str, str]], pair_id: Optional[str],
              status: str) -> Dict[str, Any]:
        done = len(self.study.complete(answers) & set(order))
        view: Dict[str, Any] = {"annotator": annotator, "pair_id": pair_id or "", "status": status,
                                "dialogue": "", "response_1": "", "response_2": "",
                                "answers": {a: None for a in self.study.aspect_names}}
        if pair_id is None:
            view["progress"] = (f"**{annotator}**: all {len(order)} pairs answered ({done} of {len(order)}). Thank "
                                "you! Press Previous to look at or change an answer.")
            view["dialogue"] = "<p>Nothing left to answer.</p>"
            return view
        pair = self.study.pair(pair_id)
        view["progress"] = (f"**{annotator}**: pair {order.index(pair_id) + 1} of {len(order)} · {done} of "
                            f"{len(order)} answered")
        view["dialogue"] = dialogue_html(pair)
        view["response_1"], view["response_2"] = pair.shown()
        saved = answers.get(pair_id, {})
        view["answers"] = {a: (pair.to_screen(saved[a]) if a in saved else None) for a in self.study.aspect_names}
        return view

    def _next_open(self, order: List[str], answers: Dict[str, Dict[str, str]],
                   after: Optional[str] = None) -> Optional[str]:
        """The first pair after `after` in `order` that is not complete, else the first open one from the start."""
        complete = self.study.complete(answers)
        start = order.index(after) + 1 if after in order else 0
        return next((p for p in order[start:] + order[:start] if p not in complete), None)

    def start(self, annotator: str) -> Dict[str, Any]:
        """Where an annotator (re)starts: the first pair they have not answered."""
        annotator = check_annotator_name(annotator)
        order, answers = self.study.order_for(annotator), self.study.answers_of(annotator)
        if not order:
            raise StudyError("this study has no pair to answer (every pair has identical responses)")
        return self._view(annotator, order, answers, self._next_open(order, answers), "")

    def save(self, annotator: str, pair_id: str, answers: Dict[str, Optional[str]]) -> Dict[str, Any]:
        """Save the answers of one pair (committed before returning), then show the next open pair."""
        annotator = check_annotator_name(annotator)
        order = self.study.order_for(annotator)
        if not pair_id:
            saved = self.study.answers_of(annotator)
            return self._view(annotator, order, saved, self._next_open(order, saved), "Nothing to save.")
        self.study.save_screen_answers(annotator, pair_id, {k: v for k, v in answers.items() if v})
        saved = self.study.answers_of(annotator)
        status = f"Saved pair {order.index(pair_id) + 1}." if pair_id in order else "Saved."
        return self._view(annotator, order, saved, self._next_open(order, saved, after=pair_id), status)

    def previous(self, annotator: str, pair_id: Optional[str]) -> Dict[str, Any]:
        """The pair before `pair_id` in the annotator's order (the last pair when they are done), with its saved
        answers."""
        annotator = check_annotator_name(annotator)
        order, answers = self.study.order_for(annotator), self.study.answers_of(annotator)
        if pair_id in order and order.index(pair_id) == 0:
            return self._view(annotator, order, answers, pair_id, "This is the first pair.")
        target = order[order.index(pair_id) - 1] if pair_id in order else (order[-1] if order else None)
        return self._view(annotator, order, answers, target, "")


def build_annotation_page(study: Union[str, os.PathLike, Study], title: Optional[str] = None,
                          login: bool = False, admin: Optional[str] = None, notice: Optional[str] = None):
    """The annotation page of a study (a `gr.Blocks`; call `.launch()` on it, with `auth=` for logins).

    Args:
        study: the study folder (or an opened :class:`Study`).
        title: the page's heading (default: a neutral question; the study's title names the systems, so it is not
            shown).
        login: True when the page is launched with `auth=`: the annotator is the logged-in user, and the name box is
            not offered.
        admin: with `login`, the user who also sees the study's progress and can download every person's answers
            as CSV (the format `scripts/ab_test.py import` reads): how answers collected on a Space come home.
        notice: a line shown at the top of the page (e.g. that answers are not stored permanently).

    Components the tests read: `#name` and `#start` (name box and button), `#progress`, `#dialogue`, `#response-1`,
    `#response-2`, `#aspect-<name>` (radio groups, class `ab-aspect`), `#previous`, `#save`, `#status`.
    """
    import gradio as gr

    study = study if isinstance(study, Study) else Study.open(os.fspath(study))
    session = AnnotationSession(study)
    aspects = study.aspects
    heading = title or "Which response is better?"

    def identity(given: str, request: Optional[gr.Request]) -> str:
        user = getattr(request, "username", None) if request is not None else None
        if user:
            if given and given.strip() and given.strip() != user:
                raise StudyError(f"you are logged in as {user!r}, not {given.strip()!r}")
            return user
        if login:
            raise StudyError("log in first")
        return given

    def render(view: Dict[str, Any]) -> List[Any]:
        return [view["annotator"], view["pair_id"], view["progress"], view["dialogue"], view["response_1"],
                view["response_2"], *[view["answers"][a.name] for a in aspects], view["status"]]

    def refused(error: Exception) -> List[Any]:
        gr.Warning(str(error))
        return [gr.update() for _ in range(6 + len(aspects))] + [f"**{html.escape(str(error), quote=False)}**"]

    def layout(annotator: str):
        """Once an annotator is known: their name fixed in its box, the pair shown (not part of the API)."""
        if not annotator:
            return gr.update(), gr.update(), gr.update()
        return gr.update(value=annotator, interactive=False), gr.update(visible=False), gr.update(visible=True)

    with warnings.catch_warnings():  # Gradio 6 prefers launch(css=..., head=...); the page carries its own
        warnings.filterwarnings("ignore", message="The parameters have been moved", category=UserWarning)
        blocks = gr.Blocks(title="A/B study", analytics_enabled=False, css=PAGE_CSS, head=SHORTCUTS_HEAD)
    with blocks as page:
        gr.Markdown(f"# {html.escape(heading)}\n"
                    "Read the dialogue, then compare the two responses a listener could give to its last turn. "
                    "For each aspect, choose the better response, or **Equal** when neither is better.\n\n"
                    + "\n".join(f"- **{html.escape(a.label)}**: {html.escape(a.definition)}" for a in aspects)
                    + "\n\nKeyboard: **1** / **2** / **3** (or **e**) answer the first open aspect, **Enter** saves "
                      "and moves on, **Backspace** goes back one pair.")
        if notice:
            gr.Markdown(f"**{html.escape(notice, quote=False)}**", elem_id="notice")
        with gr.Row():
            name_box = gr.Textbox(label="Your name", elem_id="name", scale=4, interactive=not login,
                                  placeholder="the name your answers are saved under")
            start_button = gr.Button("Start", elem_id="start", scale=1, visible=not login)
        annotator_box = gr.Textbox(visible=False, elem_id="annotator", label="Annotator")
        pair_box = gr.Textbox(visible=False, elem_id="pair-id", label="Pair id")
        with gr.Column(visible=False) as work:
            progress = gr.Markdown("", elem_id="progress", label="Progress")
            dialogue = gr.HTML("", elem_id="dialogue", label="Dialogue")
            with gr.Row():
                first = gr.Textbox(label="Response 1", elem_id="response-1", interactive=False, lines=3,
                                   placeholder="(an empty response)")
                second = gr.Textbox(label="Response 2", elem_id="response-2", interactive=False, lines=3,
                                    placeholder="(an empty response)")
            radios = [gr.Radio(list(CHOICE_LABELS), label=a.label, info=a.definition, elem_id=f"aspect-{a.name}",
                               elem_classes=["ab-aspect"]) for a in aspects]
            with gr.Row():
                back = gr.Button("← Previous", elem_id="previous")
                save = gr.Button("Save and next →", elem_id="save", variant="primary")
        status = gr.Markdown("", elem_id="status", label="Status")
        with gr.Column(visible=False) as admin_panel:
            gr.Markdown("### Study administration")
            refresh = gr.Button("Show progress and export every person's answers (CSV)", elem_id="export")
            progress_text = gr.Textbox(label="Progress", lines=6, interactive=False, elem_id="study-status")
            export_file = gr.File(label="Answers (pair_id, annotator, aspect, choice)", elem_id="answers-file")
        outputs = [annotator_box, pair_box, progress, dialogue, first, second, *radios, status]

        def start(annotator: str, request: gr.Request = None):
            try:
                return render(session.start(identity(annotator, request)))
            except StudyError as error:
                return refused(error)

        def on_load(request: gr.Request):
            user = getattr(request, "username", None)
            name = user or dict(request.query_params).get("annotator", "") if request is not None else ""
            if not name:
                return [gr.update() for _ in outputs]
            return start(name, request)

        def save_answers(*values):
            annotator, pair_id, *choices, request = values
            try:
                view = session.save(identity(annotator, request), pair_id,
                                    {a.name: c for a, c in zip(aspects, choices)})
            except StudyError as error:
                return refused(error)
            return render(view)

        # the API names each answer after its aspect, /save(annotator, pair_id, empathy, relevance, fluency), and
        # Gradio passes the request last (it reads both from the signature and the annotations)
        names = ("annotator", "pair_id", *(a.name for a in aspects))
        save_answers.__signature__ = inspect.Signature(
            [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names]
            + [inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None)])
        save_answers.__annotations__ = {**{n: str for n in names}, "request": gr.Request}

        def previous(annotator: str, pair_id: str, request: gr.Request = None):
            try:
                return render(session.previous(identity(annotator, request), pair_id or None))
            except StudyError as error:
                return refused(error)

        def administer(request: gr.Request = None):
            if not (login and admin and getattr(request, "username", None) == admin):
                raise gr.Error("only the study's administrator can export its answers")
            folder = tempfile.mkdtemp(prefix="ab-answers-")
            path = os.path.join(folder, "answers.csv")
            export_answers_csv(study, path)
            return status_text(study_status(study)), path

        def show_admin(request: gr.Request = None):
            return gr.update(visible=bool(login and admin and getattr(request, "username", None) == admin))

        show = dict(fn=layout, inputs=[annotator_box], outputs=[name_box, start_button, work],
                    api_visibility="private", queue=False)
        if login and admin:
            page.load(show_admin, None, admin_panel, api_visibility="private", queue=False)
            refresh.click(administer, None, [progress_text, export_file], api_name="export_answers")
        page.load(on_load, None, outputs, api_visibility="private", concurrency_limit=None).then(**show)
        start_button.click(start, [name_box], outputs, api_name="start", concurrency_limit=None).then(**show)
        name_box.submit(start, [name_box], outputs, api_visibility="private", concurrency_limit=None).then(**show)
        save.click(save_answers, [annotator_box, pair_box, *radios], outputs, api_name="save", concurrency_limit=None)
        back.click(previous, [annotator_box, pair_box], outputs, api_name="previous", concurrency_limit=None)
    return page


def parse_users(text: str, where: str) -> List[Tuple[str, str]]:
    """Logins from `name:password` lines (blank lines and `#` comments ignored); `where` names the source in errors."""
    users: List[Tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password = line.partition(":")
        if not sep or not name.strip() or not password:
            raise StudyError(f"{where}, line {number}: not a `name:password` line")
        users.append((check_annotator_name(name), password))
    if not users:
        raise StudyError(f"{where}: no `name:password` line")
    return users


def read_users(path: str) -> List[Tuple[str, str]]:
    """Logins for the page from a file of `name:password` lines."""
    with open(path, encoding="utf-8") as f:
        return parse_users(f.read(), path)


def launch_annotation_page(study: Union[str, os.PathLike, Study], host: str = "127.0.0.1", port: int = 7860,
                           users: Optional[Sequence[Tuple[str, str]]] = None, share: bool = False,
                           title: Optional[str] = None, block: bool = True, admin: Optional[str] = None):
    """Build and serve the page (logins when `users` is given); returns the page (`block=False`: at once)."""
    if admin and not any(name == admin for name, _ in users or ()):
        raise StudyError(f"the administrator {admin!r} must be one of the users who log in")
    page = build_annotation_page(study, title=title, login=bool(users), admin=admin)
    page.launch(server_name=host, server_port=port, share=share, auth=list(users) if users else None,
                prevent_thread_lock=not block, quiet=True, ssr_mode=False, show_error=False,
                max_threads=64)
    return page
