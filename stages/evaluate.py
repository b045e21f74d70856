"""Stage `evaluate`: score models/<model>.pt of each of params.yaml's `models` and n-gram baselines
on data/tokens (params `evaluate`); writes metrics/eval.json, metrics/eval/results.{csv,md} and metrics/eval/*.png."""

from rnnlm.errors import stage_main
from rnnlm.evaluate import run_evaluate
from rnnlm.params import load_models, load_section


@stage_main
def main() -> None:
    cfg = load_section("evaluate")
    result = run_evaluate(cfg, models=load_models())
    print()
    print(result["markdown"], end="")


if __name__ == "__main__":
    main()
