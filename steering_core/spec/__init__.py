"""The spec room: what a training run is, as pydantic documents. Torch-free.

- :mod:`.method_config`: the building blocks of method configs (site, adapter, LoRA settings);
- :mod:`.layer_budget`: ``site.layers: "auto"`` and its budget (the torch half is
  :mod:`steering_core.engine.layer_selection`);
- :mod:`.compute`: ranks, devices and DeepSpeed settings of a job;
- :mod:`.training_spec`: the whole ``spec.json`` the worker hands to the training subprocess.
"""
