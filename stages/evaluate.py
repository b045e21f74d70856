"""Stage `evaluate`: score models/{rnn,lstm,gru}.pt and n-gram baselines on data/tokens (params
`evaluate`); writes metrics/eval.json, metrics/eval/results.{csv,md} and metrics/eval/*.png."""
import sys
from pathlib import Path

# Import the package beside this script, not another checkout installed in the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnnlm.errors import stage_main  # noqa: E402
from rnnlm.evaluate import run_evaluate  # noqa: E402
from rnnlm.params import load_section  # noqa: E402


@stage_main
def main() -> None:
    cfg = load_section("evaluate")
    result = run_evaluate(cfg)
    print()
    print(result["markdown"], end="")


if __name__ == "__main__":
    main()
