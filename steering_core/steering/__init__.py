"""The steering room: how a shift is applied to a model.

- :mod:`.adapter_modules`: the trainable modules ``h <- h + f(h)`` (vector, low-rank);
- :mod:`.site_steering`: forward hooks that apply one adapter per layer, in training and in
  cached generation, with strength and on/off controls;
- :mod:`.positions`: which token positions an intervention acts on (ReFT);
- :mod:`.attach`: attaching a method to a loaded causal LM.
"""
