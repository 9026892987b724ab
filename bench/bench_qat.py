"""Benchmark of ``edgekit qat``: float vs PTQ int8 vs QAT int8 top-1, and sparsity kept through QAT.

Three runs, each measured side by side in one process (one run each, seeded):

1. A MobileNet-style model (depthwise-separable blocks, BatchNormalization, ReLU6) trained here on
   Fashion-MNIST (60k), then QAT for ``--qat-epochs`` epochs; evaluated on the 10k test set.
   Also a float model fine-tuned for the same epochs without fake-quant, to show how much of the
   QAT result is simply extra training.
2. The bundled example (examples/fashion_mnist/model.keras) with QAT on the 60k training set,
   evaluated on the bundled val.npz (1,000) and on the 10k test set.
3. The MobileNet-style model pruned to 80% (``edgekit.passes.prune`` when available, otherwise
   magnitude zeroing + a short masked fine-tune), then QAT with ``--preserve sparsity``:
   the fraction of zeros among the exported int8 weights.

Usage::

    python bench/bench_qat.py [--work-dir /tmp/edgekit-bench-qat] [--float-epochs 8] [--qat-epochs 2]

The float MobileNet-style model is cached in the work dir (delete it to retrain).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "examples" / "fashion_mnist"))

from train import load_fashion_mnist  # noqa: E402

from edgekit.core.datatypes import Preprocessing  # noqa: E402

SCALE = Preprocessing(scale=1 / 255)


def build_mobilenet_style(seed: int = 0):
    """MobileNetV1-style: a stem conv, five depthwise-separable blocks, BN + ReLU6 everywhere (~37k params)."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers

    def conv_bn(x, filters, kernel, strides, name):
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.ReLU(6.0, name=f"{name}_relu6")(x)

    def separable_block(x, filters, strides, name):
        x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False, name=f"{name}_dw")(x)
        x = layers.BatchNormalization(name=f"{name}_dw_bn")(x)
        x = layers.ReLU(6.0, name=f"{name}_dw_relu6")(x)
        return conv_bn(x, filters, 1, 1, f"{name}_pw")

    inputs = keras.Input((28, 28, 1), name="image")
    x = conv_bn(inputs, 16, 3, 1, "stem")
    x = separable_block(x, 32, 2, "block1")
    x = separable_block(x, 32, 1, "block2")
    x = separable_block(x, 64, 2, "block3")
    x = separable_block(x, 64, 1, "block4")
    x = separable_block(x, 128, 2, "block5")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(0.2, name="dropout")(x)
    outputs = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="mobilenet_style")


def train_float(path: Path, x, y, epochs: int, seed: int) -> float:
    import keras

    model = build_mobilenet_style(seed)
    # cosine decay to ~0 so the float model is converged: QAT's extra epochs then add little training
    schedule = keras.optimizers.schedules.CosineDecay(2e-3, decay_steps=epochs * int(np.ceil(len(x) / 128)))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    started = time.perf_counter()
    model.fit(x / 255.0, y, batch_size=128, epochs=epochs, verbose=2)
    model.save(path)
    return time.perf_counter() - started


def float_finetune_top1(model_path: Path, x, y, x_test, y_test, epochs: int, lr: float, seed: int) -> float:
    """The float model fine-tuned like QAT (same epochs, lr schedule, batch size, frozen BN) but without fake-quant."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.saving.load_model(model_path, compile=False)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False  # QAT freezes the BN statistics too
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * int(np.ceil(len(x) / 64)))  # as qat() does
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x / 255.0, y, batch_size=64, epochs=epochs, verbose=0)
    pred = model.predict(x_test / 255.0, batch_size=256, verbose=0)
    return float((pred.argmax(1) == y_test).mean() * 100)


def magnitude_prune(model_path: Path, out: Path, train_npz: Path, x, y, sparsity: float, seed: int) -> str:
    """Prunes every kernel to ``sparsity`` with edgekit.passes.prune, or by magnitude zeroing + 1 masked epoch."""
    try:
        from edgekit.workflows.compress import prune

        prune(model_path, out, data=train_npz, sparsity=sparsity, epochs=1, batch_size=64,
              preprocessing=SCALE, export=False, force=True, seed=seed)
        return "edgekit.passes.prune (unstructured magnitude, 1 epoch fine-tune)"
    except Exception as exc:  # #3's pass may not be available: do it here
        reason = f"{type(exc).__name__}: {str(exc)[:120]}"
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.saving.load_model(model_path, compile=False)
    masks = {}
    for layer in model.layers:
        for attr in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            var = getattr(layer, attr, None)
            if var is None:
                continue
            w = np.asarray(var)
            threshold = np.quantile(np.abs(w), sparsity)
            masks[(layer.name, attr)] = (np.abs(w) > threshold).astype(np.float32)
            var.assign(w * masks[(layer.name, attr)])

    def reapply(batch, logs=None):
        for (name, attr), mask in masks.items():
            var = getattr(model.get_layer(name), attr)
            var.assign(var * mask)

    model.compile(optimizer=keras.optimizers.Adam(1e-4), loss="sparse_categorical_crossentropy")
    model.fit(x / 255.0, y, batch_size=64, epochs=1, verbose=0, callbacks=[keras.callbacks.LambdaCallback(on_batch_end=reapply)])
    model.save(out)
    return f"magnitude zeroing + 1 masked epoch (edgekit.passes.prune unavailable: {reason})"


def kernel_sparsity(path: Path) -> float:
    import keras

    model = keras.saving.load_model(path, compile=False)
    zeros = total = 0
    for layer in model.layers:
        for attr in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            var = getattr(layer, attr, None)
            if var is not None:
                w = np.asarray(var)
                zeros += int((w == 0).sum())
                total += w.size
    return zeros / total


def run_qat(model: Path, out: Path, train: Path, val: Path, epochs: int, lr: float, seed: int, preserve: str | None = None):
    from edgekit.workflows.qat import qat

    started = time.perf_counter()
    result = qat(model, out, data=train, val=val, epochs=epochs, learning_rate=lr, preprocessing=SCALE, seed=seed,
                 preserve=preserve or "none", io_type="int8", force=True,
                 on_epoch=lambda _t, e, _n, logs: print(f"    qat epoch {e}: " + ", ".join(f"{k} {v:.4f}" for k, v in logs.items()), flush=True))
    return result, time.perf_counter() - started


def tflite_top1(path: Path, x_test, y_test) -> float:
    from edgekit.runtime.local import run_local

    run = run_local(path, (x_test / 255.0).astype(np.float32), runs=1, warmup=0)
    return float((run.outputs[0].reshape(len(x_test), -1).argmax(1) == y_test).mean() * 100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/edgekit-bench-qat"))
    parser.add_argument("--data-dir", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--float-epochs", type=int, default=8)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    work = args.work_dir
    work.mkdir(parents=True, exist_ok=True)

    (x_train, y_train), (x_test, y_test) = load_fashion_mnist(args.data_dir)
    train_npz, test_npz = work / "train.npz", work / "test.npz"
    if not train_npz.exists():
        np.savez(train_npz, x=x_train, y=y_train)
        np.savez(test_npz, x=x_test, y=y_test)
    print(f"Fashion-MNIST: {len(x_train)} train, {len(x_test)} test; {os.cpu_count()} CPU cores (shared machine)")

    rows = []
    # 1. MobileNet-style
    mobilenet = work / "mobilenet_style.keras"
    if not mobilenet.exists():
        seconds = train_float(mobilenet, x_train, y_train, args.float_epochs, args.seed)
        print(f"trained the float MobileNet-style model ({args.float_epochs} epochs, {seconds:.0f} s)")
    print("[1] MobileNet-style: QAT")
    res, seconds = run_qat(mobilenet, work / "mobilenet_qat.tflite", train_npz, test_npz, args.qat_epochs, args.lr, args.seed)
    f, p, q = res.row("float"), res.row("ptq-int8"), res.row("qat-int8")
    tuned = float_finetune_top1(mobilenet, x_train, y_train, x_test, y_test, args.qat_epochs, args.lr, args.seed)
    rows.append(("MobileNet-style, 10k test", f.top1, p.top1, q.top1, tuned, seconds, len(res.float_ops)))
    mobilenet_ok = (f.top1 - q.top1) <= 0.5 and q.top1 >= p.top1

    # 2. Bundled example
    print("[2] bundled example: QAT")
    example = REPO / "examples" / "fashion_mnist" / "model.keras"
    res2, seconds2 = run_qat(example, work / "example_qat.tflite", train_npz, REPO / "examples" / "fashion_mnist" / "val.npz",
                             args.qat_epochs, args.lr, args.seed)
    f2, p2, q2 = res2.row("float"), res2.row("ptq-int8"), res2.row("qat-int8")
    rows.append(("bundled example, val.npz (1k)", f2.top1, p2.top1, q2.top1, None, seconds2, len(res2.float_ops)))
    import keras

    ex_float = keras.saving.load_model(example, compile=False).predict(x_test / 255.0, batch_size=256, verbose=0)
    ex_float_top1 = float((ex_float.argmax(1) == y_test).mean() * 100)
    ex_qat_top1 = tflite_top1(work / "example_qat.tflite", x_test, y_test)
    rows.append(("bundled example, 10k test", ex_float_top1, None, ex_qat_top1, None, None, None))
    example_ok = (f2.top1 - q2.top1) <= 0.3

    # 3. Pruned 80% + QAT preserving sparsity
    print("[3] pruned 80% + QAT --preserve sparsity")
    pruned = work / "mobilenet_pruned80.keras"
    how = magnitude_prune(mobilenet, pruned, train_npz, x_train, y_train, 0.8, args.seed)
    sparsity_in = kernel_sparsity(pruned)
    res3, seconds3 = run_qat(pruned, work / "pruned_qat.tflite", train_npz, test_npz, 1, args.lr, args.seed, preserve="sparsity")
    zeros_out = res3.preserved["exported_int8_zero_fraction"]
    f3, p3, q3 = res3.row("float"), res3.row("ptq-int8"), res3.row("qat-int8")
    rows.append(("pruned 80% MobileNet-style, 10k test", f3.top1, p3.top1, q3.top1, None, seconds3, len(res3.float_ops)))
    pruned_ok = zeros_out >= 0.79

    print()
    print("| model / data | float top-1 | PTQ int8 | QAT int8 | QAT - float | QAT - PTQ | float fine-tuned (same epochs, no fake-quant) | qat() wall s | float ops |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, fl, pt, qa, tu, sec, fops in rows:
        def cell(v, fmt="{:.2f}"):
            return "-" if v is None else fmt.format(v)
        print(f"| {name} | {cell(fl)} | {cell(pt)} | {cell(qa)} | {cell(qa - fl, '{:+.2f}')} | "
              f"{cell(None if pt is None else qa - pt, '{:+.2f}')} | {cell(tu)} | {cell(sec, '{:.0f}')} | {cell(fops, '{}')} |")
    print()
    print(f"pruned model: {how}; kernel sparsity before QAT {sparsity_in:.2%}; zeros in the exported int8 weights "
          f"{zeros_out:.2%} ({res3.preserved['exported_int8_weights']} int8 weights)")
    print(f"sizes: MobileNet-style QAT int8 {res.artifact.size.bytes} B (gzip {res.artifact.size.gzip_bytes}); "
          f"pruned + QAT int8 {res3.artifact.size.bytes} B (gzip {res3.artifact.size.gzip_bytes})")
    print()
    print(f"must hold: MobileNet-style QAT within 0.5 of float and >= PTQ: {'PASS' if mobilenet_ok else 'FAIL'} "
          f"({q.top1 - f.top1:+.2f} vs float, {q.top1 - p.top1:+.2f} vs PTQ)")
    print(f"must hold: bundled example QAT within 0.3 of float: {'PASS' if example_ok else 'FAIL'} ({q2.top1 - f2.top1:+.2f})")
    print(f"must hold: pruned 80% + QAT keeps >= 79% zeros in int8 weights: {'PASS' if pruned_ok else 'FAIL'} ({zeros_out:.2%})")


if __name__ == "__main__":
    main()
