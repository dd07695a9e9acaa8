"""Pure maths and shared definitions: metrics, attention, geometry, lens and head statistics,
segments, tokens, errors and configuration. Imports nothing else from llmvis."""
