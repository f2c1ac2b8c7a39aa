"""The engine room: one spec in, one trained adapter out.

- :mod:`.train`: ``train()``: setup, the step loop and the finish, over one typed state;
- :mod:`.run_state`: that state (``RunState``), what setup built (``RunSetup``) and the result;
- :mod:`.setup`: the setup: seed, model, method, data, optimizer and schedule, backend, resume;
- :mod:`.loop`: the step loop: steps, validations, checkpoints, stop and pause;
- :mod:`.finish`: the finish: best weights, final validation, manifest, saved adapter, result;
- :mod:`.run_checkpoints`: a run's checkpoint saved at a step, and its resume from the latest;
- :mod:`.model_source`: the base model and the frozen copies of it objectives ask for;
- :mod:`.validation`: the validation loss and token accuracy, and their event;
- :mod:`.collectives`: the sums and agreements across ranks (no-ops in one process);
- :mod:`.plan`: data order and learning-rate schedule as pure functions of the step;
- :mod:`.backends`: plain torch or a DeepSpeed engine behind the same steps;
- :mod:`.runtime`: distributed environment, device, precision, seeding;
- :mod:`.checkpoint`: checkpoints written atomically, and exact resume;
- :mod:`.layer_selection`: scoring every layer before training (``site.layers: "auto"``);
- :mod:`.layer_stats`: the size of each layer's trained shift against its residual stream;
- :mod:`.manifest`: the reproducibility manifest saved with every artifact;
- :mod:`.events`: the progress events the training subprocess prints (torch-free).
"""
