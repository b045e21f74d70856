"""Stage `clean`: data/raw/corpus.txt -> data/clean/corpus.txt + metrics/clean.json (params `clean`)."""
import sys
from pathlib import Path

# Import the package beside this script, not another checkout installed in the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnnlm import params  # noqa: E402
from rnnlm.clean import run_clean_dir  # noqa: E402
from rnnlm.errors import stage_main  # noqa: E402


@stage_main
def main() -> None:
    cfg = params.load_section("clean")
    m = run_clean_dir(cfg, "data/raw", "data/clean", "metrics/clean.json")
    for name, s in m.get("splits", {"corpus": m}).items():
        print(f"clean: {name}: mode {s['mode']}: {s['chars_in']} -> {s['chars_out']} characters, "
              f"{s['distinct_chars_in']} -> {s['distinct_chars_out']} distinct")


if __name__ == "__main__":
    main()
