#!/bin/sh
# Demo traffic for `docker compose --profile demo up`: a steady mix of /chat and streamed
# /v1/chat/completions calls from a few users and tags, judge-scored answers of varying quality
# (the mock judge honours [mock:judge_score=N]), cached prompt tokens, some truncated answers, and
# thumbs up/down feedback on every second answer - so every dashboard has data a minute after
# start. Runs in the lqo image (POSIX sh, curl, sed). Never point it at a real provider: it
# sends a call or two every second.
#   LQO_URL      the gateway (default http://gateway:18000)
#   DEMO_PAUSE   seconds between rounds (default 1)
set -u
url="${LQO_URL:-http://gateway:18000}"
pause="${DEMO_PAUSE:-1}"
json='content-type: application/json'

until curl -fsS -o /dev/null "$url/ready"; do
  echo "demo-traffic: waiting for $url/ready"
  sleep 2
done
echo "demo-traffic: sending to $url"

i=0
while :; do
  i=$((i + 1))
  user="demo-user-$((i % 5))"
  case $((i % 3)) in 0) tag=support ;; 1) tag=search ;; *) tag=summarize ;; esac
  score=$((i % 4 + 2))
  extra=""
  [ $((i % 10)) -eq 0 ] && extra=" [mock:truncate]"
  prompt="Demo question $i about $tag [mock:judge_score=$score] [mock:cached_tokens=8]$extra"
  body=$(printf '{"prompt":"%s","user_id":"%s","tags":["demo","%s"]}' "$prompt" "$user" "$tag")
  answer=$(curl -sS -m 60 -H "$json" -d "$body" "$url/chat" || true)
  id=$(printf '%s' "$answer" | sed -n 's/.*"request_id":"\([0-9a-f-]*\)".*/\1/p')
  if [ -n "$id" ] && [ $((i % 2)) -eq 0 ]; then
    if [ "$score" -ge 4 ]; then rating=1; else rating=-1; fi
    curl -sS -m 10 -o /dev/null -H "$json" \
      -d "$(printf '{"request_id":"%s","score":%d,"user_id":"%s"}' "$id" "$rating" "$user")" \
      "$url/v1/feedback" || true
  fi
  if [ $((i % 3)) -eq 0 ]; then
    curl -sS -m 60 -N -o /dev/null -H "$json" \
      -d "$(printf '{"messages":[{"role":"user","content":"Stream demo %s [mock:judge_score=%d]"}],"stream":true,"stream_options":{"include_usage":true},"user":"%s"}' "$i" "$score" "$user")" \
      "$url/v1/chat/completions" || true
  fi
  sleep "$pause"
done
