#!/bin/sh
# Stands in for systemd + dockerd of the production image: report, then
# wait for a signal. `wait` returns as soon as the trap fires.
trap 'echo "$(hostname) stopping"; exit 0' TERM INT
echo "virtual server $(hostname) up; /apps and /var/lib/docker mounted"
while :; do
    sleep 3600 &
    wait $!
done
