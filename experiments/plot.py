"""Draw a run's curves: `python -m experiments.plot --workdir=runs/default` -> runs/default/curves.png."""

from absl import flags

from experiments import cli
from jaxdet.evaluation import curves

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's workdir.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    cli.start(argv, quiet=False)
    with cli.user_errors():
        print(f"wrote {curves.plot_curves(_WORKDIR.value)}")


if __name__ == "__main__":
    cli.run(main)
