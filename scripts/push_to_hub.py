#!/usr/bin/env python
"""Publish an IAMM checkpoint, a LoRA adapter or the instruction dataset to the Hugging Face Hub, with its card.

    python scripts/push_to_hub.py --kind model --folder runs/iamm --repo_id org/iamm --metrics_file eval/test/metrics.json
    python scripts/push_to_hub.py --kind adapter --folder runs/lora --repo_id org/iamm-lora --instruction_format messages
    python scripts/push_to_hub.py --kind dataset --folder data/instructions --repo_id org/iamm-instructions

Options: --private true, --revision BRANCH (created if missing), --commit_message, --token (default: env HF_TOKEN);
HF_ENDPOINT selects another Hub. The repository ends up holding exactly the published files; pushing again
updates it in place, and a push that failed (it names the files that did not go) completes when run again.
"""

import json
import logging
import sys

from modeling_iamm.cli import parse_args

from iamm.hub.folders import IncompleteFolderError
from iamm.hub.push import PushArguments, PushError, push


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    (args,) = parse_args([PushArguments])
    try:
        result = push(args)
    except (IncompleteFolderError, PushError) as e:
        sys.exit(f"push_to_hub: {e}")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
