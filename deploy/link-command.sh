#!/bin/sh
# Put the `shardd` command of this checkout's ./.venv on the PATH of every
# shell: a symlink SHARDD_BIN_DIR/shardd (default /usr/local/bin/shardd) to
# .venv/bin/shardd. deploy/install.sh runs it as root; it says what it did.
#
# - no file there: the link is made;
# - a link there (to this or another checkout): it is pointed here;
# - anything else there (a file, a directory): left alone, with a warning,
#   and `.venv/bin/shardd` works as before.
set -eu
cd "$(dirname "$0")/.."

bin_dir=${SHARDD_BIN_DIR:-/usr/local/bin}
target="$(pwd)/.venv/bin/shardd"
link="$bin_dir/shardd"

if [ ! -x "$target" ]; then
    echo "install: $target is missing: nothing to link" >&2
    exit 1
fi
if [ -L "$link" ]; then
    old=$(readlink "$link")
    if [ "$old" = "$target" ]; then
        echo "install: $link already links to $target"
        exit 0
    fi
    ln -sfn "$target" "$link"
    echo "install: $link now links to $target (it linked to $old)"
elif [ -e "$link" ]; then
    echo "install: warning: $link exists and is not a link; left as it is" \
        "(run $target, or remove $link and install again)" >&2
else
    mkdir -p "$bin_dir"
    ln -s "$target" "$link"
    echo "install: linked $link to $target"
fi
