#!/bin/sh
# An instant stand-in for `claude`, for load tests: it answers every probe as
# the real CLI answers a valid login (--output-format json) and costs almost
# nothing, so that what is measured is the agent and Vault, not the probe.
if [ "$1" = --version ]; then
    echo "2.1.332 (Claude Code)"
    exit 0
fi
echo '{"type":"result","subtype":"success","is_error":false,"api_error_status":null,"result":"AUTH_OK"}'
