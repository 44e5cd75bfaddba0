#!/usr/bin/env bash
# The reproduction reports of all five papers: each paper's claims (configs/claims/<paper>.yaml) run through the
# trainer (runs already finished are reused), evaluated from the runs, written to reports/<paper>.{md,html,json};
# then the status table of every claim (reports/README.md). Claims that need a GPU, the other budget, or a
# dataset that is not on disk come out "not run" with why; nothing is faked.
#   bash scripts/reproduce.sh [key=value ...]        e.g. where=gpu, budget=full, data_dir=/datasets, jobs=4
# Environment: PAPERS (default: all five), BUDGET (quick|full, default quick), RESULTS (default
# results/reproduce), REPORTS (default reports). Update the README's status table from the reports with
# `python -m optbench.reports readme=README.md`.
set -euo pipefail
cd "$(dirname "$0")/.."
PAPERS=${PAPERS:-adamp aggmo expectigrad hypergrad yellowfin}
REPORTS=${REPORTS:-reports}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}   # the CPU claims' models are small: one thread per run set
for paper in $PAPERS; do
  python -m optbench.reproduce "paper=$paper" "budget=${BUDGET:-quick}" "results_dir=${RESULTS:-results/reproduce}" \
    "reports_dir=$REPORTS" "$@"
done
python -m optbench.reports "reports_dir=$REPORTS" > "$REPORTS/README.md"
echo "reproduce.sh: wrote $REPORTS/README.md"
