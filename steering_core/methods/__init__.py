"""Training methods, one folder each, found through the ``steering_service.methods`` entry points.

- :mod:`.definition` and :mod:`.registry` are torch-free: what a method is (name, config,
  defaults, data formats, size checks) and the discovery of the installed ones;
- :mod:`.base` is the torch side every handler builds on (attach, load, tokenize, loss).

This package imports nothing itself, so that a method's torch-free definition can be imported
without torch.
"""
