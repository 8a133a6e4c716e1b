"""A detector's named loss terms: which loss each term uses and its weight, from config.loss.

A detector declares its terms, each in one of the three families, e.g. RetinaNet
{"classification": "classification", "localization": "localization", "confidence":
"confidence"} and Faster R-CNN {"rpn_objectness": "confidence", "rpn_box":
"localization", "roi_classification": "classification", "roi_box": "localization"}.
config.loss says, for every term:

    loss.<family>               the loss of every term of that family   (--config.loss.localization=giou)
    loss.terms.<term>           this term's loss, "" = its family's      (--config.loss.terms.roi_box=giou)
    loss.<family>_weight        the weight of every term of that family
    loss.<term>_weight          this term's weight, None = its family's (terms not named after a family)

so that a family flag still swaps every term of that family on any detector, and a term
flag addresses one term.
"""

from __future__ import annotations

import dataclasses

import jax
import ml_collections
from jax import Array
from ml_collections import config_dict

from jaxdet.errors import ConfigError
from jaxdet.losses.registry import ClassificationLoss, ConfidenceLoss, LocalizationLoss, build_loss, get_loss

FAMILIES = ("classification", "localization", "confidence")
# The terms of a detector with one term per family (the one-stage detectors, DETR).
FAMILY_TERMS: dict[str, str] = {f: f for f in FAMILIES}


def loss_name(loss_config, term: str, family: str) -> str:
    """The loss name config.loss gives `term`: loss.terms.<term>, or its family's."""
    terms = loss_config.get("terms") or {}
    return terms.get(term) or loss_config[family]


def weight(loss_config, term: str, family: str) -> float:
    """The weight config.loss gives `term`: loss.<term>_weight, or its family's."""
    own = loss_config.get(f"{term}_weight") if term != family else None
    return float(loss_config[f"{family}_weight"] if own is None else own)


def config_fields(terms: dict[str, str]) -> tuple[ml_collections.ConfigDict, dict]:
    """config.loss.terms for a detector with `terms` (each "", its family's loss) and the
    `<term>_weight` fields of the terms not named after a family (None, its family's weight)."""
    section = ml_collections.ConfigDict({term: "" for term in terms})
    weights = {f"{term}_weight": config_dict.placeholder(float) for term in terms if term not in FAMILIES}
    return section, weights


def check(loss_config, terms: dict[str, str], detector: str) -> None:
    """Raises ConfigError for a loss name unknown to its family, or a config.loss.terms entry
    or `<term>_weight` that `detector` (with `terms`) does not have."""
    for family in FAMILIES:
        get_loss(family, loss_config[family])
    for term in (loss_config.get("terms") or {}).keys():
        if term not in terms:
            raise ConfigError(
                f"config.loss.terms.{term}: {detector} has no loss term {term!r}; its terms: "
                + ", ".join(f"{t} ({f})" for t, f in terms.items())
            )
    for term, family in terms.items():
        name = loss_name(loss_config, term, family)
        try:
            get_loss(family, name)
        except ConfigError as e:
            if name == loss_config[family]:
                raise
            where = f"(config.loss.terms.{term}: {term} is a {family} term)"
            raise ConfigError(str(e).replace(f"(config.loss.{family})", where)) from None
        w = weight(loss_config, term, family)
        if w < 0:
            raise ConfigError(f"the weight of loss term {term} is {w}; a weight must be >= 0")


@dataclasses.dataclass(frozen=True)
class LossSet:
    """The losses of terms computed together (at most one per family), their hyper-parameters
    bound, and their weights.

    `names` maps a family to the name of its term here (a family absent from `names` has no
    term: its loss is None). A one-stage detector has one LossSet whose terms are named after
    their families; Faster R-CNN one for the RPN and one for the box head.
    """

    classification: ClassificationLoss | None
    localization: LocalizationLoss | None
    confidence: ConfidenceLoss | None
    weights: dict[str, float]  # term name -> weight
    num_classes: int
    names: dict[str, str] = dataclasses.field(default_factory=lambda: dict(FAMILY_TERMS))

    @property
    def num_logits(self) -> int:
        """Class logits the head needs: a softmax loss adds a background logit (last)."""
        softmax = self.classification is not None and self.classification.activation == "softmax"
        return self.num_classes + (1 if softmax else 0)

    @property
    def has_confidence(self) -> bool:
        return self.confidence is not None and self.confidence.target != "none"

    def class_probabilities(self, logits: Array) -> Array:
        """[..., K] logits -> [..., C] probabilities: sigmoid, or softmax without its background column."""
        if self.classification is not None and self.classification.activation == "softmax":
            return jax.nn.softmax(logits, axis=-1)[..., : self.num_classes]
        return jax.nn.sigmoid(logits)

    def total(self, values: dict[str, Array]) -> Array:
        """The weighted sum of this set's terms in `values` (other entries are reports)."""
        return sum(w * values[term] for term, w in self.weights.items())


def build_loss_set(loss_config, num_classes: int, terms: dict[str, str] | None = None) -> LossSet:
    """The losses config.loss gives `terms` (term -> family, at most one term per family;
    default: one term per family, named after it), hyper-parameters bound from config.loss."""
    terms = dict(FAMILY_TERMS if terms is None else terms)
    names = {family: term for term, family in terms.items()}
    if len(names) != len(terms):
        raise ValueError(f"a LossSet holds at most one term per family, got {terms}")
    losses = {f: build_loss(f, loss_name(loss_config, names[f], f), loss_config) if f in names else None
              for f in FAMILIES}  # fmt: skip
    weights = {term: weight(loss_config, term, family) for term, family in terms.items()}
    return LossSet(losses["classification"], losses["localization"], losses["confidence"], weights, num_classes, names)


def implied_by(loss_config, terms: dict[str, str]) -> dict[str, bool]:
    """Architecture the terms' losses imply: a softmax classification loss adds a background
    logit; a confidence loss other than "none" adds a quality branch."""

    def uses(family: str, test) -> bool:
        return any(test(get_loss(f, loss_name(loss_config, t, f))) for t, f in terms.items() if f == family)

    return {
        "background_logit": uses("classification", lambda loss: loss.activation == "softmax"),
        "quality_branch": uses("confidence", lambda loss: loss.target != "none"),
    }
