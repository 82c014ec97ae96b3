"""The `deberta-jax` command line.

Errors are one line on stderr, `deberta-jax: error: ...`, with exit status 2 for a usage error (a bad flag, `--set`
key or value, or config file), 1 for any other and 130 on Ctrl-C; `--debug` (or DEBERTA_JAX_DEBUG=1) also prints
the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import traceback

from deberta_jax.config_tree import ConfigError

PROG = "deberta-jax"
EXIT_RUNTIME_ERROR, EXIT_USAGE_ERROR, EXIT_INTERRUPTED = 1, 2, 130
# Exceptions whose message says what went wrong by itself; any other kind is named too, as a likely bug.
_SELF_EXPLAINING = (ValueError, OSError, FloatingPointError, ImportError, RuntimeError)

HEAD_CHOICES = ["none", "masked_lm", "sequence_classification", "token_classification", "question_answering",
                "multiple_choice"]
TFDS_DATA_DIR_HELP = ("with --data tfds: where GLUE is prepared on first use (downloaded, written as array_record "
                      "files) and read (default: $TFDS_DATA_DIR or ~/tensorflow_datasets)")


class UsageError(ValueError):
    """A bad command line (unknown flag, missing or malformed argument)."""


class _Parser(argparse.ArgumentParser):
    """Raises its errors for `main` to report as one line, instead of printing the usage and exiting."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def _topology(name: str) -> str:
    from deberta_jax.tpu.topologies import get_slice

    try:
        get_slice(name)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return name


def _head(name: str):
    return None if name == "none" else name


def cmd_convert(args) -> int:
    from deberta_jax.conversion import jax_checkpoint
    from deberta_jax.conversion.hf_checkpoint import load_pretrained, save_pretrained

    t0 = time.perf_counter()
    if os.path.exists(os.path.join(args.src, "deberta_jax.json")):
        if args.revision is not None:
            raise UsageError(f"--revision is for Hub ids; {args.src} is a deberta-jax checkpoint")
        model, params = jax_checkpoint.load_checkpoint(args.src)
        save_pretrained(args.dst, model, params)
        direction = "deberta-jax -> HF"
    else:
        model, params, report = load_pretrained(args.src, _head(args.head), return_report=True,
                                                revision=args.revision)
        for kind in ("missing", "unexpected", "mismatched"):
            if getattr(report, kind):
                print(f"{kind} keys: {', '.join(getattr(report, kind))}", file=sys.stderr)
        jax_checkpoint.save_checkpoint(args.dst, model, params)
        direction = "HF -> deberta-jax"
    print(f"converted {direction}: {args.src} -> {args.dst} in {time.perf_counter() - t0:.1f}s")
    return 0


def cmd_parity(args) -> int:
    from deberta_jax.conversion.parity import compare_with_reference

    result = compare_with_reference(args.hf_dir, _head(args.head), batch=args.batch, seq_len=args.seq_len,
                                    revision=args.revision)
    for name, value in result["max_abs"].items():
        print(f"{name:>20s}  max|jax - torch| = {value:.3e}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    ok = result["worst"] <= args.atol
    print(f"worst {result['worst']:.3e} {'<=' if ok else '>'} {args.atol:g}: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def cmd_pretrain(args) -> int:
    from deberta_jax.pretraining.config import load_pretrain_config
    from deberta_jax.pretraining.train import pretrain

    summary = pretrain(load_pretrain_config(args.config, args.set), args.workdir, resume=args.resume)
    final = {k: round(v, 4) for k, v in summary["final"].items() if isinstance(v, float)}
    print(json.dumps({"steps": summary["steps"], "final": final, "exported": summary["exported"]}, indent=2))
    return 0


def cmd_prepare_data(args) -> int:
    from deberta_jax.data.prepared import TextFiles, TfdsText, prepare
    from deberta_jax.tokenization.spm_tokenizer import DebertaV3Tokenizer

    if bool(args.inputs) == bool(args.tfds):
        raise UsageError("give text files or --tfds NAME, not both and not neither (see deberta-jax prepare-data --help)")
    source = (TfdsText(args.tfds, args.tfds_split, args.tfds_text_key, args.tfds_data_dir) if args.tfds
              else TextFiles.open(args.inputs))
    manifest = prepare(source, DebertaV3Tokenizer.from_pretrained(args.tokenizer), args.seq_len, args.out,
                       shards=args.shards, workers=args.workers, host_index=args.host_index,
                       host_count=args.host_count)
    if manifest is None:
        print(f"this host's shards are in {args.out}; the manifest is written when every host's are")
    else:
        print(f"wrote {args.out}/manifest.json: {manifest['rows']} rows of {manifest['seq_len']} tokens, "
              f"{manifest['tokens']} corpus tokens in {len(manifest['shards'])} shards")
    return 0


def cmd_compile(args) -> int:
    from deberta_jax.tpu.report import compile_for_topology, summary_lines

    report = compile_for_topology(args.config, args.topology, args.finetune, args.set)
    print("\n".join(summary_lines(report)))
    if args.json:
        from deberta_jax.training.records import write_json

        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


def cmd_train_tokenizer(args) -> int:
    from deberta_jax.tokenization.training import train_spm_tokenizer

    tokenizer = train_spm_tokenizer(args.inputs, args.output_dir, args.vocab_size)
    print(f"wrote {args.output_dir}/spm.model: {tokenizer.vocab_size} ids including [MASK]={tokenizer.mask_id}")
    return 0


def cmd_finetune(args) -> int:
    from deberta_jax.finetuning.train import finetune, finetune_config

    cfg = finetune_config(args.task, args.model, args.data, args.recipe, args.set, revision=args.revision,
                          tfds_data_dir=args.tfds_data_dir)
    summary = finetune(cfg, args.workdir, resume=args.resume)
    print(json.dumps({"task": summary["task"], "best": summary["best"],
                      "steps_per_second": round(summary["steps_per_second"], 3), "export": summary["export"]},
                     indent=2))
    return 0


def cmd_predict(args) -> int:
    from deberta_jax.finetuning.train import predict

    for path in predict(args.task, args.model, args.data, args.out, split=args.split, max_length=args.max_length,
                        revision=args.revision, tfds_data_dir=args.tfds_data_dir):
        print(f"wrote {path}")
    return 0


def cmd_info(args) -> int:
    from deberta_jax.environment import environment

    rows = environment()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


def cmd_launch(args) -> int:
    from deberta_jax.launch import launch

    child = args.child[1:] if args.child[:1] == ["--"] else args.child
    if not child:
        raise UsageError("launch needs the command to run after --, e.g. launch --processes 2 -- pretrain ...")
    return launch(child, args.processes, args.devices_per_process, args.port)


def _revision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", help="of a Hub id: branch, tag or commit (default: main); the files come from "
                        "the Hub cache (HF_HOME), only the cache with HF_HUB_OFFLINE=1")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help="on an error, print the traceback too (as "
                        "DEBERTA_JAX_DEBUG=1 does)")
    sub = parser.add_subparsers(dest="command", required=True)

    convert = sub.add_parser("convert", help="HF directory or Hub id <-> deberta-jax checkpoint (direction detected "
                             "from SRC)")
    convert.add_argument("src", help="HF directory, Hub id (owner/name) or deberta-jax checkpoint")
    convert.add_argument("dst")
    convert.add_argument("--head", choices=HEAD_CHOICES, default="none", help="head to load from an HF directory")
    _revision_argument(convert)
    convert.set_defaults(func=cmd_convert)

    parity = sub.add_parser("parity", help="max-abs difference per stage against transformers (needs torch)")
    parity.add_argument("hf_dir", help="HF directory or Hub id (owner/name)")
    _revision_argument(parity)
    parity.add_argument("--head", choices=HEAD_CHOICES[:-1], default="none")
    parity.add_argument("--batch", type=_positive_int, default=2)
    parity.add_argument("--seq-len", type=_positive_int, default=128)
    parity.add_argument("--atol", type=float, default=1e-4)
    parity.add_argument("--json", help="also write the figures to this file")
    parity.set_defaults(func=cmd_parity)

    pretrain = sub.add_parser("pretrain", help="MLM (+EMD) or RTD pretraining on a device mesh")
    pretrain.add_argument("--config", required=True, help="recipe name in experiments/pretrain/ or a JSON file")
    pretrain.add_argument("--workdir", required=True)
    pretrain.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a recipe key, dotted for sections (e.g. steps=200, optimizer.learning_rate=1e-3, "
                          "rtd.sharing=es)")
    pretrain.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in workdir")
    pretrain.set_defaults(func=cmd_pretrain)

    finetune = sub.add_parser("finetune", help="fine-tune on a GLUE or SuperGLUE task (tfds or a local directory)")
    finetune.add_argument("--task", required=True, help="a GLUE task (sst2, mnli, ...) or superglue/NAME (boolq, cb, "
                          "copa, multirc, record, rte, wic, wsc)")
    finetune.add_argument("--model", required=True, help="HF-format directory with spm.model, or a Hub id "
                          "(owner/name)")
    _revision_argument(finetune)
    finetune.add_argument("--data", default="tfds", help="'tfds' or a directory in the official GLUE (SuperGLUE) "
                          "layout")
    finetune.add_argument("--tfds-data-dir", help=TFDS_DATA_DIR_HELP)
    finetune.add_argument("--workdir", required=True)
    finetune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a FinetuneConfig key, dotted for sections (e.g. epochs=2, "
                          "optimizer.learning_rate=3e-5, sift.enabled=true)")
    finetune.add_argument("--recipe", help="published settings (deberta_jax/recipes/{glue,superglue}/published.json), "
                          "e.g. deberta-v3-base, deberta-v3-small-sift, large")
    finetune.add_argument("--resume", action="store_true")
    finetune.set_defaults(func=cmd_finetune)

    predict = sub.add_parser("predict", help="write GLUE (.tsv) or SuperGLUE (.jsonl) submission files for a task's "
                             "test split(s)")
    predict.add_argument("--task", required=True, help="as finetune's; superglue/axb and superglue/axg take an "
                         "RTE model")
    predict.add_argument("--model", required=True, help="fine-tuned HF directory (a finetune export) or Hub id")
    _revision_argument(predict)
    predict.add_argument("--data", default="tfds")
    predict.add_argument("--tfds-data-dir", help=TFDS_DATA_DIR_HELP)
    predict.add_argument("--out", required=True)
    predict.add_argument("--split", default=None, help="default: the task's test split(s)")
    predict.add_argument("--max-length", type=int, default=128)
    predict.set_defaults(func=cmd_predict)

    prep = sub.add_parser("prepare-data", help="tokenize and pack a corpus once into sharded ArrayRecord files "
                          "(data.prepared=DIR of pretrain reads them)")
    prep.add_argument("inputs", nargs="*", help="text files (.txt / .txt.gz), documents separated by blank lines")
    prep.add_argument("--tfds", metavar="NAME", help="or a tensorflow-datasets text dataset, e.g. wikipedia/20230601.en")
    prep.add_argument("--tfds-split", default="train")
    prep.add_argument("--tfds-text-key", default="text")
    prep.add_argument("--tfds-data-dir", help="where the tfds dataset is prepared and read")
    prep.add_argument("--tokenizer", required=True, help="spm.model or a directory holding it")
    prep.add_argument("--seq-len", type=_positive_int, required=True)
    prep.add_argument("--out", required=True, help="the prepared directory")
    prep.add_argument("--shards", type=_positive_int, default=16, help="shards of the whole corpus (at most one per "
                      "document); keep it the same across hosts and reruns")
    prep.add_argument("--workers", type=_positive_int, default=1, help="tokenizing processes on this host")
    prep.add_argument("--host-index", type=int, default=0, help="this host prepares shards i with i %% host-count "
                      "== host-index")
    prep.add_argument("--host-count", type=_positive_int, default=1)
    prep.set_defaults(func=cmd_prepare_data)
    compile_ = sub.add_parser("compile", help="compile the train step ahead of time for a TPU slice (needs libtpu, "
                              "no TPU) and report memory per chip, the roofline and collectives: compiler estimates")
    compile_.add_argument("--config", required=True, help="pretraining recipe name or JSON file (as for pretrain)")
    compile_.add_argument("--topology", required=True, type=_topology, help="TPU slice, e.g. v5e-8, v5p-8, v4-8, v6e-8")
    compile_.add_argument("--finetune", metavar="TASK", help="compile the GLUE fine-tuning step of TASK instead, on "
                          "a sequence-classification model of the recipe's preset; --set then sets FinetuneConfig "
                          "keys (batch_size, max_length, mesh.shape, sift.enabled, ...)")
    compile_.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                          help="override a recipe key (e.g. data.batch_size=256, model.overrides.attention_impl=skew)")
    compile_.add_argument("--json", help="also write the whole report to this file")
    compile_.set_defaults(func=cmd_compile)

    tok = sub.add_parser("train-tokenizer", help="train a DeBERTa-v3 style sentencepiece model on text files")
    tok.add_argument("inputs", nargs="+")
    tok.add_argument("--output-dir", required=True)
    tok.add_argument("--vocab-size", type=int, default=8000)
    tok.set_defaults(func=cmd_train_tokenizer)

    info = sub.add_parser("info", help="versions (deberta-jax, python, jax, flax, ...), the backend and its devices, "
                          "and the optional packages installed (torch, transformers, libtpu, huggingface_hub)")
    info.set_defaults(func=cmd_info)

    launch = sub.add_parser("launch", help="run a command as several JAX processes on this machine (a rehearsal of "
                            "a pod or multi-host run)")
    launch.add_argument("--processes", type=int, default=2)
    launch.add_argument("--devices-per-process", type=int, default=1, help="fake CPU devices of each process")
    launch.add_argument("--port", type=int, default=None, help="the coordinator's port on 127.0.0.1 (default: free)")
    launch.add_argument("child", nargs=argparse.REMAINDER, metavar="-- COMMAND ...",
                        help="the deberta-jax command each process runs, after --")
    launch.set_defaults(func=cmd_launch)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Runs a command; returns its exit status. An error is reported as one line (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("absl").setLevel(logging.WARNING)  # orbax logs every step of a save at INFO
    # jax reports at INFO each accelerator backend it could not start, on every CPU-only machine
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)
    debug = os.environ.get("DEBERTA_JAX_DEBUG", "") not in ("", "0")
    try:
        args = build_parser().parse_args(argv)
        debug = debug or args.debug
        _quiet_background_errors(not debug)
        return args.func(args)
    except KeyboardInterrupt:
        return _report("interrupted", EXIT_INTERRUPTED, debug)
    except Exception as error:  # every error ends here, as one line
        usage = isinstance(error, (UsageError, ConfigError))
        return _report(_one_line(error), EXIT_USAGE_ERROR if usage else EXIT_RUNTIME_ERROR, debug)


def _drop_errors(record: logging.LogRecord) -> bool:
    return record.levelno < logging.ERROR


def _quiet_background_errors(quiet: bool) -> None:
    """Without --debug, orbax's worker threads do not log their own tracebacks of a failed save (hundreds of lines):
    the failure reaches the command, which reports it in one line."""
    absl = logging.getLogger("absl")
    if quiet:
        absl.addFilter(_drop_errors)  # a no-op when already added
    else:
        absl.removeFilter(_drop_errors)


def _one_line(error: Exception) -> str:
    """The error's message on one line, led by the exception's name unless the message explains itself."""
    # Joined into one line; a stray surrogate (an argument that was not UTF-8) escaped rather than failing to print.
    message = " ".join(str(error).split()).encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(error, _SELF_EXPLAINING) and message:
        return message
    return f"{type(error).__name__}{': ' + message if message else ''} (--debug shows the traceback)"


def _report(message: str, status: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return status


def entry_point() -> None:
    """The `deberta-jax` command: main(), then an exit that cannot hang. After a failed checkpoint save, orbax's
    worker threads may still wait on the write; the interpreter would join them for ever at shutdown, so a failed
    command ends the process here. Without --debug, errors that Python would print from worker threads or from
    objects collected after the failure (orbax's event loops, closed mid-write) are one line or nothing: the
    command's own error line says what failed."""
    if not ("--debug" in sys.argv[1:] or os.environ.get("DEBERTA_JAX_DEBUG", "") not in ("", "0")):
        sys.unraisablehook = lambda unraisable: None
        threading.excepthook = lambda hook: print(
            f"{PROG}: warning: thread {hook.thread.name if hook.thread else '?'} failed: "
            f"{' '.join(str(hook.exc_value).split())[:300]}", file=sys.stderr)
    status = main()
    if status != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(status)
    sys.exit(status)


if __name__ == "__main__":
    entry_point()
