"""Run an inferno edge bundle: ``python run.py [--input FILE | --text TEXT ...] [--check]``.

This file is copied into every bundle as ``run.py``. It imports only the standard library,
numpy and onnxruntime (and ``tokenizers`` for text models), never inferno: the bundle must
run on a device that has nothing else.

  python run.py --check                  verify every file's sha256 and the bundled samples
  python run.py --input pixels.npy       one input array (.npy), or arrays named like the inputs (.npz)
  python run.py --text "a sentence" ...  text models: one or more sentences (or --text-file, one per line)
  python run.py --samples                run the bundled sample rows
Outputs are printed as JSON ({"outputs": {name: nested lists}}, plus "top" for classifiers),
or written with --out FILE.npz. Exit codes: 0 done, 1 check failed, 2 bad input.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
CHECK_TOLERANCE = 1e-3
"""Most absolute difference from the bundled expected outputs that ``--check`` accepts (the
device's kernels may round differently from the machine that wrote the bundle)."""


class BadInput(Exception):
    """The user's input does not fit the bundle: exit 2 with one line."""


def load_manifest(folder: Path = HERE) -> dict[str, Any]:
    try:
        manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError) as exc:
        raise BadInput(f"{folder / 'manifest.json'}: unreadable ({exc})") from exc
    return manifest


def open_session(manifest: dict[str, Any], threads: int | None = None, folder: Path = HERE) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or int(manifest.get("threads", 1))
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(folder / manifest["model"]), options, providers=["CPUExecutionProvider"])


def tokenize(manifest: dict[str, Any], texts: list[str], folder: Path = HERE) -> dict[str, np.ndarray]:
    """Token ids, attention mask and type ids, padded to the longest text (as inferno does)."""
    from tokenizers import Tokenizer

    info = manifest["preprocessor"]
    tokenizer = Tokenizer.from_file(str(folder / info["tokenizer"]))
    tokenizer.no_padding()
    tokenizer.enable_truncation(int(info["max_length"]))
    encodings = tokenizer.encode_batch(texts)
    length = max((len(e.ids) for e in encodings), default=0)
    columns = {k: np.zeros((len(texts), length), dtype=np.int64)
               for k in ("input_ids", "attention_mask", "token_type_ids")}
    for row, enc in enumerate(encodings):
        n = len(enc.ids)
        columns["input_ids"][row, :n] = enc.ids
        columns["attention_mask"][row, :n] = enc.attention_mask
        columns["token_type_ids"][row, :n] = enc.type_ids
    return {name: columns[name] for name in info["input_names"]}


def read_inputs(manifest: dict[str, Any], path: Path) -> dict[str, np.ndarray]:
    """Feeds from an .npy (single-input models) or an .npz of arrays named like the inputs."""
    names = [i["name"] for i in manifest["inputs"]]
    try:
        if path.suffix == ".npy":
            if len(names) != 1:
                raise BadInput(f"--input {path}: the model takes {names}; expected an .npz with those arrays")
            return {names[0]: np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as arrays:
            missing = [n for n in names if n not in arrays.files]
            if missing:
                raise BadInput(f"--input {path}: expected arrays {names}, found {arrays.files}")
            return {n: arrays[n] for n in names}
    except (OSError, ValueError) as exc:
        raise BadInput(f"--input {path}: not a readable .npy/.npz ({exc})") from exc


def check_feeds(manifest: dict[str, Any], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cast to the declared dtype where lossless; a wrong rank or shape is BadInput."""
    checked = {}
    for spec in manifest["inputs"]:
        array = np.asarray(feeds[spec["name"]])
        shape = spec["shape"]
        fixed = [(i, d) for i, d in enumerate(shape) if isinstance(d, int)]
        if array.ndim != len(shape) or any(array.shape[i] != d for i, d in fixed):
            raise BadInput(f"input {spec['name']!r}: expected {spec['dtype']} {shape}, got {array.dtype} {list(array.shape)}")
        if array.dtype != np.dtype(spec["dtype"]):
            if not np.can_cast(array.dtype, spec["dtype"], casting="same_kind"):
                raise BadInput(f"input {spec['name']!r}: expected {spec['dtype']}, got {array.dtype}")
            array = array.astype(spec["dtype"])
        checked[spec["name"]] = array
    return checked


def verify_files(manifest: dict[str, Any], folder: Path = HERE) -> list[str]:
    """Files whose sha256 differs from the manifest's, or that are missing."""
    problems = []
    for name, expected in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{name}: missing")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != expected:
            problems.append(f"{name}: sha256 differs from the manifest")
    return problems


def self_check(manifest: dict[str, Any], threads: int | None, folder: Path = HERE) -> list[str]:
    """Problems found: changed files, or sample outputs that differ from the bundled ones."""
    problems = verify_files(manifest, folder)
    if problems:
        return problems
    session = open_session(manifest, threads, folder)
    with np.load(folder / "samples.npz", allow_pickle=False) as samples:
        feeds = {i["name"]: samples[i["name"]] for i in manifest["inputs"]}
        expected = {k.split(":", 1)[1]: samples[k] for k in samples.files if k.startswith("expected:")}
    for output, got in zip(session.get_outputs(), session.run(None, feeds), strict=True):
        worst = float(np.max(np.abs(got.astype(np.float64) - expected[output.name])))
        if worst > CHECK_TOLERANCE:
            problems.append(f"output {output.name!r}: differs from the bundled samples by {worst:.3g}")
    return problems


def run(manifest: dict[str, Any], feeds: dict[str, np.ndarray], threads: int | None = None,
        folder: Path = HERE) -> dict[str, np.ndarray]:
    session = open_session(manifest, threads, folder)
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, check_feeds(manifest, feeds)), strict=True))


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input", type=Path, help=".npy (single input) or .npz named like the inputs")
    source.add_argument("--text", nargs="+", help="sentences (text models)")
    source.add_argument("--text-file", type=Path, help="sentences, one per line (text models)")
    source.add_argument("--samples", action="store_true", help="run the bundled sample rows")
    source.add_argument("--check", action="store_true", help="verify the files and the bundled samples")
    parser.add_argument("--threads", type=int, help="intra-op threads (default: the manifest's)")
    parser.add_argument("--out", type=Path, help="write the outputs to this .npz instead of printing JSON")
    return parser.parse_args(argv)


def _feeds(manifest: dict[str, Any], args: argparse.Namespace) -> dict[str, np.ndarray]:
    text = manifest["preprocessor"].get("kind") == "text"
    if args.text or args.text_file:
        if not text:
            raise BadInput("--text: this model takes tensors; expected --input")
        try:
            lines = args.text or [s.strip() for s in args.text_file.read_text("utf-8").splitlines() if s.strip()]
        except OSError as exc:
            raise BadInput(f"--text-file {args.text_file}: unreadable ({exc})") from exc
        return tokenize(manifest, lines)
    if args.input is not None:
        return read_inputs(manifest, args.input)
    with np.load(HERE / "samples.npz", allow_pickle=False) as samples:
        return {i["name"]: samples[i["name"]] for i in manifest["inputs"]}


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    try:
        manifest = load_manifest()
        if args.check:
            problems = self_check(manifest, args.threads)
            for problem in problems:
                print(f"check failed: {problem}", file=sys.stderr)
            if not problems:
                print(f"ok: {len(manifest['files'])} files verified, bundled samples match ({manifest['model']})")
            return 1 if problems else 0
        outputs = run(manifest, _feeds(manifest, args), args.threads)
    except BadInput as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out is not None:
        np.savez(args.out, **outputs)  # type: ignore[arg-type]  # numpy's stub types the first keyword
        return 0
    answer: dict[str, Any] = {"outputs": {k: v.tolist() for k, v in outputs.items()}}
    if manifest.get("task") == "classification":
        first = next(iter(outputs.values()))
        answer["top"] = [{"class": int(row.argmax()), "probability": float(row.max())} for row in first]
    print(json.dumps(answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
