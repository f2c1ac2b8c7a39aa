"""The data room: training files in, token batches out.

- :mod:`.formats`: JSONL parsing and validation with line-numbered problems (torch-free; the API
  imports it);
- :mod:`.text_checks`: text that cannot be used (lone surrogates, ...), shared with the configs;
- :mod:`.batches`: tokenization with answer-only labels, and padded batches.
"""
