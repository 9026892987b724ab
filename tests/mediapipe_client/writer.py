"""Writes standard metadata with MediaPipe's own writer (a third-party file for edgekit's reader test).

Runs in MediaPipe's virtual environment (scripts/mediapipe-venv.sh):

    python writer.py --model in.tflite --out out.tflite --mean 127.5 --std 127.5 --labels a,b,c
"""

from __future__ import annotations

import argparse


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--mean", type=float, nargs="+", required=True)
    parser.add_argument("--std", type=float, nargs="+", required=True)
    parser.add_argument("--labels", required=True, help="comma-separated class names")
    args = parser.parse_args()

    from mediapipe.tasks.python.metadata.metadata_writers import image_classifier, metadata_writer

    with open(args.model, "rb") as f:
        model = bytearray(f.read())
    labels = metadata_writer.Labels().add(args.labels.split(","))
    tflite, _ = image_classifier.MetadataWriter.create(model, args.mean, args.std, labels).populate()
    with open(args.out, "wb") as f:
        f.write(tflite)


if __name__ == "__main__":
    main()
