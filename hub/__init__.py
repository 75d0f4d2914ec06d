"""Publishing IAMM checkpoints and LoRA adapters to the Hugging Face Hub.

Not implemented yet (a later issue); this package is importable so that the layout is stable.
"""
