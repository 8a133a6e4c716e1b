"""Export a trained run as one artifact, post-processing included, that runs without
jaxdet's detector code:

    python -m experiments.export --workdir=runs/default --format=stablehlo [--checkpoint=best] \
        [--batch=1|8|dynamic] [--out=DIR]
    python -m jaxdet.export.load --artifact=DIR --images='photos/*.jpg' --out=detections.json

stablehlo: the forward pass, decoding and post-processing as one serialized `jax.export`
program with the weights inside, plus metadata.json (input size, normalisation, class
names and the dataset's category ids, score threshold, jaxdet version, config hash). Its
detections equal `experiments.predict`'s on the same checkpoint (tests/test_export.py).
onnx: the same function as one ONNX model (fixed batch), converted from its jaxpr by
jaxdet.export.onnx (a rule per primitive; one without fails naming it); onnxruntime runs it.
safetensors: the weights alone (jaxdet's names, the classes in its metadata), for
`--config.model.init_from=DIR/model.safetensors` elsewhere.
Default --out: <workdir>/export/<format>-step<N>. A folder that already holds an artifact is
refused (one `error:` line) unless --overwrite.
"""

from absl import flags

from experiments import cli
from jaxdet.errors import ConfigError
from jaxdet.export import stablehlo

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_FORMAT = flags.DEFINE_enum(
    "format", "stablehlo", ["stablehlo", "onnx", "safetensors", "savedmodel"], "The artifact's format."
)
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best or a step number.")
_BATCH = flags.DEFINE_string("batch", "1", "Images per call: a number, or 'dynamic' (a symbolic batch).")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: <workdir>/export/<format>-step<N>).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace an artifact already in --out (else refused).")
flags.mark_flags_as_required(["workdir"])

# Measured (docs/export.md): jax2tf puts the StableHLO program in an XlaCallModule op, which
# tensorflow 2.21 (the newest for Python 3.11) cannot read from jax 0.10.2.
SAVEDMODEL_REFUSED = (
    "--format=savedmodel is not offered: jax2tf embeds the StableHLO program in an XlaCallModule op, and "
    "tensorflow 2.21 reads StableHLO up to v1.13.7 while jax 0.10.2 writes v1.15.0 (top_k as a composite op), "
    "so the SavedModel fails when TF runs it ('failed to deserialize portable artifact'); TFLite has no "
    "XlaCallModule kernel at all. Use --format=stablehlo (anywhere JAX runs) or --format=onnx (onnxruntime)"
)


def main(argv):
    cli.start(argv)
    with cli.user_errors():
        batch = _BATCH.value if _BATCH.value == "dynamic" else _int(_BATCH.value)
        if _FORMAT.value == "stablehlo":
            out, name = (
                stablehlo.export(_WORKDIR.value, _CHECKPOINT.value, batch, _OUT.value, _OVERWRITE.value),
                stablehlo.PROGRAM,
            )
        elif _FORMAT.value == "onnx":
            from jaxdet.export.onnx import export as onnx_export  # (onnx is the [onnx] extra)

            out, name = (
                onnx_export.export(_WORKDIR.value, _CHECKPOINT.value, batch, _OUT.value, _OVERWRITE.value),
                onnx_export.MODEL,
            )
        elif _FORMAT.value == "safetensors":
            from jaxdet.export import weights

            out, name = weights.export(_WORKDIR.value, _CHECKPOINT.value, _OUT.value, _OVERWRITE.value), weights.WEIGHTS
        else:
            raise ConfigError(SAVEDMODEL_REFUSED)
    print(f"wrote {out}/{name} and {out}/metadata.json")


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--batch={text!r}: a number of images >= 1, or 'dynamic'") from None


if __name__ == "__main__":
    cli.run(main)
