"""Write a copy of a COCO detection JSON with an audit's top suspects dealt with, to train
on it and see what they cost:

    python -m experiments.clean_suspects --audit=runs/noisy/audit/train-step1000 \
        --annotations=noisy/train.json --out=cleaned/train.json --top_k=1263

The top --top_k of each --kinds ranking (streamed from the audit's boxes.jsonl and
missing.jsonl): wrong_class, poor_box and spurious_box suspects remove the annotation they
are; missing_box suspects add their detection as an annotation ("audit_added": true).
Writes the copy to --out and the actions beside it (<out>.actions.json: every removed and
added annotation, and how many suspects matched no annotation).
"""

import json
import os

from absl import flags

from experiments import cli
from jaxdet import files
from jaxdet.audit import clean
from jaxdet.audit.records import JsonLines
from jaxdet.errors import ConfigError

_AUDIT = flags.DEFINE_string("audit", None, "experiments.audit's output folder (audit.json and its .jsonl records).")
_ANNOTATIONS = flags.DEFINE_string("annotations", None, "The COCO detection JSON the audited run trained on.")
_OUT = flags.DEFINE_string("out", None, "Where the cleaned copy goes (must not exist: inputs are never overwritten).")
_TOP_K = flags.DEFINE_integer("top_k", None, "Suspects acted on per kind.")
_KINDS = flags.DEFINE_list(
    "kinds", ["wrong_class", "poor_box", "missing_box"], "Rankings acted on (also: spurious_box)."
)
flags.mark_flags_as_required(["audit", "annotations", "out", "top_k"])


def main(argv):
    cli.start(argv)
    with cli.user_errors():
        if os.path.exists(_OUT.value):
            raise ConfigError(f"--out={_OUT.value} exists: choose a new path (nothing is overwritten)")
        if _TOP_K.value < 0:
            raise ConfigError(f"--top_k={_TOP_K.value}: a count of suspects per kind, 0 or more")
        with open(os.path.join(_AUDIT.value, "audit.json")) as f:
            record_files = json.load(f)["records"]
        read = {name: JsonLines(os.path.join(_AUDIT.value, record_files[name])) for name in ("boxes", "missing")}
        suspects = clean.top_suspects(read["boxes"], read["missing"], _TOP_K.value, _KINDS.value)
        with open(_ANNOTATIONS.value) as f:
            coco = json.load(f)
        cleaned, actions = clean.apply(coco, suspects)
        os.makedirs(os.path.dirname(os.path.abspath(_OUT.value)), exist_ok=True)
        files.write_atomic(_OUT.value, json.dumps(cleaned))
        files.write_atomic(_OUT.value + ".actions.json", json.dumps(actions))
    per_kind = ", ".join(f"{len(v)} {k}" for k, v in suspects.items())
    print(
        f"wrote {_OUT.value}: suspects {per_kind}; removed {len(actions['removed'])}, added {len(actions['added'])}, "
        f"{actions['unmatched']} matched no annotation; actions in {_OUT.value}.actions.json"
    )


if __name__ == "__main__":
    cli.run(main)
