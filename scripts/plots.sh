#!/usr/bin/env bash
# Redraw every paper's figures and tables from the run directories under results/ (results/<paper>/, as the
# sweep scripts write them) into plots/; papers without results are skipped.
#   bash scripts/plots.sh            Environment: RESULTS_ROOT (default results), PLOTS (default plots)
set -euo pipefail
cd "$(dirname "$0")/.."
RESULTS_ROOT=${RESULTS_ROOT:-results}
PLOTS=${PLOTS:-plots}
declare -A FIGURES=([aggmo]=aggmo [expectigrad]=expectigrad [hypergrad]="[hypergrad,hypergrad_alpha0]"
                    [adamp]=adamp [yellowfin]=yellowfin)
drawn=0
for paper in aggmo expectigrad hypergrad adamp yellowfin; do
  if [[ ! -d "$RESULTS_ROOT/$paper" ]]; then
    echo "plots.sh: no $RESULTS_ROOT/$paper, skipping $paper"
    continue
  fi
  python -m optbench.plot "figure=${FIGURES[$paper]}" "table=$paper" "results_dir=$RESULTS_ROOT/$paper" \
    "plots_dir=$PLOTS" > /dev/null
  echo "plots.sh: $paper -> $PLOTS/$paper*, $PLOTS/tables/$paper.{md,tex}"
  drawn=$((drawn + 1))
done
if [[ $drawn == 0 ]]; then
  echo "plots.sh: no results under $RESULTS_ROOT/ (run a paper script first, e.g. QUICK=1 bash scripts/hypergrad.sh)" >&2
  exit 1
fi
