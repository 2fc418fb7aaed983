#!/usr/bin/env bash
# The static-batch engine that the paged engine replaced (looper at commit
# 6987188), extracted from git history as a stand-alone package for the
# benchmark's same-run baseline: .gpu/static_engine/ (git-ignored; carry it).
#   bash scripts/static_engine.sh && python benchmarks/bench_engine.py ...
set -euo pipefail
cd "$(dirname "$0")/.."
REV=${REV:-6987188}
OUT=.gpu/static_engine
rm -rf $OUT && mkdir -p $OUT
for f in __init__ generator graphs llama sampling; do
  git show $REV:looper_cli/engine/$f.py > $OUT/$f.py
done
git show $REV:looper_cli/generation.py > $OUT/generation.py
sed -i 's/looper_cli\.generation/static_engine.generation/g; s/looper_cli\.engine/static_engine/g' $OUT/*.py
echo "static engine of $REV in $OUT"
