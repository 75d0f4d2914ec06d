"""Publishing IAMM checkpoints, LoRA adapters and instruction datasets to the Hugging Face Hub.

Installed as `iamm.hub`.
"""

from .push import PushArguments, PushError, push  # noqa: E402,F401
