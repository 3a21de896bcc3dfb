#!/bin/sh
# Regenerates ../govmomi.txt from a govmomi git checkout (bare or not):
#   ./gen.sh PATH_TO_GOVMOMI_GIT [COMMIT]
# Only govmomi's toolbox/hgfs and toolbox/vix packages and Go's standard
# library are used, so no module proxy is needed.
set -eu
git_dir=$1
commit=${2:-HEAD}
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for pkg in hgfs vix; do
	mkdir -p "$work/toolbox/$pkg"
	for f in $(git --git-dir="$git_dir" ls-tree --name-only "$commit" "toolbox/$pkg/"); do
		# archive.go needs Go 1.25 (sync.WaitGroup.Go) and is not an encoder:
		# leave it out and define the one name server.go takes from it.
		case $f in *_test.go | toolbox/hgfs/archive.go) continue ;; esac
		git --git-dir="$git_dir" show "$commit:$f" >"$work/$f"
	done
done
printf 'package hgfs\n\nvar ArchiveScheme = "archive"\n' >"$work/toolbox/hgfs/archive_scheme.go"
mkdir -p "$work/cmd/gen"
cp "$here/main.go" "$work/cmd/gen/main.go"
printf 'module github.com/vmware/govmomi\n\ngo 1.19\n' >"$work/go.mod"
rev=$(git --git-dir="$git_dir" rev-parse "$commit")
{
	echo "# govmomi $rev toolbox/hgfs encoders, via tests/vectors/gen"
	(cd "$work" && GOFLAGS=-mod=mod GOPROXY=off go run ./cmd/gen)
} >"$here/../govmomi.txt"
