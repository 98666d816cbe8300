# The searches of bench/README "How well can anything rank this space?" (2026-11-27), one at a
# time on 2 cores, T = 1.45 ms on this CPU's cached table (torch, batch 1, 1 thread).
T=~/.cache/proxyless/tables/fashion-82c0897193f2.json
S() { out=$1; shift; proxyless search --space fashion --table $T --target-ms 1.45 --warmup-epochs 2 --epochs 3 --train-limit 20000 --arch-every 2 --no-progress --threads 2 --out $out "$@"; }
S sw-sep --sandwich
S sw-ent --sandwich --weight-sharing entangled
S d0-s1 --seed 1
S d0.03-s1 --seed 1 --decide 0.03
# later, for the 5-epoch protocol's ranking (decide is 0.03 by default since then, so 0 here)
S d0-s2 --seed 2 --decide 0
S sw-sep-s1 --sandwich --seed 1 --decide 0
S sw-sep-s2 --sandwich --seed 2 --decide 0
