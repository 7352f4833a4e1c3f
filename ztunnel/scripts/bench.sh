#!/usr/bin/env bash
# The data-path benchmark (root): the same lab and cleanup as e2e.sh.
exec bash "$(dirname "$0")/e2e.sh" bench
