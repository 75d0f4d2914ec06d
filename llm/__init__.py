"""IAMM_large: LLM instructions built from IAMM's associated words, LoRA fine-tuning and prompting.

Not implemented yet (a later issue); this package is importable so that the layout is stable.
"""
