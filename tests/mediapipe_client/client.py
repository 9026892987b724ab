"""MediaPipe Tasks test client: runs ImageClassifier on images and prints JSON.

Runs in MediaPipe's own virtual environment (scripts/mediapipe-venv.sh; MediaPipe 0.10.21 needs
numpy < 2, edgekit's environment has numpy 2), so it imports nothing from edgekit.

    python client.py --model A.tflite [--model B.tflite ...] --images X.npy --out result.json

``X.npy``: uint8 images (N, H, W, C), C = 1 (repeated to RGB) or 3. The JSON maps each model path
to ``{"results": [...]}`` (per image, every category MediaPipe returns: index, name, score, by
descending score) or to ``{"refused": message}`` when ``create_from_options`` fails.
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--images", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import mediapipe as mp
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision

    images = np.load(args.images)
    report = {"mediapipe": mp.__version__, "models": {path: classify(path, images, mp, mp_tasks, vision) for path in args.model}}
    with open(args.out, "w") as f:
        json.dump(report, f)


def classify(path: str, images: np.ndarray, mp, mp_tasks, vision) -> dict:
    """Every category for every image, or the refusal message."""
    options = vision.ImageClassifierOptions(base_options=mp_tasks.BaseOptions(model_asset_path=path), max_results=-1)
    try:
        classifier = vision.ImageClassifier.create_from_options(options)
    except Exception as exc:  # MediaPipe raises RuntimeError/ValueError carrying its status message
        return {"refused": str(exc)}
    results = []
    for image in images:
        rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
        mp_image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb, dtype=np.uint8))
        categories = classifier.classify(mp_image).classifications[0].categories
        results.append([{"index": c.index, "name": c.category_name, "score": float(c.score)} for c in categories])
    classifier.close()
    return {"results": results}


if __name__ == "__main__":
    main()
