"""Publishing an IAMM checkpoint, a LoRA adapter, an instruction dataset or the demo Space to the Hub, in one commit.

Each push stages the publishable files with their card in a temporary folder and uploads it with
`HfApi.upload_folder`: one commit that adds or updates every staged file. The commit also writes
:data:`MANIFEST`, the record of the files this push wrote (with their content ids), and deletes only the
repository files that the previous push recorded there, unchanged since, and that this push no longer has. Every
other file (an ONNX export someone uploaded, a file another client changed, anything in a repository whose earlier
pushes predate the record) is kept and named, unless `delete_unmanaged` is set. Unchanged files are skipped (the Hub
compares object ids), so pushing twice changes nothing. The commit names the branch head it was planned on
(`parent_commit`), so it never lands on top of a commit it did not see (a retried commit whose first answer was
lost included).

Everything that can be checked locally (the folder, its files and links, the metrics file, the repository id, the
revision, the token) is checked before anything is uploaded, and each problem is one `PushError` line; files that
may hold secrets (`iamm.hub.folders.SECRET_FILES`) are never uploaded. A failed upload (an HTTP error, a dropped
connection, an unreachable server, a failed LFS or Xet transfer) is reported with the files the repository does not
hold afterwards, read back from the Hub: when a commit was applied but its answer was lost, the push says so and
succeeds. After the commit the repository is listed and compared with the staged folder. `dry_run` stages and
lists what a push would upload, delete and keep, and uploads nothing.
"""

import hashlib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError, RevisionNotFoundError
from huggingface_hub.utils import validate_repo_id
from huggingface_hub.utils.sha import git_hash

from .cards import build_adapter_card, build_dataset_card, build_model_card
from .folders import (
    NEVER_PUSH,
    IncompleteFolderError,
    adapter_base_model,
    adapter_training,
    check_adapter_folder,
    check_metrics,
    check_model_folder,
    copy_files,
    dataset_columns,
    dataset_splits,
    folder_files,
    read_json,
    split_counts,
    stage_adapter,
    stage_dataset,
    stage_model,
    write_json,
)

logger = logging.getLogger(__name__)

KINDS = ("model", "adapter", "dataset", "study", "space")

MANIFEST = ".iamm_push.json"
"""The record a push writes into the repository: its kind and, per file it wrote, the file's git blob id and sha256
(`{"iamm_push": 1, "kind": ..., "files": {path: {"git": ..., "sha256": ...}}}`). The next push deletes only files
listed there whose content is still the recorded one."""

_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\]")


def revision_problem(revision: str) -> Optional[str]:
    """Why `revision` cannot name a branch (git's `check-ref-format --branch` rules, which the Hub's branches
    follow), or None: no control characters, spaces or any of `~ ^ : ? * [ \\`; no `..`, `@{` or `//`; no part that
    starts with `.` or ends with `.lock`; not starting with `/` or `-`, not ending with `/` or `.`; not `@` or
    `HEAD`."""
    if not revision:
        return "it is empty"
    bad = sorted(set(_REF_FORBIDDEN.findall(revision)))
    if bad:
        return "it contains " + ", ".join(repr(c) for c in bad)
    for pattern in ("..", "@{", "//"):
        if pattern in revision:
            return f"it contains {pattern!r}"
    if revision.startswith(("/", "-")) or revision.endswith(("/", ".")):
        return "it starts with '/' or '-', or ends with '/' or '.'"
    if revision in ("@", "HEAD"):
        return f"{revision!r} is not a branch name"
    if any(part.startswith(".") or part.endswith(".lock") for part in revision.split("/")):
        return "a part of it starts with '.' or ends with '.lock'"
    return None


@dataclass
class PushArguments:
    """Where and how to publish a folder (the CLI's options, see `scripts/push_to_hub.py`).

    Args:
        kind: `model` (an IAMM checkpoint), `adapter` (a PEFT LoRA adapter), `dataset` (parquet splits), `study`
            (an A/B study of `scripts/ab_test.py`, published as a dataset) or `space` (the Gradio demo page for a
            published model, or the annotation page of a study).
        folder: the folder to publish (for `space`: a folder written by `iamm.hub.space.write_space`, or none with
            `space_model` / `space_study`).
        repo_id: the Hub repository, `namespace/name`.
        private: create the repository private (True) or public (False); None leaves it to the namespace's default
            (an existing repository keeps its visibility).
        revision: the branch to commit to; created from `main` when missing.
        commit_message: the commit's title (default: one naming the kind and folder).
        token: a Hub token with write access (default: the `HF_TOKEN` environment variable or the saved login).
        endpoint: the Hub URL (default: the `HF_ENDPOINT` environment variable, else huggingface.co).
        metrics_file: for `model`: the `metrics.json` that `scripts/evaluate.py` wrote (the card's results); its
            `manifest.json` must record the weights being pushed.
        eval_split: for `model`: the split of those metrics when `metrics.json` does not record it (it does since
            `scripts/evaluate.py` records `split`; a contradicting value is refused).
        instruction_format: for `adapter` without `lora_args.json`: the column it was trained on, `messages` (with
            associated words) or `plain_messages`.
        base_model: for `adapter`: the Hub id of its base weights, when `adapter_config.json` names a local folder.
        dataset_repo: for `adapter`: the Hub id of the instruction dataset it was trained on.
        space_model: for `space`: the Hub id of the model the page loads (the Space folder is written for it).
        space_study: for `space`: an A/B study folder; the Space serves its annotation page (with a copy of its store).
        anonymize_annotators: for `study`: publish people as `annotator-1`, `annotator-2`, ... (judges keep their
            model names).
        delete_unmanaged: also delete the repository files that this push does not have and that no earlier push
            of this package recorded as its own (the repository then mirrors the staged folder).
        dry_run: stage the folder, run every local check and list what the push would upload, delete and keep
            (reading the repository when it can); upload nothing.
    """

    kind: str = field(metadata={"help": "What to publish: model | adapter | dataset | study | space."})
    repo_id: str = field(metadata={"help": "The Hub repository, namespace/name."})
    folder: Optional[str] = field(default=None, metadata={"help": "The folder to publish (space: optional)."})
    private: Optional[bool] = field(default=None, metadata={
        "help": "Create the repository private (true) or public (false); default: the namespace's default."})
    revision: str = field(default="main", metadata={"help": "Branch to commit to (created from main if missing)."})
    commit_message: Optional[str] = field(default=None, metadata={"help": "Commit title."})
    token: Optional[str] = field(default=None, metadata={"help": "Hub token (default: env HF_TOKEN or saved login)."})
    endpoint: Optional[str] = field(default=None, metadata={"help": "Hub URL (default: env HF_ENDPOINT)."})
    metrics_file: Optional[str] = field(default=None, metadata={"help": "model: metrics.json of scripts/evaluate.py."})
    eval_split: Optional[str] = field(default=None, metadata={
        "help": "model: the metrics' split, when metrics.json does not record it."})
    instruction_format: Optional[str] = field(default=None, metadata={
        "help": "adapter without lora_args.json: messages (with associations) | plain_messages."})
    base_model: Optional[str] = field(default=None, metadata={
        "help": "adapter: Hub id of the base weights (needed when adapter_config.json names a local folder)."})
    dataset_repo: Optional[str] = field(default=None, metadata={"help": "adapter: Hub id of its training data."})
    space_model: Optional[str] = field(default=None, metadata={"help": "space: Hub id of the model the page loads."})
    space_study: Optional[str] = field(default=None, metadata={
        "help": "space: an A/B study folder (scripts/ab_test.py) whose annotation page the Space serves."})
    anonymize_annotators: bool = field(default=True, metadata={
        "help": "study: publish people as annotator-1, annotator-2, ... (false: under their names)."})
    delete_unmanaged: bool = field(default=False, metadata={
        "help": "Also delete repository files that earlier pushes of this package did not write (default: keep "
                "them)."})
    dry_run: bool = field(default=False, metadata={
        "help": "List what the push would upload, delete and keep; upload nothing."})

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        for flag, value in (("--repo_id", self.repo_id), ("--base_model", self.base_model),
                            ("--dataset_repo", self.dataset_repo), ("--space_model", self.space_model)):
            if value is None:
                continue
            try:
                validate_repo_id(value)
                ok = value.count("/") == 1
            except HFValidationError:
                ok = False
            if not ok:
                raise ValueError(f"{flag} must be a Hub id namespace/name (letters, digits, '-', '_', '.'), "
                                 f"got {value!r}")
        problem = revision_problem(self.revision)
        if problem:
            raise ValueError(f"--revision {self.revision!r} is not a valid branch name: {problem}")
        if self.kind == "space":
            if sum(map(bool, (self.folder, self.space_model, self.space_study))) != 1:
                raise ValueError("--kind space needs one of --space_model (the Hub id of the model the demo loads), "
                                 "--space_study (an A/B study whose annotation page it serves) or --folder (a Space "
                                 "folder written by iamm.hub.space)")
            if self.space_study and not os.path.isdir(self.space_study):
                raise ValueError(f"--space_study {self.space_study} does not exist or is not a folder")
        elif not self.folder:
            raise ValueError(f"--kind {self.kind} needs --folder")
        if self.folder and not os.path.isdir(self.folder):
            raise ValueError(f"--folder {self.folder} does not exist or is not a folder")
        if self.metrics_file is not None and not os.path.isfile(self.metrics_file):
            raise ValueError(f"--metrics_file {self.metrics_file} does not exist: pass the metrics.json that "
                             "scripts/evaluate.py wrote, or leave it out")
        if self.eval_split is not None and self.metrics_file is None:
            raise ValueError("--eval_split needs --metrics_file (it says which split those metrics are on)")
        misplaced = [flag for flag, value, kind in (
            ("--metrics_file", self.metrics_file, "model"), ("--eval_split", self.eval_split, "model"),
            ("--instruction_format", self.instruction_format, "adapter"), ("--base_model", self.base_model, "adapter"),
            ("--dataset_repo", self.dataset_repo, "adapter"), ("--space_model", self.space_model, "space"),
            ("--space_study", self.space_study, "space"),
        ) if value is not None and self.kind != kind]
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} do(es) not apply to --kind {self.kind}")

    @property
    def repo_type(self) -> str:
        return {"dataset": "dataset", "study": "dataset", "space": "space"}.get(self.kind, "model")

    @property
    def source(self) -> str:
        """What is published, for messages: the folder, or the model or study a Space is written for."""
        return self.folder or self.space_model or self.space_study


class PushError(RuntimeError):
    """A push that did not complete, or could not start; the message says why and what to do."""


def describe(error: BaseException) -> str:
    """An exception as one line: its type and first line (HTTP errors: status and the server's message)."""
    text = " ".join(str(error).split()) or repr(error)
    return f"{type(error).__name__}: {text[:400]}"


def _staged_paths(folder: str) -> List[str]:
    """The repository paths of the files of `folder`."""
    return [os.path.relpath(os.path.join(root, name), folder).replace(os.sep, "/")
            for root, _, names in os.walk(folder) for name in names]


def _local_hashes(folder: str, paths: Optional[List[str]] = None) -> Dict[str, Dict[str, str]]:
    """Per file of `folder` (repository paths; `paths`: only these): its git blob id (`git`) and sha256 (`sha256`),
    the ids the Hub reports for regular and for LFS/Xet files."""
    if paths is None:
        paths = _staged_paths(folder)
    hashes = {}
    for path in paths:
        with open(os.path.join(folder, *path.split("/")), "rb") as f:
            data = f.read()
        hashes[path] = {"git": git_hash(data), "sha256": hashlib.sha256(data).hexdigest()}
    return hashes


def remote_files(api: HfApi, repo_id: str, repo_type: str, revision: str) -> Dict[str, Dict[str, str]]:
    """The repository's files with the id that identifies their content: `{"sha256": ...}` for LFS/Xet files,
    `{"git": blob id}` for regular ones."""
    remote = {}
    for entry in api.list_repo_tree(repo_id, repo_type=repo_type, revision=revision, recursive=True):
        if getattr(entry, "size", None) is not None:  # files only
            lfs = getattr(entry, "lfs", None)
            remote[entry.path] = {"sha256": lfs.sha256} if lfs else {"git": entry.blob_id}
    return remote


def compare_with_repo(api: HfApi, repo_id: str, repo_type: str, revision: str,
                      local: Dict[str, Dict[str, str]]) -> Dict[str, List[str]]:
    """Files of the staged folder (`local`: its `_local_hashes`) that the repository lacks or holds with other
    content (`missing`), and repository files that are not in it (`extra`, `.gitattributes` aside)."""
    remote = remote_files(api, repo_id, repo_type, revision)
    missing = sorted(p for p in local if p not in remote or not _same(remote[p], local[p]))
    extra = sorted(p for p in remote if p not in local and p != ".gitattributes")
    return {"missing": missing, "extra": extra}


def check_token(api: HfApi, args: PushArguments) -> str:
    """The user the token belongs to; a `PushError` without a token, with a refused one, or when the Hub cannot be
    reached (nothing has been uploaded at this point)."""
    where = api.endpoint
    if not (args.token or get_token()):
        raise PushError("no Hub token: set HF_TOKEN to a token with write access (https://huggingface.co/settings/"
                        "tokens) or pass --token; nothing was uploaded")
    try:
        return api.whoami()["name"]
    except HfHubHTTPError as e:
        status = getattr(e.response, "status_code", None)
        if status in (401, 403):
            raise PushError(f"the Hub at {where} refused the token ({status}): set HF_TOKEN or --token to a valid "
                            "token with write access; nothing was uploaded") from None
        raise PushError(f"the Hub at {where} did not accept the token check ({describe(e)}); nothing was "
                        "uploaded") from None
    except Exception as e:  # connection refused, DNS, TLS, timeouts: httpx errors and OSError
        raise PushError(f"could not reach the Hub at {where} ({describe(e)}); check the network or HF_ENDPOINT; "
                        "nothing was uploaded") from None


def _same(remote: Dict[str, str], ids: Dict[str, str]) -> bool:
    """Whether a repository file (`remote_files` entry) has the content of a local or recorded file (its ids)."""
    kind, value = next(iter(remote.items()))
    return ids.get(kind) == value


def with_manifest(staging: str, kind: str, local: Dict[str, Dict[str, str]]) -> Dict[str, Dict[str, str]]:
    """Write :data:`MANIFEST` into `staging`, recording the staged files (`local`: their ids); returns `local` with
    the manifest's own ids. The record holds no time, so pushing the same folder again writes the same bytes."""
    path = os.path.join(staging, MANIFEST)
    write_json(path, {"iamm_push": 1, "kind": kind, "files": {p: local[p] for p in sorted(local) if p != MANIFEST}})
    return dict(local, **_local_hashes(staging, [MANIFEST]))


def read_manifest(api: HfApi, args: PushArguments, revision: str) -> Dict[str, Any]:
    """The repository's :data:`MANIFEST` at `revision`: `{"kind", "files"}`, or `{"problem": why}` when it cannot be
    used (unreadable, not a record of this package)."""
    with tempfile.TemporaryDirectory(prefix="iamm-manifest-") as cache:
        try:
            path = api.hf_hub_download(args.repo_id, MANIFEST, repo_type=args.repo_type, revision=revision,
                                       cache_dir=cache)
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
        except Exception as e:  # an HTTP error, a dropped connection, not JSON
            return {"problem": f"{MANIFEST} could not be read ({describe(e)})"}
    files = record.get("files") if isinstance(record, dict) else None
    if not (isinstance(files, dict) and record.get("kind") in KINDS
            and all(isinstance(ids, dict) for ids in files.values())):
        return {"problem": f"{MANIFEST} is not a record of this package's pushes"}
    return {"kind": record["kind"], "files": files}


def _a(kind: str) -> str:
    return f"{'an' if kind == 'adapter' else 'a'} {kind}"


KEPT_WITHOUT_RECORD = ("the repository holds no record of earlier pushes of this package ({}): files they may have "
                       "written are kept too")
KEPT_NOT_OURS = "not written by an earlier push of this package"
KEPT_CHANGED = "changed since this package pushed them"


def plan_deletions(api: HfApi, args: PushArguments, local: Dict[str, Dict[str, str]],
                   revision: str) -> Dict[str, Any]:
    """Repository files at `revision` that the staged folder (`local`) does not have: `delete` (recorded in the
    previous push's :data:`MANIFEST` and unchanged since, or all with `delete_unmanaged`) and `keep` (the others),
    with `why` each kept group is kept. Never by name: a file another client added under a name this package also
    writes is kept. An absent repository or branch has none. A repository of another kind is refused."""
    empty: Dict[str, Any] = {"delete": [], "keep": [], "why": {}}
    try:
        remote = remote_files(api, args.repo_id, args.repo_type, revision)
    except HfHubHTTPError as e:
        if getattr(e.response, "status_code", None) == 404:
            return empty
        raise
    manifest = read_manifest(api, args, revision) if MANIFEST in remote else {"problem": f"no {MANIFEST}"}
    recorded_kind = manifest.get("kind")
    if recorded_kind and recorded_kind != args.kind:
        raise PushError(f"{args.repo_id} holds {_a(recorded_kind)} ({MANIFEST} records {_a(recorded_kind)} push), "
                        f"not {_a(args.kind)}: check --repo_id and --kind; nothing was uploaded")
    other = {"model": ("adapter_config.json", "adapter"), "adapter": ("config.json", "model")}.get(args.kind)
    if recorded_kind is None and other and other[0] in remote and other[0] not in local:  # pushed before the record
        raise PushError(f"{args.repo_id} holds {_a(other[1])} ({other[0]}), not {_a(args.kind)}: check --repo_id and "
                        "--kind; nothing was uploaded")
    stale = sorted(p for p in remote if p not in local and p != ".gitattributes")
    if args.delete_unmanaged:
        return {"delete": stale, "keep": [], "why": {}}
    recorded = manifest.get("files") or {}
    why: Dict[str, List[str]] = {}
    delete = []
    for path in stale:
        if path in recorded and _same(remote[path], recorded[path]):
            delete.append(path)
            continue
        if "files" in manifest:
            reason = KEPT_CHANGED if path in recorded else KEPT_NOT_OURS
        else:
            reason = KEPT_WITHOUT_RECORD.format(manifest["problem"])
        why.setdefault(reason, []).append(path)
    return {"delete": delete, "keep": [p for p in stale if p not in delete], "why": why}


def _escape(path: str) -> str:
    """A path as an fnmatch pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def _kept_notes(plan: Dict[str, Any]) -> List[str]:
    """One sentence per reason files were kept."""
    return [f"kept {', '.join(paths)}: {reason} (--delete_unmanaged true deletes them)"
            for reason, paths in plan["why"].items()]


def upload(args: PushArguments, staging: str) -> Dict[str, Any]:
    """Create the repository (and branch) if needed, upload `staging` (with :data:`MANIFEST`) as one commit on top of
    the branch head the deletions were planned on, verify. Returns the commit id, the files of the push, the
    stale files deleted, the others kept and why."""
    api = HfApi(endpoint=args.endpoint, token=args.token)
    local = with_manifest(staging, args.kind, _local_hashes(staging))  # read once: every comparison uses it
    files = sorted(local)
    check_token(api, args)
    message = args.commit_message or f"Upload IAMM {args.kind} from {os.path.basename(os.path.abspath(args.source))}"
    where = f"{args.repo_id} ({args.repo_type}, revision {args.revision})"
    try:
        api.create_repo(args.repo_id, repo_type=args.repo_type, private=args.private, exist_ok=True,
                        space_sdk="gradio" if args.kind == "space" else None)
        if args.revision != "main":
            api.create_branch(args.repo_id, repo_type=args.repo_type, branch=args.revision, exist_ok=True)
        head_before = api.repo_info(args.repo_id, repo_type=args.repo_type, revision=args.revision).sha
        stale = plan_deletions(api, args, local, head_before)
    except PushError:
        raise
    except Exception as e:
        raise PushError(f"pushing {args.source} to {where} failed before any file was sent: "
                        f"{describe(e)}. No file of this push was committed; run the same command again.") from e
    try:
        info = api.upload_folder(
            repo_id=args.repo_id, repo_type=args.repo_type, folder_path=staging, revision=args.revision,
            commit_message=message, ignore_patterns=list(NEVER_PUSH),  # (upload_folder extends the list it gets)
            delete_patterns=[_escape(p) for p in stale["delete"]] or None,
            parent_commit=head_before,  # refused (412) if the branch moved: a retried commit is never applied twice
        )
        commit = info.oid
    except Exception as e:  # HTTP errors, dropped connections, LFS/Xet transfer failures: read back what is there
        commit = _after_failure(api, args, local, stale, e, where, head_before)
    try:
        diff = compare_with_repo(api, args.repo_id, args.repo_type, args.revision, local)
    except Exception as e:
        raise PushError(f"commit {commit} was made to {where}, but listing the repository to check it failed "
                        f"({describe(e)}); run the same command again to check (it commits nothing if all is there)"
                        ) from e
    leftover = [p for p in diff["extra"] if p not in stale["keep"]]
    if diff["missing"] or leftover:
        raise PushError(f"{args.repo_id}@{args.revision} does not match the pushed folder after commit {commit}: "
                        f"missing or different {diff['missing']}, not deleted {leftover}; push again")
    notes = _kept_notes(stale)
    for note in notes:
        logger.warning("%s: %s", args.repo_id, note)
    return {"commit": commit, "files": files, "deleted": stale["delete"], "kept": stale["keep"], "notes": notes}


def dry_run(args: PushArguments, staging: str) -> Dict[str, Any]:
    """What `upload` would do with `staging`, without writing anything: the files it would upload (with their
    sizes), and, when the repository can be read (no token needed for a public one), what it would delete and
    keep."""
    # which files, not their content: deletions are decided by the paths and the repository's record (no hashing)
    local = {path: {} for path in [*_staged_paths(staging), MANIFEST]}
    upload_list = [{"path": p, "bytes": None if p == MANIFEST else os.path.getsize(os.path.join(staging, *p.split("/")))}
                   for p in sorted(local)]  # (the record is written when the push hashes the files)
    plan: Dict[str, Any] = {"delete": [], "keep": [], "why": {}}
    api = HfApi(endpoint=args.endpoint, token=args.token)
    try:
        try:
            head = api.repo_info(args.repo_id, repo_type=args.repo_type, revision=args.revision).sha
            repository = f"read at commit {head} of {args.revision}"
        except RevisionNotFoundError:
            head = api.repo_info(args.repo_id, repo_type=args.repo_type, revision="main").sha
            repository = f"branch {args.revision} does not exist yet: the push would create it from main ({head})"
        plan = plan_deletions(api, args, local, head)
    except RepositoryNotFoundError:
        repository = "does not exist (or is not visible with this token): the push would create it"
    except PushError:
        raise
    except Exception as e:  # no network, offline mode, a refused token
        repository = (f"not read ({describe(e)}): what the push would delete is decided when it runs, from the "
                      f"repository's {MANIFEST}")
    for entry in upload_list:
        logger.info("would upload %s (%s bytes)", entry["path"], "?" if entry["bytes"] is None else entry["bytes"])
    for path in plan["delete"]:
        logger.info("would delete %s", path)
    return {"dry_run": True, "upload": upload_list, "delete": plan["delete"], "keep": plan["keep"],
            "notes": _kept_notes(plan), "repository": repository}


def _after_failure(api: HfApi, args: PushArguments, local: Dict[str, Dict[str, str]], stale: Dict[str, List[str]],
                   error: Exception, where: str, head_before: str) -> str:
    """After a failed `upload_folder`: the commit id when the repository holds the push anyway (the server applied
    the commit and its answer was lost), else a `PushError` naming the files the repository does not hold."""
    try:
        diff = compare_with_repo(api, args.repo_id, args.repo_type, args.revision, local)
        head = api.repo_info(args.repo_id, repo_type=args.repo_type, revision=args.revision).sha
    except Exception as e:
        raise PushError(
            f"pushing {args.source} to {where} failed: {describe(error)}; reading the repository "
            f"back failed too ({describe(e)}), so whether the commit landed is unknown. The files of this push: "
            f"{', '.join(sorted(local))}. Run the same command again (it commits only what is missing or different)."
        ) from error
    not_deleted = [p for p in diff["extra"] if p in stale["delete"]]
    missing = [p for p in diff["missing"] if p != MANIFEST] or diff["missing"]  # the record only if nothing else
    if not diff["missing"] and not not_deleted:
        if head != head_before:
            logger.warning("the Hub's answer to the commit was lost (%s), but %s now holds every file of this push "
                           "(commit %s)", describe(error), where, head)
        else:
            logger.warning("the upload failed (%s), but %s already held every file of this push (commit %s)",
                           describe(error), where, head)
        return head
    raise PushError(
        f"pushing {args.source} to {where} failed: {describe(error)}. The repository does not "
        f"hold these files of this push (or holds other versions): {', '.join(missing) or 'none'}"
        + (f"; stale files not deleted: {', '.join(not_deleted)}" if not_deleted else "")
        + ". Run the same command again to complete it."
    ) from error


def stage(args: PushArguments, staging: str) -> List[str]:
    """Check the folder for its kind and write the publishable files and the card into `staging` (every local
    problem is raised here, as `IncompleteFolderError`, before anything goes over the network). Returns the files
    left out because they may hold secrets (`iamm.hub.folders.SECRET_FILES`)."""
    left_out: List[str] = []
    if args.kind == "model":
        config = check_model_folder(args.folder)
        metrics = check_metrics(args.metrics_file, args.folder, args.eval_split) if args.metrics_file else None
        config = stage_model(args.folder, staging, config)
        summary_path = os.path.join(args.folder, "train_summary.json")
        summary = read_json(summary_path) if os.path.exists(summary_path) else {}
        card = build_model_card(args.repo_id, config, summary, metrics, args.revision)
    elif args.kind == "adapter":
        adapter_config = check_adapter_folder(args.folder)
        training = adapter_training(args.folder, args.instruction_format)
        base = adapter_base_model(args.folder, adapter_config, args.base_model)
        stage_adapter(args.folder, staging, base["hub_id"], args.dataset_repo)
        card = build_adapter_card(args.repo_id, adapter_config, training, base, args.dataset_repo, args.revision)
    elif args.kind == "dataset":
        splits = dataset_splits(args.folder)
        columns = dataset_columns(args.folder)
        build_info = stage_dataset(args.folder, staging)
        card = build_dataset_card(args.repo_id, split_counts(args.folder), splits, columns, build_info)
    elif args.kind == "study":
        from .study import stage_study

        card = stage_study(args.folder, staging, args.repo_id, args.anonymize_annotators)
    else:
        from .space import check_space_folder, write_annotation_space, write_space

        if args.space_model:
            write_space(args.space_model, staging)
        elif args.space_study:
            write_annotation_space(args.space_study, staging)
        else:
            check_space_folder(args.folder)
            files, left_out = folder_files(args.folder)
            copy_files(args.folder, staging, files)
        card = None  # the Space's README.md (its front matter) is its card
    if card is not None:
        card.save(os.path.join(staging, "README.md"))
    if left_out:
        logger.warning("left out %d file(s) that may hold secrets (never uploaded): %s", len(left_out),
                       ", ".join(left_out))
    return left_out


def push(args: PushArguments) -> Dict[str, Any]:
    """Publish `args.folder` to `args.repo_id`; returns the commit id, the files the repository now holds from this
    push, the stale files deleted, the others kept (with `notes` saying why) and the files `left_out` as possible
    secrets. With `args.dry_run`, what it would upload, delete and keep instead (nothing is uploaded). Raises
    `PushError` (or `IncompleteFolderError` for a folder that cannot be published) with a one-line message."""
    with tempfile.TemporaryDirectory(prefix="iamm-push-") as staging:
        left_out = stage(args, staging)
        if args.dry_run:
            return {"repo_id": args.repo_id, "repo_type": args.repo_type, "revision": args.revision,
                    **dry_run(args, staging), "left_out": left_out}
        result = upload(args, staging)
    logger.info("%s@%s is at commit %s with %d files of this push", args.repo_id, args.revision, result["commit"],
                len(result["files"]))
    return {"repo_id": args.repo_id, "repo_type": args.repo_type, "revision": args.revision, **result,
            "left_out": left_out}
