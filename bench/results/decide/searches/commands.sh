P=/work/main/.venv/bin/proxyless
run() { $P search --space fashion --table /tmp/smoke/t.json --target-ms 1.45 --out d$1 --warmup-epochs 2 --epochs 3 --train-limit 20000 --arch-every 2 --decide $1 --threads 1 --no-progress > d$1.log 2>&1; }
run 0.1 & run 0.3 & wait
run 1 & run 0.03 & wait
