#!/usr/bin/env bash
# Prints the Debian mirror this machine's apt uses (deb822 or one-line sources), without the
# security archive. Builds fetch from it: nothing else can be downloaded here.
cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null \
    | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]+' | grep -v security | head -n1 | sed 's:/*$::'
