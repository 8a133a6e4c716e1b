"""Draw a run's curves: `python -m experiments.plot --workdir=runs/default` -> runs/default/curves.png."""

from absl import app, flags

from jaxdet import curves
from jaxdet.errors import ConfigError

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        print(f"wrote {curves.plot_curves(_WORKDIR.value)}")
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(main)
