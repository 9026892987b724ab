#!/usr/bin/env bash
# Creates MediaPipe's own virtual environment for the MediaPipe Tasks test client
# (tests/mediapipe_client/client.py, used by tests/test_mediapipe.py).
#
# MediaPipe 0.10.21 is the last release whose Python metadata/tasks stack imports cleanly here, and it
# needs numpy < 2 while edgekit's environment (TensorFlow 2.21) has numpy 2: so it lives apart, in
# ${EDGEKIT_MEDIAPIPE_VENV:-.venv-mediapipe}. Only what the Tasks API imports is installed (MediaPipe
# with --no-deps, then numpy<2, absl-py, attrs, flatbuffers, protobuf 4, headless OpenCV, matplotlib):
# about 410 MB and 35 s, instead of its full dependency set (jax, opencv-contrib, sounddevice...).
# Idempotent and cheap when the environment already works; never fails the build: on any error the
# MediaPipe test skips with the reason.
set -uo pipefail
VENV="${EDGEKIT_MEDIAPIPE_VENV:-.venv-mediapipe}"
PYTHON="${PYTHON:-python3}"
check='import mediapipe, numpy; from mediapipe.tasks.python import vision; assert mediapipe.__version__ == "0.10.21"'
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "$check" >/dev/null 2>&1; then
  exit 0
fi
echo "mediapipe-venv: creating $VENV (MediaPipe 0.10.21 test client)" >&2
log="$(mktemp)"
# pip's notice that MediaPipe's unused dependencies (jax, sounddevice...) are absent goes to the log
if ! { rm -rf "$VENV" && "$PYTHON" -m venv "$VENV" \
    && "$VENV/bin/python" -m pip install --quiet --no-deps 'mediapipe==0.10.21' \
    && "$VENV/bin/python" -m pip install --quiet 'numpy<2' absl-py 'attrs>=19.1' 'flatbuffers>=2.0' \
         'protobuf>=4.25.3,<5' 'opencv-python-headless<4.12' matplotlib \
    && "$VENV/bin/python" -c "$check"; } >"$log" 2>&1; then
  tail -n 5 "$log" >&2
  echo "mediapipe-venv: could not set up $VENV; the MediaPipe test will skip" >&2
  rm -rf "$VENV"
fi
rm -f "$log"
exit 0
