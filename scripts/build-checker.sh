#!/usr/bin/env bash
# Builds the linearizability checker (checker/, Go, Porcupine vendored under
# checker/vendor/) into target/checker/checker and runs its own tests. Offline: the
# module is vendored, so no module proxy is asked (GOPROXY=off, GOFLAGS=-mod=vendor).
# Needs Debian's golang-go (1.19 or newer).
set -euo pipefail
cd "$(dirname "$0")/../checker"
export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local
mkdir -p ../target/checker
go vet .
go test -count=1 .
go build -o ../target/checker/checker .
echo "checker: built target/checker/checker ($(go version | cut -d' ' -f3))"
