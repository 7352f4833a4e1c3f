# The Debian packages the project needs, in one place; sourced by scripts/test.sh and
# scripts/demo.sh (not run on its own). Each purpose names its packages; `install_packages` checks
# each by a file or command it provides and installs only what is missing.
#
#   build  clang and libbpf's and the kernel's headers build the eBPF program (bpf/); iproute2's
#          `ip` drives every namespace the tests and the local cluster make
#   e2e    the root end-to-end tests make pods with the real CNI plugins, capture the underlay
#          with tcpdump and check with nft that no iptables/nftables rule exists
#   demo   the local cluster of `meshctl up`: nsenter and the CNI plugins

# The packages of one purpose.
packages_for() {
  case "$1" in
    build) echo clang libbpf-dev linux-libc-dev iproute2 ;;
    e2e) echo containernetworking-plugins tcpdump nftables ;;
    demo) echo util-linux containernetworking-plugins ;;
    *) echo "packages_for: unknown purpose '$1' (build, e2e, demo)" >&2; return 1 ;;
  esac
}

# Whether one package is installed, by what this project uses from it.
package_present() {
  case "$1" in
    clang) command -v clang >/dev/null ;;
    libbpf-dev) [ -f /usr/include/bpf/bpf_helpers.h ] ;;
    linux-libc-dev) [ -f /usr/include/linux/bpf.h ] ;;
    iproute2) command -v ip >/dev/null ;;
    util-linux) command -v nsenter >/dev/null ;;
    containernetworking-plugins) [ -x /usr/lib/cni/bridge ] ;;
    tcpdump) command -v tcpdump >/dev/null ;;
    nftables) command -v nft >/dev/null ;;
    *) echo "package_present: no check for '$1'" >&2; return 1 ;;
  esac
}

# The missing packages of the given purposes, each once, on one line.
missing_packages() {
  local purpose pkg pkgs
  local -a missing=()
  for purpose in "$@"; do
    pkgs=$(packages_for "$purpose") || return 1
    for pkg in $pkgs; do
      if ! package_present "$pkg" && [[ " ${missing[*]} " != *" $pkg "* ]]; then
        missing+=("$pkg")
      fi
    done
  done
  echo "${missing[*]}"
}

# Installs (apt-get, as root) what the given purposes need and is missing; without root or
# apt-get, says what to install and fails.
install_packages() {
  local -a need
  local missing
  missing=$(missing_packages "$@") || return 1
  read -r -a need <<<"$missing"
  [ ${#need[@]} -gt 0 ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing ${need[*]} (apt-get)"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "missing system packages: ${need[*]}; install them (e.g. sudo apt-get install ${need[*]}) and run again" >&2
    return 1
  fi
}
