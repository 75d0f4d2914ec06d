"""Publishing an IAMM checkpoint, a LoRA adapter, an instruction dataset or the demo Space to the Hub, in one commit.

Each push stages the publishable files with their card in a temporary folder and uploads it with
`HfApi.upload_folder`: one commit that adds or updates every staged file and deletes the repository files that an
earlier push of the same kind made and this one no longer has (`iamm.hub.folders.MANAGED_FILES`). Files outside
that set (an ONNX export someone uploaded) are kept unless `delete_unmanaged` is set. Unchanged files are skipped
(the Hub compares object ids), so pushing twice changes nothing.

Everything that can be checked locally (the folder, the metrics file, the repository id, the token) is checked
before anything is uploaded, and each problem is one `PushError` line. A failed upload (an HTTP error, a dropped
connection, an unreachable server, a failed LFS or Xet transfer) is reported with the files the repository does not
hold afterwards, read back from the Hub: when a commit was applied but its answer was lost, the push says so and
succeeds. After the commit the repository is listed and compared with the staged folder.
"""

import hashlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from huggingface_hub import HfApi, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError
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
    dataset_columns,
    dataset_splits,
    is_managed,
    read_json,
    split_counts,
    stage_adapter,
    stage_dataset,
    stage_model,
)

logger = logging.getLogger(__name__)

KINDS = ("model", "adapter", "dataset", "space")


@dataclass
class PushArguments:
    """Where and how to publish a folder (the CLI's options, see `scripts/push_to_hub.py`).

    Args:
        kind: `model` (an IAMM checkpoint), `adapter` (a PEFT LoRA adapter), `dataset` (parquet splits) or `space`
            (the Gradio demo page for a published model).
        folder: the folder to publish (for `space`: a folder written by `iamm.hub.space.write_space`, or none with
            `space_model`).
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
        delete_unmanaged: also delete repository files that pushes of this kind do not manage.
    """

    kind: str = field(metadata={"help": "What to publish: model | adapter | dataset | space."})
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
    delete_unmanaged: bool = field(default=False, metadata={
        "help": "Also delete repository files this kind of push does not manage (default: keep them)."})

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
        if self.kind == "space":
            if bool(self.folder) == bool(self.space_model):
                raise ValueError("--kind space needs either --space_model (the Hub id of the model the page loads) "
                                 "or --folder (a Space folder written by iamm.hub.space.write_space), not both")
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
        ) if value is not None and self.kind != kind]
        if misplaced:
            raise ValueError(f"{', '.join(misplaced)} do(es) not apply to --kind {self.kind}")

    @property
    def repo_type(self) -> str:
        return {"dataset": "dataset", "space": "space"}.get(self.kind, "model")


class PushError(RuntimeError):
    """A push that did not complete, or could not start; the message says why and what to do."""


def describe(error: BaseException) -> str:
    """An exception as one line: its type and first line (HTTP errors: status and the server's message)."""
    text = " ".join(str(error).split()) or repr(error)
    return f"{type(error).__name__}: {text[:400]}"


def _local_hashes(folder: str) -> Dict[str, Dict[str, str]]:
    """Per file of `folder` (repository paths): its git blob id (`git`) and sha256 (`sha256`), the ids the Hub
    reports for regular and for LFS/Xet files."""
    hashes = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                data = f.read()
            hashes[os.path.relpath(path, folder).replace(os.sep, "/")] = {
                "git": git_hash(data), "sha256": hashlib.sha256(data).hexdigest()}
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

    def same(path: str) -> bool:
        kind, value = next(iter(remote[path].items()))
        return local[path][kind] == value

    missing = sorted(p for p in local if p not in remote or not same(p))
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


def stale_files(api: HfApi, args: PushArguments, local: Dict[str, Dict[str, str]]) -> Dict[str, List[str]]:
    """Repository files the staged folder does not have: `delete` (managed by this kind, or all with
    `delete_unmanaged`) and `keep` (the others). An absent branch has none."""
    try:
        remote = remote_files(api, args.repo_id, args.repo_type, args.revision)
    except HfHubHTTPError as e:
        if getattr(e.response, "status_code", None) == 404:
            return {"delete": [], "keep": []}
        raise
    other = {"model": ("adapter_config.json", "an adapter"), "adapter": ("config.json", "a model")}.get(args.kind)
    if other and other[0] in remote and other[0] not in local:
        raise PushError(f"{args.repo_id} holds {other[1]} ({other[0]}), not {'an' if args.kind == 'adapter' else 'a'} "
                        f"{args.kind}: check --repo_id and --kind; nothing was uploaded")
    stale = sorted(p for p in remote if p not in local and p != ".gitattributes")
    delete = [p for p in stale if args.delete_unmanaged or is_managed(args.kind, p)]
    return {"delete": delete, "keep": [p for p in stale if p not in delete]}


def _escape(path: str) -> str:
    """A path as an fnmatch pattern that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


def upload(args: PushArguments, staging: str) -> Dict[str, Any]:
    """Create the repository (and branch) if needed, upload `staging` as one commit, verify. Returns the commit id,
    the stale files deleted and the unmanaged ones kept."""
    api = HfApi(endpoint=args.endpoint, token=args.token)
    local = _local_hashes(staging)  # read once: every comparison with the repository uses it
    files = sorted(local)
    check_token(api, args)
    message = args.commit_message or f"Upload IAMM {args.kind} from {os.path.basename(os.path.abspath(args.folder or args.space_model))}"
    where = f"{args.repo_id} ({args.repo_type}, revision {args.revision})"
    try:
        api.create_repo(args.repo_id, repo_type=args.repo_type, private=args.private, exist_ok=True,
                        space_sdk="gradio" if args.kind == "space" else None)
        if args.revision != "main":
            api.create_branch(args.repo_id, repo_type=args.repo_type, branch=args.revision, exist_ok=True)
        stale = stale_files(api, args, local)
        head_before = api.repo_info(args.repo_id, repo_type=args.repo_type, revision=args.revision).sha
    except PushError:
        raise
    except Exception as e:
        raise PushError(f"pushing {args.folder or args.space_model} to {where} failed before any file was sent: "
                        f"{describe(e)}. No file of this push was committed; run the same command again.") from e
    try:
        info = api.upload_folder(
            repo_id=args.repo_id, repo_type=args.repo_type, folder_path=staging, revision=args.revision,
            commit_message=message, ignore_patterns=list(NEVER_PUSH),  # (upload_folder extends the list it gets)
            delete_patterns=[_escape(p) for p in stale["delete"]] or None,
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
    if stale["keep"]:
        logger.warning("kept %d file(s) in %s that %s pushes do not manage: %s (--delete_unmanaged true removes "
                       "them)", len(stale["keep"]), args.repo_id, args.kind, ", ".join(stale["keep"]))
    return {"commit": commit, "files": files, "deleted": stale["delete"], "kept": stale["keep"]}


def _after_failure(api: HfApi, args: PushArguments, local: Dict[str, Dict[str, str]], stale: Dict[str, List[str]],
                   error: Exception, where: str, head_before: str) -> str:
    """After a failed `upload_folder`: the commit id when the repository holds the push anyway (the server applied
    the commit and its answer was lost), else a `PushError` naming the files the repository does not hold."""
    try:
        diff = compare_with_repo(api, args.repo_id, args.repo_type, args.revision, local)
        head = api.repo_info(args.repo_id, repo_type=args.repo_type, revision=args.revision).sha
    except Exception as e:
        raise PushError(
            f"pushing {args.folder or args.space_model} to {where} failed: {describe(error)}; reading the repository "
            f"back failed too ({describe(e)}), so whether the commit landed is unknown. The files of this push: "
            f"{', '.join(sorted(local))}. Run the same command again (it commits only what is missing or different)."
        ) from error
    not_deleted = [p for p in diff["extra"] if p in stale["delete"]]
    if not diff["missing"] and not not_deleted:
        if head != head_before:
            logger.warning("the Hub's answer to the commit was lost (%s), but %s now holds every file of this push "
                           "(commit %s)", describe(error), where, head)
        else:
            logger.warning("the upload failed (%s), but %s already held every file of this push (commit %s)",
                           describe(error), where, head)
        return head
    raise PushError(
        f"pushing {args.folder or args.space_model} to {where} failed: {describe(error)}. The repository does not "
        f"hold these files of this push (or holds other versions): {', '.join(diff['missing']) or 'none'}"
        + (f"; stale files not deleted: {', '.join(not_deleted)}" if not_deleted else "")
        + ". Run the same command again to complete it."
    ) from error


def stage(args: PushArguments, staging: str) -> None:
    """Check the folder for its kind and write the publishable files and the card into `staging` (every local
    problem is raised here, as `IncompleteFolderError`, before anything goes over the network)."""
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
        stage_adapter(args.folder, staging, base["hub_id"])
        card = build_adapter_card(args.repo_id, adapter_config, training, base, args.dataset_repo, args.revision)
    elif args.kind == "dataset":
        splits = dataset_splits(args.folder)
        columns = dataset_columns(args.folder)
        build_info = stage_dataset(args.folder, staging)
        card = build_dataset_card(args.repo_id, split_counts(args.folder), splits, columns, build_info)
    else:
        from .space import check_space_folder, write_space

        if args.space_model:
            write_space(args.space_model, staging)
        else:
            check_space_folder(args.folder)
            never = [p.split("/")[0] for p in NEVER_PUSH]  # what upload_folder would skip, by name at any depth
            shutil.copytree(args.folder, staging, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", ".git", *never))
        return  # the Space's README.md (its front matter) is its card
    card.save(os.path.join(staging, "README.md"))


def push(args: PushArguments) -> Dict[str, Any]:
    """Publish `args.folder` to `args.repo_id`; returns the commit id, the files the repository now holds from this
    push, the stale files deleted and the unmanaged ones kept. Raises `PushError` (or `IncompleteFolderError` for
    a folder that cannot be published) with a one-line message."""
    with tempfile.TemporaryDirectory(prefix="iamm-push-") as staging:
        stage(args, staging)
        result = upload(args, staging)
    logger.info("%s@%s is at commit %s with %d files of this push", args.repo_id, args.revision, result["commit"],
                len(result["files"]))
    return {"repo_id": args.repo_id, "repo_type": args.repo_type, "revision": args.revision, **result}
