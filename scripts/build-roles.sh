#!/bin/sh
# Builds the sample role packages (images/roles/*) into build/roles/NAME.tar:
# a static binary and its loom-role.json. Upload one with
#   loom image add build/roles/web.tar --name web
set -eu
cd "$(dirname "$0")/.."
mkdir -p build/roles
for dir in images/roles/*/; do
	name=$(basename "$dir")
	stage=$(mktemp -d)
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$stage/$name" "./$dir"
	cp "$dir/loom-role.json" "$stage/"
	tar -C "$stage" --owner=0 --group=0 --numeric-owner -cf "build/roles/$name.tar" loom-role.json "$name"
	# Stored in the image store, which keeps whole 4 KiB blocks: pad with
	# zeros (a tar reader stops at its end-of-archive marker anyway).
	truncate -s %4096 "build/roles/$name.tar"
	rm -rf "$stage"
	ls -l "build/roles/$name.tar"
done
