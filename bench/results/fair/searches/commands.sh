# The two --fair-paths searches of bench/README.md "Fair candidate training" (2-core VM, torch 2.13 CPU),
# run from /tmp/fair with the cached fashion table; then:
#   .venv/bin/python bench/population.py --out bench/results/fair --search /tmp/fair/fair6k /tmp/fair/fair20k
P=/work/main/.venv/bin/proxyless
$P search --space fashion --table /tmp/smoke/t.json --target-ms 1.45 --out fair6k --warmup-epochs 2 --epochs 3 --train-limit 6000 --arch-every 2 --fair-paths --no-progress
$P search --space fashion --table /tmp/smoke/t.json --target-ms 1.45 --out fair20k --warmup-epochs 2 --epochs 3 --train-limit 20000 --arch-every 2 --fair-paths --no-progress
