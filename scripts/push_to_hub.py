#!/usr/bin/env python
"""Publish an IAMM checkpoint, a LoRA adapter, the instruction dataset, an A/B study, or the demo or annotation
Space to the Hugging Face Hub.

    python scripts/push_to_hub.py --kind model --folder runs/iamm --repo_id org/iamm --metrics_file eval/test/metrics.json
    python scripts/push_to_hub.py --kind adapter --folder runs/lora --repo_id org/iamm-lora --base_model org/chatglm3-6b-glm
    python scripts/push_to_hub.py --kind dataset --folder data/instructions --repo_id org/iamm-instructions
    python scripts/push_to_hub.py --kind space --space_model org/iamm --repo_id org/iamm-demo
    python scripts/push_to_hub.py --kind study --folder studies/iamm-vs-woia --repo_id org/iamm-ab-study
    python scripts/push_to_hub.py --kind space --space_study studies/iamm-vs-woia --repo_id org/iamm-ab-page

Options: --private true, --revision BRANCH (created if missing), --commit_message, --token (default: env HF_TOKEN),
--dry_run true (list what would be uploaded, deleted and kept; upload nothing); HF_ENDPOINT selects another Hub.
The repository ends up holding the published files and the push's record, .iamm_push.json; files the previous push
recorded and this one no longer has are deleted, any other file is kept and named (--delete_unmanaged true deletes
them too). Files that may hold secrets (.env, .netrc, key files, ...) are never uploaded; a symbolic link leading
out of the folder is refused. Bad input (a missing folder, a metrics file of another model, an invalid --revision,
no token) is one line before any upload; a push that failed names the files the repository does not hold and
completes when run again.
"""

import json
import logging

from modeling_iamm.cli import parse_args, script_main

from iamm.hub.push import PushArguments, PushError, push


@script_main("push_to_hub", errors=(PushError,))  # (IncompleteFolderError, a bad folder or metrics file: a ValueError)
def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args,) = parse_args([PushArguments], argv)
    result = push(args)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
