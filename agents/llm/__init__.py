"""Language-model plumbing shared by the training, conversion and QA agents.

Base-model resolution and loading, chat-template encoding with assistant-only labels, the
single-file LoRA adapter format, and the names that connect Hugging Face modules to GGUF tensors.
Heavy libraries (torch, transformers, peft) are imported inside functions so that agents that
never touch a model start fast.
"""
