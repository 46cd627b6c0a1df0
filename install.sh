#!/bin/sh
# install.sh: install the cni-multi binary and one symlink per applet into a CNI bin directory.
#
#   install.sh [--dir /opt/cni/bin] [--force] [--src PATH] [--conf FILE [--conf-dir /etc/cni/net.d]]
#              [--pod-cidr CIDR | --pod-cidr-file FILE]
#
# When the binary knows `cni-multi install`, this script hands everything to it (atomic copy,
# symlinks, conflist, pod CIDR, refusal of foreign files). Otherwise it does the same in shell
# (except --pod-cidr/--pod-cidr-file, which need the binary's installer): the binary is
# copied to a temp file in the target directory and renamed into place, every applet named by
# `cni-multi --list` gets a relative symlink `NAME -> cni-multi`, and a regular file or a symlink
# that cni-multi did not install is only replaced with --force. Running it twice changes nothing.
# It needs only a POSIX shell, cp, mv, ln, grep and cmp, so it also works as a container init step
# that copies from the image into a host mount (--dir /host/opt/cni/bin).
set -eu

# keep in sync with MARKER in src/install.rs (a test checks it)
MARKER='cni-multi/install-marker/3b9e61d0c4a2f7e5'

dir=/opt/cni/bin
force=
src=
conf=
conf_dir=
pod_cidr=
pod_cidr_file=

usage() {
    sed -n '2,5p' "$0" | sed 's/^# \{0,1\}//'
}
die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
    --dir) [ $# -ge 2 ] || die "--dir needs a value"; dir=$2; shift 2 ;;
    --dir=*) dir=${1#--dir=}; shift ;;
    --src) [ $# -ge 2 ] || die "--src needs a value"; src=$2; shift 2 ;;
    --src=*) src=${1#--src=}; shift ;;
    --conf) [ $# -ge 2 ] || die "--conf needs a value"; conf=$2; shift 2 ;;
    --conf=*) conf=${1#--conf=}; shift ;;
    --conf-dir) [ $# -ge 2 ] || die "--conf-dir needs a value"; conf_dir=$2; shift 2 ;;
    --conf-dir=*) conf_dir=${1#--conf-dir=}; shift ;;
    --pod-cidr) [ $# -ge 2 ] || die "--pod-cidr needs a value"; pod_cidr=$2; shift 2 ;;
    --pod-cidr=*) pod_cidr=${1#--pod-cidr=}; shift ;;
    --pod-cidr-file) [ $# -ge 2 ] || die "--pod-cidr-file needs a value"; pod_cidr_file=$2; shift 2 ;;
    --pod-cidr-file=*) pod_cidr_file=${1#--pod-cidr-file=}; shift ;;
    --force) force=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
    esac
done
[ -n "$dir" ] || die "--dir must not be empty"
if [ -n "$conf_dir" ] && [ -z "$conf" ]; then die "--conf-dir needs --conf"; fi

# the binary: --src, else next to this script (release tarball), else the build output
if [ -z "$src" ]; then
    here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
    for c in "$here/cni-multi" "$here/target/x86_64-unknown-linux-musl/release/cni-multi" /cni-multi; do
        if [ -f "$c" ]; then src=$c; break; fi
    done
    [ -n "$src" ] || die "no cni-multi binary found; build it with 'make' or pass --src PATH"
fi
[ -f "$src" ] || die "$src is not a regular file"
[ -x "$src" ] || die "$src is not executable"

# ---- delegate to the binary when it can install itself
if "$src" install --help 2>/dev/null | grep -q -- '--conf-dir'; then
    set -- install --dir "$dir"
    [ -z "$force" ] || set -- "$@" --force
    [ -z "$conf" ] || set -- "$@" --conf "$conf"
    [ -z "$conf_dir" ] || set -- "$@" --conf-dir "$conf_dir"
    [ -z "$pod_cidr" ] || set -- "$@" --pod-cidr "$pod_cidr"
    [ -z "$pod_cidr_file" ] || set -- "$@" --pod-cidr-file "$pod_cidr_file"
    exec "$src" "$@"
fi

# ---- shell fallback
if [ -n "$pod_cidr$pod_cidr_file" ]; then
    die "--pod-cidr and --pod-cidr-file need a cni-multi binary that can install itself ($src cannot)"
fi
# one applet per line; only the first word counts (a description may follow)
applets=$("$src" --list 2>/dev/null | sed 's/[[:space:]].*//') || die "$src --list failed: is it a cni-multi binary?"
[ -n "$applets" ] || die "$src --list printed no applets"
for a in $applets; do
    case "$a" in
    cni-multi | . | .. | *[!A-Za-z0-9._-]*) die "bad applet name from --list: $a" ;;
    esac
done
if [ -n "$conf" ]; then
    command -v jq >/dev/null 2>&1 || die "--conf needs jq when the binary cannot install itself"
    case "$conf" in
    *.conflist | *.conf | *.json) ;;
    *) die "$conf: a CNI config file name must end in .conflist, .conf or .json" ;;
    esac
    case "${conf##*/}" in
    .*) die "$conf: a CNI config file name must not start with a dot (runtimes ignore it)" ;;
    *.conflist) is_list=1 ;;
    *) is_list= ;;
    esac
    # what conf_network_name in src/install.rs accepts (a test runs both on the same files)
    if ! out=$(jq -er --arg list "$is_list" '
        if type != "object" then error("not a JSON object")
        elif (.name | type) != "string" or .name == "" then error("missing network \"name\"")
        elif (.name | contains("/")) or .name == "." or .name == ".." then
            error("network name \(.name | tojson) cannot be used as a directory name")
        elif has("plugins") then
            if (.plugins | type) != "array" then error("\"plugins\" is not a list")
            elif (.plugins | length) == 0 then error("\"plugins\" is empty")
            elif any(.plugins[]; (.type? // "") as $t | ($t | type) != "string" or $t == "") then
                error("a plugin has no \"type\"")
            else .name end
        elif $list != "" then error("a .conflist needs a \"plugins\" list")
        elif (.type | type) != "string" or .type == "" then error("missing \"type\" (or a \"plugins\" list)")
        else .name end' "$conf" 2>&1); then
        die "$conf is not a CNI config: $(printf '%s\n' "$out" | sed -n '1{s/^jq: error ([^)]*): //;p;}')"
    fi
    network=$out
    if grep -qF __POD_CIDR__ "$conf"; then
        die "$conf contains __POD_CIDR__: --pod-cidr and --pod-cidr-file need a cni-multi binary that can install itself"
    fi
    conf_dir=${conf_dir:-/etc/cni/net.d}
fi

ours() { # $1 is a regular file: same bytes as $src, or any cni-multi build
    cmp -s "$1" "$src" || grep -qF "$MARKER" "$1"
}
# classify PATH: prints missing | same | ours | foreign:<why> | dir
classify_link() {
    p=$1
    if [ -L "$p" ]; then
        t=$(readlink "$p")
        if [ "$t" = cni-multi ]; then echo same
        elif [ "${t##*/}" = cni-multi ]; then echo ours
        else echo "foreign:a symlink to $t"; fi
    elif [ -d "$p" ]; then echo dir
    elif [ -f "$p" ]; then
        if ours "$p"; then echo ours; else echo "foreign:a regular file that is not cni-multi"; fi
    elif [ -e "$p" ]; then echo "foreign:not a regular file or symlink"
    else echo missing; fi
}
classify_bin() {
    p=$1
    if [ -L "$p" ]; then echo "foreign:a symlink to $(readlink "$p")"
    elif [ -d "$p" ]; then echo dir
    elif [ -f "$p" ]; then
        if cmp -s "$p" "$src"; then echo same
        elif grep -qF "$MARKER" "$p"; then echo ours
        else echo "foreign:a regular file that is not cni-multi"; fi
    elif [ -e "$p" ]; then echo "foreign:not a regular file"
    else echo missing; fi
}

# plan: everything is checked before anything is changed
conflicts=
check() { # path state
    case "$2" in
    dir) die "$1 is a directory" ;;
    foreign:*) conflicts="$conflicts
  $1: ${2#foreign:}" ;;
    esac
}
[ ! -e "$dir" ] || [ -d "$dir" ] || die "$dir exists and is not a directory"
bin_state=$(classify_bin "$dir/cni-multi")
check "$dir/cni-multi" "$bin_state"
for a in $applets; do check "$dir/$a" "$(classify_link "$dir/$a")"; done
if [ -n "$conf" ]; then
    dest="$conf_dir/${conf##*/}"
    if [ -L "$dest" ] || { [ -e "$dest" ] && [ ! -f "$dest" ]; }; then
        check "$dest" "foreign:not a regular file"
    elif [ -f "$dest" ] && ! cmp -s "$dest" "$conf"; then
        old=$(jq -r '.name // empty' "$dest" 2>/dev/null || true)
        [ "$old" = "$network" ] || check "$dest" "foreign:the config of network '$old'"
    fi
fi
if [ -n "$conflicts" ] && [ -z "$force" ]; then
    die "refusing to replace what cni-multi did not install (use --force):$conflicts"
fi

changed=0
unchanged=0
say() { echo "$*"; changed=$((changed + 1)); }
mkdir_0755() { # mkdir -p whose new directories are 0755 whatever the caller's umask (like the files)
    (umask 022 && mkdir -p "$1")
}
tmpname() { echo "$1/.$2.tmp-$$"; }
put_file() { # SRC DIR NAME MODE: copy to a temp file in DIR, flush, rename over DIR/NAME
    tmp=$(tmpname "$2" "$3")
    trap 'rm -f "$tmp"' EXIT
    cp "$1" "$tmp"
    chmod "$4" "$tmp"
    sync "$tmp" 2>/dev/null || sync
    [ ! -L "$2/$3" ] || rm -f "$2/$3"
    mv -f "$tmp" "$2/$3"
    trap - EXIT
}

# act: the binary first, so no link ever dangles
mkdir_0755 "$dir"
if [ "$bin_state" = same ]; then
    unchanged=$((unchanged + 1))
else
    put_file "$src" "$dir" cni-multi 0755
    say "installed $dir/cni-multi (${bin_state%%:*} before)"
fi
for a in $applets; do
    state=$(classify_link "$dir/$a")
    if [ "$state" = same ]; then unchanged=$((unchanged + 1)); continue; fi
    tmp=$(tmpname "$dir" "$a")
    rm -f "$tmp"
    ln -s cni-multi "$tmp"
    [ ! -L "$dir/$a" ] || rm -f "$dir/$a"
    mv -f "$tmp" "$dir/$a"
    say "linked $dir/$a -> cni-multi (${state%%:*} before)"
done
# links to cni-multi whose applet is gone; the other names the binary answers to (cnitool and
# cni-multi*, ALIASES and MULTI_PREFIX in src/applets.rs; a test checks them) are not stale
for p in "$dir"/* "$dir"/.[!.]*; do
    [ -L "$p" ] && [ "$(readlink "$p")" = cni-multi ] || continue
    n=${p##*/}
    case "$n" in
    .*.tmp-*) continue ;; # another installer's link about to be renamed
    cnitool | cni-multi*) continue ;;
    esac
    keep=
    for a in $applets; do [ "$a" != "$n" ] || keep=1; done
    [ -n "$keep" ] || { rm -f "$p"; say "removed stale link $p"; }
done
if [ -n "$conf" ]; then
    if [ -f "$dest" ] && [ ! -L "$dest" ] && cmp -s "$dest" "$conf"; then
        unchanged=$((unchanged + 1))
    else
        mkdir_0755 "$conf_dir"
        put_file "$conf" "$conf_dir" "${conf##*/}" 0644
        say "wrote $dest (network $network)"
    fi
fi
echo "install.sh: $changed changed, $unchanged unchanged"
