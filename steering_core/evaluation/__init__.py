"""The evaluation room: scoring what a model generates.

- :mod:`.greedy`: batched greedy decoding and task accuracy;
- :mod:`.strength_report`: score and off-task KL of a steering adapter at each strength.
"""
