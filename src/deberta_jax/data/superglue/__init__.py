"""SuperGLUE: the task table (`tasks`), readers for the official JSONL layout and for tensorflow-datasets
(`readers`), and how each task's examples become sequences for the model (`encoding`).

    from deberta_jax.data.superglue import readers, tasks

    task = tasks.get_task("superglue/copa")
    examples = readers.load_split(task, "path/to/superglue", "train")   # or load_split(task, "tfds", "train")
"""
