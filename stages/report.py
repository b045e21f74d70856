"""Stage `report`: reports/report.html, one self-contained page with the corpus summary, the
results table, the figures (embedded) and the samples."""

from rnnlm.errors import stage_main
from rnnlm.report import run_report


@stage_main
def main() -> None:
    path = run_report()
    print(f"report: {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()
