# Sourced by the root test scripts: removes, by exact name, what a test lab leaves behind when
# its run is killed before the test's own Drop guard runs (Ctrl-C, a timeout).
#
#   lab_trap PIN_ROOT NETNS...   on exit: unpin PIN_ROOT/<netns>/{link,cfg,socks,stats}, remove
#                                those directories and PIN_ROOT, delete each named netns, and
#                                unmount bpffs if it was not mounted before and holds nothing now

lab_trap() {
    LAB_PIN_ROOT=$1
    shift
    LAB_NETNS=("$@")
    LAB_BPFFS_BEFORE=$(stat -f -c %T /sys/fs/bpf)
    trap lab_cleanup EXIT
}

lab_cleanup() {
    local ns d f
    for ns in "${LAB_NETNS[@]}"; do
        d=$LAB_PIN_ROOT/$ns
        for f in link cfg socks stats; do rm -f "$d/$f"; done
        rmdir "$d" 2>/dev/null || true
    done
    rmdir "$LAB_PIN_ROOT" 2>/dev/null || true
    for ns in "${LAB_NETNS[@]}"; do
        if [ -e "/run/netns/$ns" ]; then ip netns del "$ns"; fi
    done
    if [ "$LAB_BPFFS_BEFORE" != bpf_fs ] && [ "$(stat -f -c %T /sys/fs/bpf)" = bpf_fs ] \
        && [ -z "$(ls -A /sys/fs/bpf | grep -vx -e maps.debug -e progs.debug)" ]; then
        umount /sys/fs/bpf
    fi
}
