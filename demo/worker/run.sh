# Pings Redis every few seconds, as a worker with a queue would.
while :; do
  redis-cli -h redis ping >/dev/null 2>&1 && echo "worker: redis answers" || echo "worker: redis not reachable"
  sleep 5
done
