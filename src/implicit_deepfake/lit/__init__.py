"""LightningModules: the training step, optimisers, densification schedule and logging of each model;
the math lives in models/ and render/."""
