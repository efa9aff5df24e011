#!/usr/bin/env bash
# Makes results/digits/LEADERBOARD.md and LEADERBOARD.csv from a real run of grid.toml.
# Interrupt it at will: run it again and it resumes (finished cells are skipped, the cell
# that was cut off continues from its last epoch). Extra arguments go to `mmbench run`,
# e.g. ./results/digits/make.sh --executor ray
set -uo pipefail
cd "$(dirname "$0")/../.."
command="mmbench run --config results/digits/grid.toml $*"
$command
status=$?  # 1: some cell failed; its row says so, the tables are still made
if [ "$status" -gt 1 ]; then exit "$status"; fi
seeds="mmbench run --config results/digits/grid.toml --posteriors mmvae-plus,moe-tight,is-elbo,jmvae,mmjsd,mvtcae --seeds 0 $*"
$seeds
more=$?
if [ "$more" -gt 1 ]; then exit "$more"; fi
if [ "$more" -gt "$status" ]; then status=$more; fi
{
  echo "# digits leaderboard"
  echo
  echo "Made by \`results/digits/make.sh\` (\`$command\`, \`$seeds\`, then \`mmbench leaderboard results/digits/runs\`)"
  echo "on $(date -u +%Y-%m-%d), $(uname -srm), $(nproc) CPU cores."
  echo "Mean ± std over seeds; best per column in bold; ↑/↓: higher/lower is better. moe and poe ran"
  echo "seeds 0, 1, 2; the other posteriors seed 0 alone (their runs column says 1/3: seeds 1 and 2 not run)."
  echo
  mmbench leaderboard results/digits/runs --transpose --provenance
  echo
  echo "## The same, one row per posterior (\`mmbench leaderboard results/digits/runs\`)"
  echo
  mmbench leaderboard results/digits/runs
} | sed -E 's#\]\(([^)]+/artifacts/)#](runs/\1#g' > results/digits/LEADERBOARD.md  # links to the pictures from here, not from runs/
mmbench leaderboard results/digits/runs --format csv > results/digits/LEADERBOARD.csv
echo "wrote results/digits/LEADERBOARD.md and results/digits/LEADERBOARD.csv" >&2
exit "$status"
