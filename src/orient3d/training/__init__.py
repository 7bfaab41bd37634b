"""Training a VAE: the loop and everything it runs.

- :mod:`.loop`: ``fit`` / ``train`` (one run folder, resumable);
- :mod:`.state`: the model, optimizer and mode state a checkpoint holds;
- :mod:`.modes`: what each step trains on (single, augmented, search, continuous);
- :mod:`.prior`: the orientation prior of the search mode;
- :mod:`.distributed`: several processes (``torchrun``) training one model;
- :mod:`.pose_head`: the optional orientation head, fitted after training
  (``model.pose_head``) to propose poses for recovery.
- :mod:`.so3_head`: a head fitted to a trained model that ranks the cells of an SO(3)
  grid, the proposals of continuous pose estimation's ``head-refine``.
"""
