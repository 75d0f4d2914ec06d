"""Publishing an IAMM checkpoint, a LoRA adapter or an instruction dataset to the Hub, in one atomic commit.

Each push stages the publishable files with their card in a temporary folder and uploads it with
`HfApi.upload_folder`: one commit that adds or updates every staged file and deletes repository files that are no
longer in the folder, so the repository mirrors the folder. Unchanged files are skipped (the Hub compares git
object ids), so pushing twice changes nothing. A commit either lands whole or not at all: on an HTTP error the
push says which files are not (yet) on the Hub, and running it again completes it. After the commit the repository
is listed and compared with the folder.
"""

import logging
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from huggingface_hub import HfApi
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils.sha import git_hash

from .cards import build_adapter_card, build_dataset_card, build_model_card
from .folders import (
    NEVER_PUSH,
    check_adapter_folder,
    check_model_folder,
    dataset_splits,
    split_counts,
    stage_adapter,
    stage_dataset,
    read_json,
    stage_model,
)

logger = logging.getLogger(__name__)

KINDS = ("model", "adapter", "dataset")


@dataclass
class PushArguments:
    """Where and how to publish a folder (the CLI's options, see `scripts/push_to_hub.py`).

    Args:
        kind: `model` (an IAMM checkpoint), `adapter` (a PEFT LoRA adapter) or `dataset` (parquet splits).
        folder: the folder to publish.
        repo_id: the Hub repository, `namespace/name`.
        private: create the repository private (an existing repository keeps its visibility).
        revision: the branch to commit to; created from `main` when missing.
        commit_message: the commit's title (default: one naming the kind and folder).
        token: a Hub token with write access (default: the `HF_TOKEN` environment variable or the saved login).
        endpoint: the Hub URL (default: the `HF_ENDPOINT` environment variable, else huggingface.co).
        metrics_file: for `model`: the `metrics.json` that `scripts/evaluate.py` wrote (model-index of the card).
        eval_split: for `model`: the split those metrics are on.
        instruction_format: for `adapter`: `messages` (with associated words) or `plain_messages`.
        dataset_repo: for `adapter`: the Hub id of the instruction dataset it was trained on.
    """

    kind: str = field(metadata={"help": "What to publish: model | adapter | dataset."})
    folder: str = field(metadata={"help": "The folder to publish."})
    repo_id: str = field(metadata={"help": "The Hub repository, namespace/name."})
    private: bool = field(default=False, metadata={"help": "Create the repository private."})
    revision: str = field(default="main", metadata={"help": "Branch to commit to (created from main if missing)."})
    commit_message: Optional[str] = field(default=None, metadata={"help": "Commit title."})
    token: Optional[str] = field(default=None, metadata={"help": "Hub token (default: env HF_TOKEN or saved login)."})
    endpoint: Optional[str] = field(default=None, metadata={"help": "Hub URL (default: env HF_ENDPOINT)."})
    metrics_file: Optional[str] = field(default=None, metadata={"help": "model: metrics.json of scripts/evaluate.py."})
    eval_split: str = field(default="test", metadata={"help": "model: the split the metrics are on."})
    instruction_format: str = field(default="messages",
                                    metadata={"help": "adapter: messages (with associations) | plain_messages."})
    dataset_repo: Optional[str] = field(default=None, metadata={"help": "adapter: Hub id of its training data."})

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"--kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.repo_id.count("/") != 1 or not all(self.repo_id.split("/")):
            raise ValueError(f"--repo_id must be namespace/name, got {self.repo_id!r}")
        if self.metrics_file is not None and not os.path.isfile(self.metrics_file):
            raise FileNotFoundError(f"--metrics_file {self.metrics_file} does not exist: pass the metrics.json that "
                                    "scripts/evaluate.py wrote, or leave it out")
        if self.kind != "model" and self.metrics_file is not None:
            raise ValueError("--metrics_file is for --kind model")

    @property
    def repo_type(self) -> str:
        return "dataset" if self.kind == "dataset" else "model"


class PushError(RuntimeError):
    """A push that did not complete; the message names the files that are not on the Hub and what to do."""


def compare_with_repo(api: HfApi, repo_id: str, repo_type: str, revision: str, folder: str) -> Dict[str, List[str]]:
    """Files of `folder` that the repository lacks or holds with other content (`missing`), and repository files
    that are not in `folder` (`extra`, `.gitattributes` aside)."""
    local = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                local[os.path.relpath(path, folder).replace(os.sep, "/")] = git_hash(f.read())
    remote = {}
    for entry in api.list_repo_tree(repo_id, repo_type=repo_type, revision=revision, recursive=True):
        if getattr(entry, "size", None) is not None:  # files only
            lfs = getattr(entry, "lfs", None)
            remote[entry.path] = None if lfs else entry.blob_id  # an LFS file's oid is not the content's git hash
    missing = sorted(p for p, oid in local.items() if p not in remote or (remote[p] is not None and remote[p] != oid))
    extra = sorted(p for p in remote if p not in local and p != ".gitattributes")
    return {"missing": missing, "extra": extra}


def upload(args: PushArguments, staging: str) -> str:
    """Create the repository (and branch) if needed, upload `staging` as one commit, verify; return the commit id."""
    api = HfApi(endpoint=args.endpoint, token=args.token)
    api.create_repo(args.repo_id, repo_type=args.repo_type, private=args.private, exist_ok=True)
    if args.revision != "main":
        api.create_branch(args.repo_id, repo_type=args.repo_type, branch=args.revision, exist_ok=True)
    message = args.commit_message or f"Upload IAMM {args.kind} from {os.path.basename(os.path.abspath(args.folder))}"
    try:
        info = api.upload_folder(
            repo_id=args.repo_id, repo_type=args.repo_type, folder_path=staging, revision=args.revision,
            commit_message=message, ignore_patterns=NEVER_PUSH, delete_patterns="*",
        )
    except HfHubHTTPError as e:
        try:
            missing = compare_with_repo(api, args.repo_id, args.repo_type, args.revision, staging)["missing"]
            not_sent = f"these files are not on the Hub (or are outdated there): {', '.join(missing) or 'none'}"
        except HfHubHTTPError:
            not_sent = f"the repository could not be listed; the files of this push are: {', '.join(sorted(_files(staging)))}"
        raise PushError(
            f"pushing {args.folder} to {args.repo_id} ({args.repo_type}, revision {args.revision}) failed: {e}. "
            f"The commit was not made (Hub commits are atomic); {not_sent}. Run the same command again to complete it."
        ) from e
    diff = compare_with_repo(api, args.repo_id, args.repo_type, args.revision, staging)
    if diff["missing"] or diff["extra"]:
        raise PushError(f"{args.repo_id}@{args.revision} does not match the pushed folder after commit {info.oid}: "
                        f"missing or different {diff['missing']}, unexpected {diff['extra']}; push again")
    return info.oid


def _files(folder: str) -> List[str]:
    return [os.path.relpath(os.path.join(r, n), folder) for r, _, names in os.walk(folder) for n in names]


def stage(args: PushArguments, staging: str) -> None:
    """Check the folder for its kind and write the publishable files and the card into `staging`."""
    if args.kind == "model":
        config = check_model_folder(args.folder)
        config = stage_model(args.folder, staging, config)
        summary_path = os.path.join(args.folder, "train_summary.json")
        summary = read_json(summary_path) if os.path.exists(summary_path) else {}
        metrics = read_json(args.metrics_file) if args.metrics_file else None
        card = build_model_card(args.repo_id, config, summary, metrics, args.eval_split, args.revision)
    elif args.kind == "adapter":
        adapter_config = check_adapter_folder(args.folder)
        stage_adapter(args.folder, staging)
        card = build_adapter_card(args.repo_id, adapter_config, args.instruction_format, args.dataset_repo,
                                  args.revision)
    else:
        splits = dataset_splits(args.folder)
        build_info = stage_dataset(args.folder, staging)
        card = build_dataset_card(args.repo_id, split_counts(args.folder), splits, build_info)
    card.save(os.path.join(staging, "README.md"))


def push(args: PushArguments) -> Dict[str, Any]:
    """Publish `args.folder` to `args.repo_id`; returns the commit id and the files the repository now holds."""
    with tempfile.TemporaryDirectory(prefix="iamm-push-") as staging:
        stage(args, staging)
        files = sorted(_files(staging))
        commit = upload(args, staging)
    logger.info("%s@%s is at commit %s with %d files", args.repo_id, args.revision, commit, len(files))
    return {"repo_id": args.repo_id, "repo_type": args.repo_type, "revision": args.revision, "commit": commit,
            "files": files}
