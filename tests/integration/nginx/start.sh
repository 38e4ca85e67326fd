#!/bin/sh
# nginx reads no environment in its config: fill PORT and REPLICA in, then run it as PID 1's
# child in the foreground (SIGQUIT: graceful stop).
set -eu
sed -e "s/@PORT@/${PORT:?}/" -e "s/@REPLICA@/${REPLICA:-0}/" /etc/nginx/nginx.conf.in >/tmp/nginx.conf
exec nginx -c /tmp/nginx.conf -g "daemon off;"
