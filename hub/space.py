"""Write a Hugging Face Space (Gradio SDK) folder that serves the IAMM demo page for a Hub model.

    from iamm.hub.space import write_space
    write_space("user/iamm-ed", "space/")

or write and publish it in one step: `python scripts/push_to_hub.py --kind space --space_model user/iamm-ed
--repo_id user/iamm-demo` (`hf upload user/iamm-demo space/ --repo-type space` also publishes a written folder).

The folder holds `app.py` (builds :func:`iamm.hub.demo.build_demo` for the model id and launches it), a
`requirements.txt` with the version ranges this package declares (no exact pins), a `README.md` whose YAML front
matter tells the Hub to run `app.py` with Gradio (`sdk_version`: the Gradio version the page was tested with, as
the Hub requires one), and, unless `package_requirement` names an installable `iamm`, the code
the page needs: the `modeling_iamm` package (with the bundled EmpatheticDialogues sample for the examples) and the
page module as `iamm_demo.py`.
"""

import os
import shutil
from importlib import metadata
from typing import Dict, List, Optional, Tuple

import modeling_iamm

SPACE_REQUIREMENTS = ("torch", "transformers", "tokenizers", "datasets", "safetensors", "accelerate", "evaluate",
                      "tqdm", "pyyaml", "pyarrow", "gradio", "matplotlib")
"""Distributions the Space installs (the vendored `modeling_iamm` imports, the page, its heat map)."""

APP_TEMPLATE = '''"""IAMM demo Space: emotion, response and associated words for {model_id}."""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

{import_line}

MODEL_ID = {model_id!r}

demo = build_demo(MODEL_ID)

if __name__ == "__main__":
    demo.launch()
'''

README_TEMPLATE = """---
title: {title}
emoji: 💬
colorFrom: indigo
colorTo: pink
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false
license: {license}
models:
  - {model_id}
---

# {title}

An interactive demo of IAMM ("An Iterative Associative Memory Model for Empathetic Response Generation",
Yang et al., ACL 2024) with the model [{model_id}](https://huggingface.co/{model_id}).

Type a dialogue (one utterance per line, the last one the speaker's) and, optionally, the speaker's situation, or
pick an EmpatheticDialogues example (without a situation the emotion is predicted without the situation head). The page shows the predicted emotion (one of 32), the probabilities of each emotion
head (context, situation, memory and, for models trained with commonsense knowledge, knowledge), the listener's
response (greedy, beam search or sampling) and the words the model associated: the dialogue coloured by association
weight and a heat map of keywords against their associated words.

The examples come from the EmpatheticDialogues sample bundled with `modeling_iamm` (CC BY-NC 4.0).
"""


def _version(distribution: str) -> Optional[str]:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _declared_requirements() -> Dict[str, str]:
    """This package's declared requirements (setup.cfg's install_requires and extras), by distribution name."""
    import re

    declared: Dict[str, str] = {}
    try:
        lines = metadata.requires("iamm") or []
    except metadata.PackageNotFoundError:
        return declared
    for line in lines:
        requirement = line.split(";")[0].strip()
        name = re.split(r"[<>=!~ \[]", requirement, maxsplit=1)[0].lower()
        declared.setdefault(name, requirement)
    return declared


def _declared_floor(name: str, default: str) -> str:
    """The lower bound this package declares for `name` (`gradio>=6.0` -> `6.0`), else `default`."""
    import re

    match = re.search(r">=\s*([0-9][0-9.]*)", _declared_requirements().get(name, ""))
    return match.group(1) if match else default


def space_requirements(package_requirement: Optional[str] = None) -> List[str]:
    """`requirements.txt` lines: each of :data:`SPACE_REQUIREMENTS` with the version range this package declares
    (not this machine's exact versions, which a Space's platform may not have), plus `package_requirement` when the
    Space installs `iamm` instead of shipping its code."""
    declared = _declared_requirements()
    lines = [declared.get(name, name) for name in SPACE_REQUIREMENTS]
    if package_requirement:
        lines.append(package_requirement)
    return lines


def check_space_folder(folder: str) -> None:
    """Refuse (`ValueError`) a folder that is not a Space written by :func:`write_space`."""
    missing = [name for name in ("app.py", "README.md", "requirements.txt") if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise ValueError(f"{folder} is not a Space folder (missing {', '.join(missing)}): write one with "
                         "iamm.hub.space.write_space, or push with --space_model <model id> instead of --folder")
    with open(os.path.join(folder, "README.md"), encoding="utf-8") as f:
        head = f.read(2000)
    if not head.startswith("---") or "sdk:" not in head.split("---")[1]:
        raise ValueError(f"{folder}/README.md has no Space front matter (sdk, app_file): rewrite the folder with "
                         "iamm.hub.space.write_space")


def _copy_package(destination: str) -> List[str]:
    """Copy `modeling_iamm` (Python files, metric scripts, the bundled ED sample's valid split) into `destination`."""
    source = os.path.dirname(os.path.abspath(modeling_iamm.__file__))
    written = []
    for folder, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        relative = os.path.relpath(folder, source)
        for name in files:
            keep = name.endswith(".py") or (relative == "sample_data" and name in ("valid.jsonl.gz", "README.md"))
            if not keep:
                continue
            target = os.path.join(destination, "modeling_iamm", relative, name)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            shutil.copyfile(os.path.join(folder, name), target)
            written.append(os.path.relpath(target, destination))
    return sorted(written)


def _ship_page(output_dir: str, module: str, names: str, package_requirement: Optional[str]) -> Tuple[str, List[str]]:
    """The import line of `app.py` for a page module of `iamm.hub` (`module`, importing `names`), and the files it
    needs in the Space: none when `package_requirement` installs `iamm`, else the module as `iamm_<module>.py` and
    the `modeling_iamm` package."""
    if package_requirement:
        return f"from iamm.hub.{module} import {names}", []
    shutil.copyfile(os.path.join(os.path.dirname(os.path.abspath(__file__)), f"{module}.py"),
                    os.path.join(output_dir, f"iamm_{module}.py"))
    return f"from iamm_{module} import {names}", [f"iamm_{module}.py", *_copy_package(output_dir)]


def _write_texts(output_dir: str, contents: Dict[str, str]) -> List[str]:
    for name, text in contents.items():
        with open(os.path.join(output_dir, name), "w", encoding="utf-8") as f:
            f.write(text)
    return list(contents)


def _gradio_version() -> str:
    """The `sdk_version` of a Space's front matter: the Gradio the page was tested with."""
    return _version("gradio") or _declared_floor("gradio", "6.0.0")


def write_space(model_id: str, output_dir: str, title: str = "IAMM empathetic dialogue demo",
                package_requirement: Optional[str] = None, license: str = "cc-by-nc-4.0") -> Dict[str, List[str]]:
    """Write a Gradio Space for `model_id` into `output_dir` (created; existing files of the same names replaced).

    Args:
        model_id: the Hub id (or, for a local trial, a folder) the Space's `app.py` loads.
        output_dir: the Space folder to write.
        title: the Space's title (README front matter and heading).
        package_requirement: a pip requirement that installs this package (e.g. `"iamm @ git+https://..."`);
            None ships the code in the folder instead (`modeling_iamm/` and `iamm_demo.py`).
        license: the Space's license (the examples are EmpatheticDialogues text, CC BY-NC 4.0).

    Returns:
        `{"files": [...]}`, the written paths relative to `output_dir`.
    """
    if not model_id or not model_id.strip():
        raise ValueError("write_space needs the model id the Space should load (e.g. 'user/iamm-ed')")
    os.makedirs(output_dir, exist_ok=True)
    import_line, files = _ship_page(output_dir, "demo", "build_demo", package_requirement)
    files += _write_texts(output_dir, {
        "app.py": APP_TEMPLATE.format(model_id=model_id, import_line=import_line),
        "requirements.txt": "\n".join(space_requirements(package_requirement)) + "\n",
        "README.md": README_TEMPLATE.format(title=title, model_id=model_id, license=license,
                                            gradio_version=_gradio_version()),
    })
    return {"files": sorted(files)}


# ---- the annotation page of an A/B study -------------------------------------------------------------------------
ANNOTATION_APP_TEMPLATE = '''"""A/B annotation Space: annotators compare two responses to the same dialogue (the study in study/)."""

import os
import shutil

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

{import_line}

STUDY = "study"
PERSISTENT = "/data"  # the Space's persistent storage, when one is attached (Settings > Persistent storage)
if os.path.isdir(PERSISTENT) and os.access(PERSISTENT, os.W_OK):
    stored = os.path.join(PERSISTENT, "ab-study")
    if not os.path.exists(os.path.join(stored, "study.sqlite")):  # first start: the store as pushed
        shutil.copytree(STUDY, stored, dirs_exist_ok=True)
    STUDY, NOTICE = stored, None
else:
    NOTICE = ("This Space has no persistent storage: answers are lost when it restarts. Attach persistent storage "
              "before annotating.")
# Secrets: AB_USERS holds `name:password` lines (annotators log in), AB_ADMIN the user who may export the answers.
USERS = parse_users(os.environ["AB_USERS"], "the AB_USERS secret") if os.environ.get("AB_USERS") else None
ADMIN = os.environ.get("AB_ADMIN") if USERS else None

demo = build_annotation_page(STUDY, login=bool(USERS), admin=ADMIN, notice=NOTICE)

if __name__ == "__main__":
    demo.launch(auth=USERS)
'''

ANNOTATION_README_TEMPLATE = """---
title: {title}
emoji: ⚖️
colorFrom: indigo
colorTo: pink
sdk: gradio
sdk_version: {gradio_version}
app_file: app.py
pinned: false
license: {license}
---

# {title}

An A/B annotation page: for each dialogue, compare two responses a listener could give and say, per aspect, which
is better or that neither is. Annotators see "Response 1" and "Response 2", never which system wrote which.

For the owner of the Space:

- attach persistent storage (its `/data` keeps the answers across restarts; without it the page says that answers
  are lost when the Space restarts);
- set the secret `AB_USERS` to `name:password` lines, one per annotator (without it, annotators open the page with
  `?annotator=<name>` and anyone with the link can answer), and `AB_ADMIN` to one of those names: that user sees the
  progress and downloads every answer as CSV, which `python scripts/ab_test.py import --study <study> --file
  answers.csv` adds to the local study for its report.

The dialogues come from EmpatheticDialogues (CC BY-NC 4.0).
"""


def write_annotation_space(study_folder: str, output_dir: str, title: str = "Which response is better?",
                           package_requirement: Optional[str] = None,
                           license: str = "cc-by-nc-4.0") -> Dict[str, List[str]]:
    """Write a Gradio Space serving the annotation page of the A/B study in `study_folder` (a consistent copy of its
    store goes to `study/study.sqlite`; publish it with `scripts/push_to_hub.py --kind space --folder
    <output_dir>`). Like :func:`write_space`, the code is shipped (`modeling_iamm/`, `iamm_annotation.py`) unless
    `package_requirement` names an installable `iamm`. Returns `{"files": [...]}`."""
    from modeling_iamm.ab_study import STORE_NAME, Study, copy_store

    study = Study.open(study_folder)
    os.makedirs(output_dir, exist_ok=True)
    import_line, files = _ship_page(output_dir, "annotation", "build_annotation_page, parse_users",
                                    package_requirement)
    stored = os.path.join(output_dir, "study", STORE_NAME)
    for leftover in (stored, stored + "-wal", stored + "-shm"):  # a folder written before: the study as it is now
        if os.path.exists(leftover):
            os.remove(leftover)
    copy_store(study, os.path.join(output_dir, "study"))
    files.append(f"study/{STORE_NAME}")
    files += _write_texts(output_dir, {
        "app.py": ANNOTATION_APP_TEMPLATE.format(import_line=import_line),
        "requirements.txt": "\n".join(space_requirements(package_requirement)) + "\n",
        "README.md": ANNOTATION_README_TEMPLATE.format(title=title, license=license, gradio_version=_gradio_version()),
    })
    return {"files": sorted(files)}
