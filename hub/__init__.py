"""Publishing IAMM checkpoints, LoRA adapters and instruction datasets to the Hugging Face Hub.

Installed as `iamm.hub`.
"""
