# Sourced by the paper scripts (scripts/<paper>.sh), not run on its own.
# sweep OVERRIDES...: one Hydra multirun (optimizers x seeds x ...) in one process, with the calling script's
# SEEDS and RESULTS, its optional SIZE array (overrides that set the problem size) and EXTRA (the script's own
# command-line arguments, which come last and so override everything).
sweep() {
  python main.py -m "seed=$SEEDS" "results_dir=$RESULTS" ${SIZE+"${SIZE[@]}"} "$@" "${EXTRA[@]}"
}
