"""Inputs as users hold them: what reading each column layout costs, and what scoring raw
images and token ids costs next to the same model on precomputed tensors.

Part 1 writes the same ``rows × width`` float32 values in each modality layout the pipeline
reads (list, large_list, fixed_size_list, Arrow's fixed_shape_tensor, Ray's tensor extension),
and times, per layout, reading the Parquet file and validating it into the model's layout
(``validate_rows``): decoded MB/s of values, best of ``--repeats``.

Part 2 scores image + text rows (``synthetic.image_text``) with ``models.image_text`` (random
weights; the speed does not depend on them): the raw path reads PNG bytes and token lists and
runs ``decode_png_images`` in ``validate_rows``; the tensor path reads the decoded pixels as
``fixed_size_list<uint8>`` beside the same token lists. Both then build the model's inputs and
the coalition values over ``--background`` rows, per batch, in this process (the work of one
score actor, without Ray). Rows/s, best of ``--repeats``; ratio raw / tensors.

    python bench/raw_inputs.py --rows 200000 --width 128 --image-rows 4000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from intermodal.measures import parse_config
from intermodal.models.image_text import build_image_text
from intermodal.operators.coalitions import CoalitionValues
from intermodal.operators.context import as_tensors
from intermodal.schemas.tables import modality_arrays
from intermodal.schemas.validation import validate_rows
from intermodal.synthetic.image_text import (
    IMAGE_SIZE,
    ImageTextSpec,
    decode_png_images,
    generate_image_text,
)

NO_DUPLICATES = pa.array([], pa.int64())


def layouts(values: np.ndarray) -> dict[str, pa.Array]:
    """The same ``[n, width]`` float32 values in each column layout."""
    from ray.data._internal.tensor_extensions.arrow import ArrowTensorArray

    n, width = values.shape
    flat = pa.array(values.reshape(-1))
    offsets = pa.array(np.arange(n + 1, dtype=np.int32) * width)
    return {
        "list<float>": pa.ListArray.from_arrays(offsets, flat),
        "large_list<float>": pa.LargeListArray.from_arrays(offsets.cast(pa.int64()), flat),
        "fixed_size_list<float>": pa.FixedSizeListArray.from_arrays(flat, width),
        "arrow.fixed_shape_tensor": pa.FixedShapeTensorArray.from_numpy_ndarray(values),
        "ray tensor": ArrowTensorArray.from_numpy(values),
    }


def best_of(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def decode_throughput(rows: int, width: int, repeats: int, folder: Path) -> None:
    values = np.random.default_rng(0).standard_normal((rows, width)).astype(np.float32)
    job = parse_config(
        {
            "dataset": "bench",
            "input": "unused",
            "output": "unused",
            "num_classes": 2,
            "label_column": None,
            "modalities": [{"name": "x", "shape": [width]}, {"name": "y", "shape": [1]}],
            "model": {"name": "m", "factory": "intermodal.models.fcnn:build_fcnn"},
            "measures": ["intershap"],
            "intershap": {"target": "predicted"},
        }
    )
    megabytes = values.nbytes / 1e6
    ids = pa.array(np.arange(rows, dtype=np.int64))
    y = pa.FixedSizeListArray.from_arrays(pa.array(np.zeros(rows, np.float32)), 1)
    print(f"{rows:,} rows × {width} float32 ({megabytes:.0f} MB of values), best of {repeats}")
    print(f"{'layout':26} {'read MB/s':>10} {'validate MB/s':>14} {'both MB/s':>10}")
    for name, column in layouts(values).items():
        path = folder / f"{name.replace('<', '_').replace('>', '')}.parquet"
        pq.write_table(pa.table({"sample_id": ids, "x": column, "y": y}), path)
        read = best_of(repeats, lambda p=path: pq.read_table(p))
        table = pq.read_table(path)
        check = best_of(repeats, lambda t=table: validate_rows(t, job, NO_DUPLICATES, "f", 0))
        print(
            f"{name:26} {megabytes / read:10.0f} {megabytes / check:14.0f} "
            f"{megabytes / (read + check):10.0f}"
        )


def raw_throughput(rows: int, background: int, batch: int, repeats: int) -> None:
    table = generate_image_text(ImageTextSpec(n_samples=rows))
    pixels = decode_png_images({"image": table.column("image").combine_chunks()})["image"]
    tensors = table.set_column(
        table.schema.get_field_index("image"),
        "image",
        pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1)), IMAGE_SIZE**2),
    )
    text = {"name": "text", "shape": [None], "dtype": "int64", "max_length": 24}
    image = {"name": "image", "shape": [1, IMAGE_SIZE, IMAGE_SIZE], "dtype": "uint8"}
    model_settings = {"name": "m", "factory": "intermodal.models.image_text:build_image_text"}
    job = parse_config(
        {
            "dataset": "bench",
            "input": "unused",
            "output": "unused",
            "num_classes": 2,
            "modalities": [image, text],
            "model": model_settings,
            "measures": ["intershap"],
        }
    )
    model = build_image_text().eval()
    valid, _ = validate_rows(tensors.slice(0, background), job, NO_DUPLICATES, "f", 0)
    cpu = torch.device("cpu")
    coalitions = CoalitionValues(model, as_tensors(job, modality_arrays(job, valid), cpu))

    def score(source: pa.Table, preprocess: Callable | None) -> None:
        for start in range(0, source.num_rows, batch):
            rows_ = source.slice(start, batch)
            valid, _ = validate_rows(rows_, job, NO_DUPLICATES, "f", start, preprocess)
            coalitions(as_tensors(job, modality_arrays(job, valid), cpu))

    raw = rows / best_of(repeats, lambda: score(table, decode_png_images))
    precomputed = rows / best_of(repeats, lambda: score(tensors, None))
    print(
        f"\nimage + text, {rows:,} rows, batches of {batch}, {background} background rows, "
        f"best of {repeats}"
    )
    print(f"raw (PNG decode + tokens): {raw:9,.0f} rows/s")
    print(f"precomputed tensors:       {precomputed:9,.0f} rows/s")
    print(f"raw / tensors:             {raw / precomputed:9.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--image-rows", type=int, default=4000)
    parser.add_argument("--background", type=int, default=32)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as folder:
        decode_throughput(args.rows, args.width, args.repeats, Path(folder))
    raw_throughput(args.image_rows, args.background, args.batch, args.repeats)


if __name__ == "__main__":
    main()
