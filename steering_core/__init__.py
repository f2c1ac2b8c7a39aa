"""steering_core: post-block activation steering, joint adaptation and baselines.

The core is split in rooms, each a subpackage whose docstring maps its files:

- :mod:`.spec`: what a training run is (pydantic, torch-free);
- :mod:`.model`: the catalogue, model loading and the site table;
- :mod:`.data`: training files, their validation, and token batches;
- :mod:`.steering`: adapter modules and the hooks that apply them;
- :mod:`.methods`: the training methods, one folder each, found through entry points;
- :mod:`.analysis`: the first-order analysis;
- :mod:`.engine`: the training run itself;
- :mod:`.artifact`: trained adapters on disk, their checks and exports;
- :mod:`.evaluation`: greedy evaluation and the strength report;
- :mod:`.serving`: batched generation with many adapters on one base model;
- :mod:`.tasks`: the evaluation tasks and their generators (torch-free).

Beside them: :mod:`.errors` (every error a user can cause), :mod:`.hashing`, and the training
subprocess's entry point :mod:`.cli` with its :mod:`.exit_codes`. The torch-free modules (the
spec room, the method definitions, data validation, the artifact schema and check, events) can be
imported by the API and the worker without torch; everything else needs the ``train`` extra.
"""

__version__ = "0.1.0"
