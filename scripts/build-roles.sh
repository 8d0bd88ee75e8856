#!/bin/sh
# Builds the role packages into build/roles/NAME.tar, each a static binary
# and its loom-role.json: the sample roles images/roles/NAME/, and the
# roles of the sample services images/services/SVC/ROLE/ (as SVC-ROLE.tar;
# a directory of a service without a loom-role.json is shared code).
# Upload one with
#   loom image add build/roles/web.tar --name web
set -eu
cd "$(dirname "$0")/.."
mkdir -p build/roles
for dir in images/roles/*/ images/services/*/*/; do
	[ -f "$dir/loom-role.json" ] || continue
	case "$dir" in
	images/services/*) name=$(basename "$(dirname "$dir")")-$(basename "$dir") ;;
	*) name=$(basename "$dir") ;;
	esac
	exe=$(sed -n 's/.*"exec": *"\([^"]*\)".*/\1/p' "$dir/loom-role.json")
	stage=$(mktemp -d)
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$stage/$exe" "./$dir"
	cp "$dir/loom-role.json" "$stage/"
	tar -C "$stage" --owner=0 --group=0 --numeric-owner -cf "build/roles/$name.tar" loom-role.json "$exe"
	# Stored in the image store, which keeps whole 4 KiB blocks: pad with
	# zeros (a tar reader stops at its end-of-archive marker anyway).
	truncate -s %4096 "build/roles/$name.tar"
	rm -rf "$stage"
	ls -l "build/roles/$name.tar"
done
