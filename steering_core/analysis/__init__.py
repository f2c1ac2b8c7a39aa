"""The analysis room: the paper's first-order view as code.

- :mod:`.first_order`: a weight update as an activation shift, oracle shifts ``h_FT - h_base``
  and site activations. Layer selection and distillation build on it.
"""
