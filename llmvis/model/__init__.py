"""The model: loading (default GGUF, folders, .gguf files; the converted-weights cache),
introspection (text config, logits, devices) and attention capture."""
