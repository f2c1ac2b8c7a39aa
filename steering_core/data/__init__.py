"""The data room: training files in, token batches out.

- :mod:`.formats`: JSONL parsing and validation with line-numbered problems (torch-free; the API
  imports it); it re-exports the pieces it is built from:
  - :mod:`.examples`: the formats and the examples a line becomes (segments, chat messages,
    preference pairs), and a parsed file;
  - :mod:`.problems`: line-numbered problems, the error carrying them, the validation report;
  - :mod:`.json_fields`: the field checks the formats' parsers share;
  - :mod:`.preference`: the preference format's parser;
- :mod:`.text_checks`: text that cannot be used (lone surrogates, ...), shared with the configs;
- :mod:`.chat_template`: where a tokenizer's chat template puts the assistant answers (the
  supervised spans of a chat row, torch-free);
- :mod:`.batches`: tokenization with answer-only labels, and padded batches.
"""
