# Helpers shared by the wrk benchmarks (bench/check, bench/credits): sourced, not run.
# field <RESULT line> <name>: the integer after " name=" in wrk's RESULT line.
field() { sed -E "s/.* $2=([0-9]+).*/\1/" <<<" $1"; }
# per_s <count> <microseconds>: count per second.
per_s() { echo $(( $1 * 1000000 / ($2 > 0 ? $2 : 1) )); }
# ratio <a> <b>: a/b as "N.NNx".
ratio() { local r=$(( $1 * 100 / ($2 > 0 ? $2 : 1) )); echo "$((r / 100)).$(printf '%02d' $((r % 100)))x"; }
# ms <microseconds>: "N.NNNms".
ms() { local us=$1; echo "$((us / 1000)).$(printf '%03d' $((us % 1000)))ms"; }
# goal <0|1>: "met" or "NOT met".
goal() { if [ "$1" = 1 ]; then echo "met"; else echo "NOT met"; fi; }
# wait_port <port>: until GET /health answers there (20 s at most).
wait_port() { for _ in $(seq 1 400); do curl -s -o /dev/null "http://127.0.0.1:$1/health" && return 0; sleep 0.05; done
  echo "nothing listening on $1" >&2; return 1; }
