"""Stage `report`: reports/report.html, one self-contained page with the corpus summary, the
results table, the figures (embedded) and the samples."""
import sys
from pathlib import Path

# Import the package beside this script, not another checkout installed in the environment.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rnnlm.errors import stage_main  # noqa: E402
from rnnlm.report import run_report  # noqa: E402


@stage_main
def main() -> None:
    path = run_report()
    print(f"report: {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
