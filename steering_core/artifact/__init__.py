"""The artifact room: a trained adapter on disk, and what can be done with it without training.

- :mod:`.schema`: ``steering_config.json`` (torch-free);
- :mod:`.store`: saving and loading artifacts (safetensors only, never pickle);
- :mod:`.check`: verifying an artifact with the standard library only (the worker's check);
- :mod:`.safetensors_header`: reading safetensors headers without torch;
- :mod:`.fingerprint`: the base model's identity recorded in every artifact;
- :mod:`.accounting`: trained parameters against the size of the base model;
- :mod:`.exports` (a subpackage): the adapter in other tools' formats, one module each:
  :mod:`.exports.layer_tensors`, :mod:`.exports.control_vector` (llama.cpp GGUF control
  vector), :mod:`.exports.peft_lora`; :mod:`.exports.common` holds what they share (the
  formats, the applicability check, the refusal error), and the package re-exports every
  public name.
"""
