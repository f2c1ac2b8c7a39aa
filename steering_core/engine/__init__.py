"""The engine room: one spec in, one trained adapter out.

- :mod:`.train`: ``train()``: setup, the step loop and the finish, over one typed state;
- :mod:`.plan`: data order and learning-rate schedule as pure functions of the step;
- :mod:`.backends`: plain torch or a DeepSpeed engine behind the same steps;
- :mod:`.runtime`: distributed environment, device, precision, seeding;
- :mod:`.checkpoint`: checkpoints written atomically, and exact resume;
- :mod:`.layer_selection`: scoring every layer before training (``site.layers: "auto"``);
- :mod:`.layer_stats`: the size of each layer's trained shift against its residual stream;
- :mod:`.manifest`: the reproducibility manifest saved with every artifact;
- :mod:`.events`: the progress events the training subprocess prints (torch-free).
"""
