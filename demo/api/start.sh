# The demo api: busybox httpd, stopped the way uvicorn or gunicorn stop. On
# SIGTERM it stops accepting connections (the proxy then tries another
# container), lets the requests in flight finish, and exits. busybox httpd
# alone would die mid-answer, and a half-sent answer cannot be retried.
httpd -f -p 8000 -h /www &
pid=$!
trap 'kill "$pid"; sleep 0.5; exit 0' TERM INT
wait "$pid"
