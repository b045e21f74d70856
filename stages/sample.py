"""Stage `sample`: generate text from models/<model>.pt of each of params.yaml's `models` after each
prefix (params `sample`, `download.corpus` for the default prefixes); writes samples/<model>.txt and
samples/samples.md."""

from rnnlm.errors import stage_main
from rnnlm.params import load_models, load_section
from rnnlm.sample import run_sample


@stage_main
def main() -> None:
    cfg = load_section("sample")
    corpus = load_section("download").corpus
    samples = run_sample(cfg, corpus, models=load_models())
    for model, rows in samples.items():
        for prefix, text in rows:
            print(f"{model} {prefix!r}: {text}")


if __name__ == "__main__":
    main()
