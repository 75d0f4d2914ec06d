"""IAMM_large: LLM instructions built from IAMM's associated words, LoRA fine-tuning and prompting.

Installed as `iamm.llm`.
"""
