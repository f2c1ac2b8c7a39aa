"""Evaluation tasks: prompt templates, answer scorers, synthetic task generators. Torch-free.

- :mod:`~steering_core.tasks.templates`: BoolQ, Winogrande, GSM8K, ARC and ListOps templates.
- :mod:`~steering_core.tasks.scorers`: ``extract_<task>`` / ``score_<task>`` and generic scorers.
- :mod:`~steering_core.tasks.listops`: ListOps generator and evaluator.
- :mod:`~steering_core.tasks.arithmetic`: GSM8K-style word problems with rationales.
- :mod:`~steering_core.tasks.definitions`: ``get_task(name) -> Task``.
- :mod:`~steering_core.tasks.build_data`: writes the shipped JSONL files under ``data/tasks``.
"""

from steering_core.tasks.definitions import TASK_NAMES, Task, UnknownTaskError, get_task
from steering_core.tasks.scorers import Scorer

__all__ = ["TASK_NAMES", "Scorer", "Task", "UnknownTaskError", "get_task"]
