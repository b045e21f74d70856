"""Stage `clean`: data/raw/corpus.txt -> data/clean/corpus.txt + metrics/clean.json (params `clean`)."""
import sys
from pathlib import Path

# Import the package beside this script, not another checkout installed in the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnnlm import params  # noqa: E402
from rnnlm.clean import run_clean  # noqa: E402
from rnnlm.errors import stage_main  # noqa: E402


@stage_main
def main() -> None:
    cfg = params.load_section("clean")
    m = run_clean(cfg, "data/raw/corpus.txt", "data/clean/corpus.txt", "metrics/clean.json")
    print(
        f"clean: mode {m['mode']}: {m['chars_in']} -> {m['chars_out']} characters, "
        f"{m['distinct_chars_in']} -> {m['distinct_chars_out']} distinct"
    )


if __name__ == "__main__":
    main()
