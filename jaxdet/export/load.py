"""Runs an exported artifact on images: StableHLO (stablehlo.py) through jax, ONNX
(onnx/export.py) through onnxruntime without jax; both with numpy and `jaxdet.data.canvas`
(resize and pad as evaluation does), never the detector's code.

    python -m jaxdet.export.load --artifact=DIR --images='photos/*.jpg' --out=detections.json
"""

from __future__ import annotations

import json
import os

import numpy as np

from jaxdet.data.canvas import preprocess, to_original


class Artifact:
    """A loaded artifact: `artifact(image)` -> {boxes [N, 4] xyxy original pixels, scores
    [N], classes [N] (labels), category_ids [N]} for the valid detections."""

    def __init__(self, directory: str, threads: int = 0):
        with open(os.path.join(directory, "metadata.json")) as f:
            self.metadata = json.load(f)
        self.size = int(self.metadata["input_size"])
        self.batch = self.metadata["batch"]
        self.format = self.metadata["format"]
        if self.format == "onnx":
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads  # 0: onnxruntime's choice (every core)
            self.session = onnxruntime.InferenceSession(
                os.path.join(directory, "model.onnx"), options, providers=["CPUExecutionProvider"]
            )
            self.names = [o.name for o in self.session.get_outputs()]
        elif self.format == "stablehlo":
            import jax

            with open(os.path.join(directory, "model.stablehlo"), "rb") as f:
                self.exported = jax.export.deserialize(bytearray(f.read()))
        else:
            raise ValueError(f"{directory}: unknown artifact format {self.format!r} (stablehlo or onnx)")

    def batch_call(self, canvases: np.ndarray) -> dict[str, np.ndarray]:
        """float32 [B, S, S, 3] -> the program's fixed-size detections ([B, D, ...])."""
        canvases = np.asarray(canvases, np.float32)
        if self.format == "onnx":
            return dict(zip(self.names, self.session.run(None, {"images": canvases}), strict=True))
        return {k: np.asarray(v) for k, v in self.exported.call(canvases).items()}

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        h, w = image.shape[:2]
        x, scale = preprocess(image, self.size)
        n = 1 if self.batch == "dynamic" else int(self.batch)
        canvases = np.zeros((n, self.size, self.size, 3), np.float32)
        canvases[0] = x
        dets = self.batch_call(canvases)
        keep = dets["valid"][0]
        classes = dets["classes"][0][keep]
        return {
            "boxes": to_original(dets["boxes"][0][keep], scale, h, w),
            "scores": dets["scores"][0][keep],
            "classes": classes,
            "category_ids": np.asarray(self.metadata["category_ids"])[classes],
        }


def main() -> None:
    import argparse
    import glob

    from PIL import Image

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--images", required=True, help="a glob of JPEG/PNG files")
    parser.add_argument("--out", required=True, help="a COCO results JSON (file_name instead of image_id)")
    args = parser.parse_args()
    if os.path.exists(args.out):
        raise SystemExit(f"error: --out={args.out} exists: choose a new path (nothing is overwritten)")
    artifact = Artifact(args.artifact)
    results = []
    for path in sorted(glob.glob(args.images)):
        dets = artifact(np.asarray(Image.open(path).convert("RGB")))
        for box, score, cat in zip(dets["boxes"], dets["scores"], dets["category_ids"], strict=True):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"file_name": path, "category_id": int(cat), "bbox": [x1, y1, x2 - x1, y2 - y1],
                            "score": float(score)})  # fmt: skip
    with open(args.out, "w") as f:
        json.dump(results, f)
    print(f"wrote {len(results)} detections to {args.out}")


if __name__ == "__main__":
    main()
