"""One module per command, named after its verb: train (and resume), finetune, inference, delete, info,
eval, export, import_, runs, inspect, plot. ``baby.plans`` is their table; the CLI and the notebook
dispatch through it. A command builds on the layers below it (the run store, the model, the trainer)
and never on another command."""
