"""GLUE: the task registry (`tasks`), readers for the official TSV layout and for tensorflow-datasets (`readers`),
and encoding into fixed-shape batches bucketed by length (`encoding`).

    from deberta_jax.data.glue import encoding, readers, tasks

    task = tasks.get_task("mrpc")
    examples = readers.load_split(task, "path/to/glue_data", "train")     # or load_split(task, "tfds", "train")
    encoded = encoding.encode_examples(examples, task, tokenizer, max_length=128)
    for batch in encoding.bucketed_batches(encoded, 32, shuffle=True, seed=0, epoch=0):
        batch["input_ids"]   # [32, L] with L one of encoded.buckets
"""
