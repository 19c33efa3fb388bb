"""Students: smaller models made from a teacher by training — distillation and pruning.

These are not graph rewrites (those live in ``inferno.passes``): each trains a PyTorch module
on the teacher's data, exports it to ONNX and writes a student folder
(``inferno.models.student``) that every other command loads like any model. ``measure`` times
a student against its teacher side by side.
"""
